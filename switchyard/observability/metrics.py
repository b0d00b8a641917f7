"""Prometheus metrics, shared by every worker of a gateway (prometheus-client's multiprocess
mode: each worker writes its own files under one directory, `/metrics` sums them).

Requests are counted from the ledger writer's committed groups, not on the request path: a
request is in the metrics once its record is durable, with the same model, deployment, status,
tokens and cost as its bill. `serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory
before the workers start (observability/directory.py), and this module is imported only after.
"""

from __future__ import annotations

import bisect

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from switchyard.background import Background

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_GROUP = (1, 2, 5, 10, 20, 50, 100, 200, 500)
TOKEN_KINDS = ("input", "cached", "output", "reasoning")


class Metrics:
    """The gateway's metrics. Made once per worker process."""

    def __init__(self) -> None:
        self._served: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.requests = Counter("switchyard_requests_total", "Requests, by how they ended.",
                                ["model", "deployment", "endpoint", "status", "stream"])
        self.latency = Histogram("switchyard_request_duration_seconds", "From arrival to the bill.",
                                 ["model", "endpoint"], buckets=_LATENCY)
        self.ttfb = Histogram("switchyard_time_to_first_byte_seconds", "Until the upstream's first byte or chunk.",
                              ["model", "deployment"], buckets=_LATENCY)
        self.tokens = Counter("switchyard_tokens_total", "Tokens billed.", ["model", "kind"])
        self.cost = Counter("switchyard_cost_usd_total", "What requests were billed, in USD.", ["model"])
        self.refusals = Counter("switchyard_refusals_total", "Requests refused before any upstream.", ["code"])
        self.upstream_errors = Counter("switchyard_upstream_failures_total",
                                       "Requests no upstream answered, by error code.", ["code"])
        self.fallbacks = Counter("switchyard_extra_attempts_total",
                                 "Attempts beyond the first (retries and fallbacks).", ["model"])
        self.commit_seconds = Histogram("switchyard_ledger_commit_seconds", "One group commit of bills.",
                                        buckets=_LATENCY)
        self.commit_group = Histogram("switchyard_ledger_group_size", "Bills per group commit.", buckets=_GROUP)
        self.batch_lines = Gauge("switchyard_batch_lines_queued", "Batch lines not yet answered, in running batches.",
                                 multiprocess_mode="livesum")
        self.in_flight = Gauge("switchyard_in_flight_requests", "Requests an upstream is answering now.",
                               ["deployment"], multiprocess_mode="livesum")
        self.breaker_open = Gauge("switchyard_breaker_open", "1 while a deployment's circuit breaker is open.",
                                  ["deployment"], multiprocess_mode="max")

    def on_settled(self, batch: Iterable[tuple[Any, Any]]) -> None:
        """The ledger writer's listener: one committed group of records. Summed per kind of request
        first, so a group of n alike requests costs one write per series, not n (each write is a
        locked write to the worker's mmap file)."""
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for s, _ in batch:
            kind = (s.model, s.deployment, s.endpoint, s.status, s.stream)
            group = groups.get(kind)
            if group is None:
                groups[kind] = group = [s]
            else:
                group.append(s)
        for kind, records in groups.items():
            served = self._served.get(kind)
            if served is None:
                served = self._children(records[0])
            requests, latency, ttfb, extra, tokens, cost = served
            requests.inc(len(records))
            _observe_all(latency, [s.latency_ms / 1000 for s in records])
            status = kind[3]
            if status == "refused" or status == "failed":
                errors = self.refusals if status == "refused" else self.upstream_errors
                for s in records:
                    errors.labels(s.error_code or "unknown").inc()
                continue
            _observe_all(ttfb, [s.ttfb_ms / 1000 for s in records if s.ttfb_ms is not None])
            retries = sum(s.attempts - 1 for s in records if s.attempts and s.attempts > 1)
            if retries:
                extra.inc(retries)
            sums = (sum(s.input_tokens - s.cached_tokens for s in records), sum(s.cached_tokens for s in records),
                    sum(s.output_tokens for s in records), sum(s.reasoning_tokens for s in records))
            for child, n in zip(tokens, sums):
                if n:
                    child.inc(n)
            nanos = sum(s.cost_nanos for s in records)
            if nanos:
                cost.inc(nanos / 1e9)

    def _children(self, s: Any) -> tuple[Any, ...]:
        """The labelled series one kind of request touches, looked up once (labels() costs per call)."""
        found = (
            self.requests.labels(s.model, s.deployment, s.endpoint, s.status, "true" if s.stream else "false"),
            self.latency.labels(s.model, s.endpoint), self.ttfb.labels(s.model, s.deployment),
            self.fallbacks.labels(s.model), tuple(self.tokens.labels(s.model, k) for k in TOKEN_KINDS),
            self.cost.labels(s.model),
        )
        if len(self._served) < 10_000:  # bounded: model names come from clients (refused ones too)
            self._served[(s.model, s.deployment, s.endpoint, s.status, s.stream)] = found
        return found

    def timed_commit(self, size: int, started: float) -> None:
        self.commit_seconds.observe(time.perf_counter() - started)
        self.commit_group.observe(size)



class GaugeSampler(Background):
    """Each worker sets its gauges every second (in-flight requests and breakers are per worker;
    a scrape reaches one worker, so the others must have written theirs already)."""

    def __init__(self, metrics: Metrics, deployments: Callable[[], Iterable[tuple[str, int, bool]]],
                 batch_lines: Callable[[], int] = lambda: 0) -> None:
        self.metrics, self.deployments, self.batch_lines = metrics, deployments, batch_lines

    def sample(self) -> None:
        self.metrics.batch_lines.set(self.batch_lines())
        for dep_id, in_flight, is_open in self.deployments():
            self.metrics.in_flight.labels(dep_id).set(in_flight)
            self.metrics.breaker_open.labels(dep_id).set(1 if is_open else 0)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(1.0)


def _observe_all(histogram: Any, values: list[float]) -> None:
    """Observe many values with one write per bucket touched and one to the sum (prometheus-client
    has no batch observe; its histogram keeps cumulative-free bucket counters and a sum)."""
    if not values:
        return
    bounds, buckets, total = (getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None or len(values) == 1:
        for v in values:
            histogram.observe(v)
        return
    counts: dict[int, int] = {}
    for v in values:
        i = bisect.bisect_left(bounds, v)
        counts[i] = counts.get(i, 0) + 1
    for i, n in counts.items():
        buckets[i].inc(n)
    total.inc(sum(values))


def exposition() -> bytes:
    """Every worker's metrics, summed, in Prometheus' text format."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)
