"""The batch runner: every worker runs one, claiming batches with work left and running their lines.

Exactly once, across restarts: a billed line's `batch_results` row commits in the same
transaction as its bill, and a failed line's row is written by us (nothing was billed). The
lines still to run are therefore exactly those without a row, whatever happened before.

One worker at a time per batch: a claim is a lease (`lease_owner`, `lease_until`) renewed while
the batch runs. A worker that stops cleanly gives its leases back; one that crashed loses them
when they run out, and whoever polls next takes over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchyard.accounts.directory import Directory
from switchyard.batch.jsonl import (
    CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, BatchLine, LineError, answered_line, parse_input, reported_errors, unanswered_line, validation_error_lines,
)
from switchyard.batch.records import BatchRecord, BatchRecords, now_ms, result_row
from switchyard.files import FileStore
from switchyard.endpoints import chat, completions, embeddings, responses
from switchyard.gateway import Gateway
from switchyard.server.request_id import new_request_id
from switchyard.store.schema import batch_results
from switchyard.wire.errors import GatewayError, server_error

log = logging.getLogger("switchyard.batch")
# The endpoint module that answers a batch's lines, each as a live request with batch=True.
_SERVE = {CHAT: chat.serve, RESPONSES: responses.serve, EMBEDDINGS: embeddings.serve, COMPLETIONS: completions.serve}

MAX_RETRIES = 3  # extra attempts for a line that failed with a 5xx
MAX_RETRY_DELAY = 30.0
STATUS_EVERY = 0.5  # seconds between looks at a running batch's status (a cancel from another worker)
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
REVOKED_MESSAGE = "The API key that created this batch has been revoked or has expired; the request was not run."


@dataclass(slots=True)
class _Job:
    """One claimed batch, as last read (the lease keeper refreshes it, so a cancel is seen)."""

    batch: BatchRecord
    lost: bool = False  # the lease went to someone else: stop at once
    pending: int = 0  # lines not yet answered, as last counted
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # look at the batch again now


class BatchRunner:
    def __init__(
        self,
        records: BatchRecords,
        files: FileStore,
        gateway: Gateway,
        directory: Directory,
        *,
        concurrency: int = 4,
        lease_seconds: float = 30,
        known_model: Callable[[str], bool] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.records = records
        self.files = files
        self.gateway = gateway
        self.directory = directory
        self.known_model = known_model
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{os.urandom(4).hex()}"
        self._lease_ms = int(lease_seconds * 1000)
        self._poll_interval = poll_interval
        self._max_batches = max(1, concurrency)
        self._slots = asyncio.Semaphore(max(1, concurrency))  # lines in flight, across this worker's batches
        self._running: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, _Job] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # ---- life -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    @property
    def lines_queued(self) -> int:
        """Lines not yet answered in the batches this worker is running (for /metrics)."""
        return sum(job.pending for job in self._jobs.values())

    def wake(self) -> None:
        """A batch was created or cancelled here: look now rather than at the next poll."""
        self._wake.set()
        for job in self._jobs.values():
            job.poke.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Start no new line; let lines in flight finish (their bills commit with their results)
        for up to `grace` seconds, then cancel the rest (unbilled, so they simply run again later)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        tasks = list(self._running.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            try:
                await self._claim_some()
            except Exception:  # a database hiccup must not end the runner
                log.exception("looking for batches failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _claim_some(self) -> None:
        room = self._max_batches - len(self._running)
        if room <= 0:
            return
        for batch_id in await self.records.claimable(now_ms(), self._max_batches + len(self._running)):
            # Our own batch shows up here if its lease ran out while we still run it: never run it twice.
            if batch_id in self._running:
                continue
            if room <= 0:
                break
            if await self.records.claim(batch_id, self.owner, self._lease_ms):
                log.info("batch %s: claimed by %s", batch_id, self.owner)
                room -= 1
                task = asyncio.get_running_loop().create_task(self._drive(batch_id))
                self._running[batch_id] = task
                task.add_done_callback(lambda _, b=batch_id: self._running.pop(b, None))

    # ---- one batch ------------------------------------------------------------------------

    async def _drive(self, batch_id: str) -> None:
        batch = await self.records.load(batch_id)
        if batch is None:
            return
        job = self._jobs[batch_id] = _Job(batch)
        me = asyncio.current_task()
        assert me is not None
        keeper = asyncio.get_running_loop().create_task(self._keep_lease(job, me))
        try:
            await self._advance(job)
        except asyncio.CancelledError:
            if not job.lost and not self._stopping:
                raise
        except Exception:
            log.exception("batch %s: run failed; it will be picked up again", batch_id)
        finally:
            keeper.cancel()
            self._jobs.pop(batch_id, None)
            if not job.lost:
                try:
                    await self.records.release(batch_id, self.owner)
                except Exception:  # the lease then simply runs out
                    log.exception("batch %s: releasing the lease failed", batch_id)

    async def _keep_lease(self, job: _Job, driver: asyncio.Task[None]) -> None:
        """Renew the lease a few times per lease period and watch the status (a cancel from any
        worker shows within half a second); lose the lease, and the driver stops."""
        renew_every = self._lease_ms / 3000
        last_ok = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(job.poke.wait(), min(STATUS_EVERY, renew_every))
            except TimeoutError:
                pass
            job.poke.clear()
            try:
                if time.monotonic() - last_ok < renew_every:
                    batch = await self.records.load(job.batch.id)
                    if batch is not None and batch.lease_owner == self.owner:
                        job.batch = batch
                        continue
                batch = await self.records.renew(job.batch.id, self.owner, self._lease_ms)
            except Exception:
                log.exception("batch %s: renewing the lease failed", job.batch.id)
                # Not renewed in time means another worker may have taken it: stop before it can.
                if time.monotonic() - last_ok < self._lease_ms / 1000 * 0.8:
                    continue
                batch = None
            if batch is None:
                log.warning("batch %s: lease lost; stopping here", job.batch.id)
                job.lost = True
                driver.cancel()
                return
            last_ok = time.monotonic()
            job.batch = batch

    def _halted(self, job: _Job) -> bool:
        return self._stopping or job.lost

    async def _advance(self, job: _Job) -> None:
        """Step the batch through its statuses until it is final (or this worker must stop)."""
        while not self._halted(job):
            b = job.batch
            if b.status == "validating":
                await self._validate(job)
            elif b.status == "in_progress":
                await self._run_lines(job)
            elif b.status == "finalizing":
                await self._finish(b, "finalizing", "completed")
            elif b.status == "cancelling":
                await self._finish(b, "cancelling", "cancelled")
            else:
                return
            fresh = await self.records.load(b.id)
            if fresh is None:
                return
            job.batch = fresh

    async def _validate(self, job: _Job) -> None:
        b = job.batch
        try:
            data = await self.files.read_bytes(b.org_id, b.input_file_id)
        except GatewayError:
            error = LineError("file_not_found", f"The input file {b.input_file_id} no longer exists.",
                              param="input_file_id")
            await self._fail(b, [error])
            return
        parsed = await asyncio.to_thread(parse_input, data, b.endpoint, self.known_model)
        if parsed.errors:
            await self._fail(b, parsed.errors)
            return
        if await self.records.transition(b.id, ["validating"], status="in_progress", in_progress_at=now_ms(),
                                         total=len(parsed.lines), model=parsed.model):
            log.info("batch %s: %d lines for %s, in progress", b.id, len(parsed.lines), parsed.model)

    async def _fail(self, b: BatchRecord, errors: list[LineError]) -> None:
        """Validation failed: every bad line in `errors` and, one error line each, in the error file."""
        lines = validation_error_lines([e for e in errors if e.line is not None])
        error_file = await self._write_file(b, "error", lines) if lines else None
        if await self.records.transition(
            b.id, ["validating"], status="failed", failed_at=now_ms(), error_file_id=error_file,
            errors=orjson.dumps(reported_errors(errors)).decode(),
        ):
            log.info("batch %s: failed validation (%d errors)", b.id, len(errors))

    async def _run_lines(self, job: _Job) -> None:
        b = job.batch
        try:
            data = await self.files.read_bytes(b.org_id, b.input_file_id)
        except GatewayError:
            # Deleted while the batch ran: what was answered (and billed) is still delivered.
            error = LineError("file_not_found", f"The input file {b.input_file_id} was deleted while the batch ran.",
                              param="input_file_id")
            await self._finish(b, "in_progress", "failed", errors=[error])
            return
        # The file was validated when the batch was created; parsing again yields the same lines.
        lines = (await asyncio.to_thread(parse_input, data, b.endpoint)).lines
        ran = False
        while True:
            answered = await self.records.answered_lines(b.id)
            pending = [line for line in lines if line.line not in answered]
            job.pending = len(pending)
            # `expired_at` set while still in progress: a run that crashed in the middle of expiring.
            if job.batch.expired_at is not None or (pending and now_ms() >= b.expires_at):
                await self._expire(job.batch, pending)
                return
            if not pending:
                if await self.records.transition(b.id, ["in_progress"], status="finalizing", finalizing_at=now_ms()):
                    log.info("batch %s: every line answered, finalizing", b.id)
                return
            if ran:
                # Lines came back without a result (e.g. the database was briefly unavailable): not in a spin.
                await asyncio.sleep(1.0)
            await self._run_some(job, pending)
            ran = True
            if self._halted(job) or job.batch.status != "in_progress":
                return

    async def _run_some(self, job: _Job, pending: Iterable[BatchLine]) -> None:
        """Run lines through the shared slots, starting none once the batch must stop."""
        in_flight: set[asyncio.Task[None]] = set()
        try:
            for line in pending:
                await self._slots.acquire()
                if not self._may_start(job):
                    self._slots.release()
                    break
                task = asyncio.get_running_loop().create_task(self._run_line(job, line))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: self._slots.release())
            # Lines already started finish, cancel or not: their answers are delivered and billed.
            while in_flight:
                await asyncio.wait(set(in_flight))
        except asyncio.CancelledError:
            for task in in_flight:
                task.cancel()
            raise

    async def _run_line(self, job: _Job, line: BatchLine) -> None:
        try:
            await self._answer(job, line)
        except asyncio.CancelledError:
            raise
        except Exception:  # the line keeps no row, so it runs again
            log.exception("batch %s line %d: could not record its result", job.batch.id, line.line)

    async def _answer(self, job: _Job, line: BatchLine) -> None:
        b = job.batch
        attempt = 0
        while True:
            principal = self.directory.principal(b.key_id)
            if principal is None:
                await self.records.add_results([result_row(
                    b.id, line.line, line.custom_id, False, unanswered_line(line.custom_id, "invalid_api_key",
                                                                            REVOKED_MESSAGE))])
                return
            request_id = new_request_id()

            def record(answer: dict[str, Any], cost: int, rid: str = request_id) -> list[tuple[Any, dict[str, Any]]]:
                output = answered_line(line.custom_id, rid, 200, answer)
                return [(batch_results, result_row(b.id, line.line, line.custom_id, True, output,
                                                   answer.get("usage"), cost))]

            try:
                await _SERVE[b.endpoint](self.gateway, dict(line.body), principal, request_id, batch=True, record=record)
                return
            except GatewayError as exc:
                error = exc
            except Exception:
                log.exception("batch %s line %d: unexpected error", b.id, line.line)
                error = server_error()
            if _retry(error, attempt):
                if await self._pause(job, _delay(attempt, error)):
                    attempt += 1
                    continue
                if error.status == 429:
                    return  # never ran: left to expire, be cancelled or run after a restart
            # Nothing was billed for a failed line: its row is ours to write.
            output = answered_line(line.custom_id, request_id, error.status, error.to_dict())
            await self.records.add_results([result_row(b.id, line.line, line.custom_id, False, output)])
            return

    def _may_start(self, job: _Job) -> bool:
        return not self._halted(job) and job.batch.status == "in_progress" and now_ms() < job.batch.expires_at

    async def _pause(self, job: _Job, seconds: float) -> bool:
        """Wait before a retry; False as soon as the batch must stop (cancel, expiry, shutdown)."""
        deadline = time.monotonic() + seconds
        while self._may_start(job):
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, STATUS_EVERY))
        return False

    async def _expire(self, b: BatchRecord, pending: list[BatchLine]) -> None:
        """The window is over: lines not run go to the error file as `batch_expired`."""
        if b.expired_at is None:
            b = await self._mark_expired(b)
            if b is None:
                return  # cancelled meanwhile: that wins
        await self.records.add_results([
            result_row(b.id, line.line, line.custom_id, False,
                       unanswered_line(line.custom_id, "batch_expired", EXPIRED_MESSAGE))
            for line in pending
        ])
        log.info("batch %s: expired with %d lines not run", b.id, len(pending))
        await self._finish(b, "in_progress", "expired")

    async def _mark_expired(self, b: BatchRecord) -> BatchRecord | None:
        """Note the expiry before writing its rows, so a restart in between still ends `expired`."""
        if not await self.records.transition(b.id, ["in_progress"], expired_at=now_ms()):
            return None
        return await self.records.load(b.id)

    async def _finish(self, b: BatchRecord, current: str, final: str, errors: list[LineError] | None = None) -> None:
        """Write the output and error files (input order) and make the batch final."""
        ok, failed = await self.records.outputs(b.id)
        output_file = await self._write_file(b, "output", ok) if ok else None
        error_file = await self._write_file(b, "error", failed) if failed else None
        values: dict[str, Any] = {"status": final, f"{final}_at": now_ms(),
                                  "output_file_id": output_file, "error_file_id": error_file}
        if errors:
            values["errors"] = orjson.dumps(reported_errors(errors)).decode()
        if final == "expired" and b.expired_at is not None:
            values["expired_at"] = b.expired_at
        if await self.records.transition(b.id, [current], **values):
            log.info("batch %s: %s (%d ok, %d failed)", b.id, final, len(ok), len(failed))

    async def _write_file(self, b: BatchRecord, kind: str, lines: list[str]) -> str:
        data = await asyncio.to_thread(_jsonl_bytes, lines)
        record = await self.files.create(b.org_id, b.key_id, f"{b.id}_{kind}.jsonl", "batch_output", data)
        return str(record.id)


def _jsonl_bytes(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _retry(error: GatewayError, attempt: int) -> bool:
    """Rate limits make a line wait (a batch may take its whole window), money does not come
    back by waiting, and a 5xx gets a few more tries before the line is given up."""
    if error.status == 429:
        if error.code == "insufficient_quota":
            return False
        return error.code == "rate_limit_exceeded" or attempt < MAX_RETRIES
    return error.status >= 500 and attempt < MAX_RETRIES


def _delay(attempt: int, error: GatewayError) -> float:
    retry_after = error.headers.get("retry-after")
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.1), MAX_RETRY_DELAY)
        except ValueError:
            pass
    return min(0.5 * 2 ** min(attempt, 10), MAX_RETRY_DELAY) * (0.75 + random.random() / 4)
