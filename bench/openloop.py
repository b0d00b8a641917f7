#!/usr/bin/env python3
"""Open-loop (fixed-rate) HTTP load generator for the switchyard benchmark (uvloop + aiohttp).

Requests are scheduled at fixed times start + i/rate, independent of how fast answers come
back (wrk2-style), so a slow server cannot slow the offered load down ("coordinated
omission"). For every request it records

* ``latency``: from the moment the request was actually handed to the client to the last
  byte of the response (what the table reports while the target keeps up with the rate);
* ``latency_sched``: from the request's scheduled time to the last byte, which also counts
  the time a request waited because the generator fell behind or hit --max-inflight
  (what matters once the target is saturated);
* ``ttfb`` (streams): to the first body byte.

Answers are checked: 2xx, and a chat.completion body / a stream ending in ``data: [DONE]``.
Prints one line ``OPENLOOP {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp

BODY = {
    "model": "gpt-5.2",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 64,
}


def pct(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def run(args) -> dict:
    body = dict(BODY)
    if args.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    for h in args.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()

    connector = aiohttp.TCPConnector(limit=args.max_inflight, force_close=False, enable_cleanup_closed=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    # No Accept-Encoding (like wrk): otherwise some servers gzip and we would time compression.
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
    )
    sem = asyncio.Semaphore(args.max_inflight)
    pc = time.perf_counter

    done_ok: list[tuple[float, float, float, float | None]] = []  # (scheduled, sent, finished, first byte)
    counts = {"ok": 0, "non2xx": 0, "bad_body": 0, "errors": 0, "timeouts": 0}
    first_bad: list[str] = []

    async def one(scheduled: float) -> None:
        try:
            t0 = pc()
            first = None
            async with session.post(args.url, data=payload, headers=headers) as resp:
                status = resp.status
                if args.stream:
                    tail = b""
                    async for chunk in resp.content.iter_any():
                        if first is None:
                            first = pc()
                        tail = (tail + chunk)[-64:]
                    good = b"data: [DONE]" in tail
                    text = tail
                else:
                    data = await resp.read()
                    good = b'"chat.completion"' in data
                    text = data[:300]
            t1 = pc()
        except asyncio.TimeoutError:
            counts["timeouts"] += 1
            return
        except Exception as exc:  # connection reset etc.
            counts["errors"] += 1
            if not first_bad:
                first_bad.append(f"{type(exc).__name__}: {exc}")
            return
        finally:
            sem.release()
        if not 200 <= status < 300:
            counts["non2xx"] += 1
            if not first_bad:
                first_bad.append(f"{status} {text[:300]!r}")
            return
        if not good:
            counts["bad_body"] += 1
            if not first_bad:
                first_bad.append(f"{status} {text[:300]!r}")
            return
        counts["ok"] += 1
        done_ok.append((scheduled, t0, t1, first))

    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()
    interval = 1.0 / args.rate
    start = pc() + 0.05
    measure_from = start + args.warmup
    end = measure_from + args.duration
    n_sent = 0
    behind_max = 0.0
    i = 0
    while True:
        scheduled = start + i * interval
        if scheduled >= end:
            break
        now = pc()
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
        await sem.acquire()  # at most --max-inflight requests outstanding
        now = pc()
        if now >= end:  # fell behind (saturated target): offer no load after the window
            sem.release()
            break
        behind_max = max(behind_max, now - scheduled)
        t = loop.create_task(one(scheduled))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        n_sent += 1
        i += 1
    issued_until = pc()
    unfinished = 0
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=args.timeout)
        for t in pending:
            t.cancel()
        unfinished = len(pending)
    finished = pc()
    await session.close()

    # latency: requests *sent* inside the measured window (however late they finish);
    # throughput: successful requests *finished* inside the window.
    in_window = [r for r in done_ok if measure_from <= r[1] < end]
    lat = sorted(r[2] - r[1] for r in in_window)
    lat_sched = sorted(r[2] - r[0] for r in in_window)
    ttfb = sorted(r[3] - r[1] for r in in_window if r[3] is not None)
    completed_in_window = sum(1 for r in done_ok if measure_from <= r[2] < end)
    achieved = completed_in_window / args.duration
    offered = int((args.duration + args.warmup) * args.rate)
    ms = lambda v: None if v is None else round(v * 1000.0, 3)
    return {
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "stream": args.stream,
        "sent": n_sent,
        "not_sent": max(0, offered - n_sent),
        "measured": len(lat),
        "achieved_rps": round(achieved, 1),
        "unfinished": unfinished,
        "max_behind_ms": round(behind_max * 1000.0, 3),
        "saturated": achieved < 0.95 * args.rate or behind_max > 0.5,
        "p50_ms": ms(pct(lat, 50)),
        "p90_ms": ms(pct(lat, 90)),
        "p99_ms": ms(pct(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None),
        "p50_sched_ms": ms(pct(lat_sched, 50)),
        "p99_sched_ms": ms(pct(lat_sched, 99)),
        "ttfb_p50_ms": ms(pct(ttfb, 50)),
        "ttfb_p99_ms": ms(pct(ttfb, 99)),
        "drain_s": round(finished - issued_until, 3),
        "first_bad": first_bad[0] if first_bad else None,
        **counts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="fixed-rate open-loop load generator")
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=500.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds (after --warmup)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds at the same rate, not measured")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--header", "-H", action="append", default=[])
    ap.add_argument("--max-inflight", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    try:
        import uvloop  # type: ignore

        res = uvloop.run(run(args))
    except ImportError:
        res = asyncio.run(run(args))
    sys.stdout.write("OPENLOOP " + json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
