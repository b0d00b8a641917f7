"""Retries and fallbacks: try candidates in order until one answers.

Overload, rate limits, 5xx, timeouts and broken connections are retried on the same deployment
(exponential backoff with jitter, honouring Retry-After when it is short), then the next
candidate is tried; a context-length refusal moves straight to the next (larger) candidate;
the client's own errors (400s) are returned at once. Streams call this only up to their first
chunk, so a stream never switches deployment after bytes have reached the client.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from switchyard.routing.router import Router
from switchyard.observability import tracing
from switchyard.routing.table import Deployment
from switchyard.wire.errors import GatewayError

T = TypeVar("T")

_RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
# Failures that another attempt would only repeat at the upstream's expense.
_FINAL_CODES = frozenset({"upstream_response_too_large"})
_RNG = random.Random()  # jitter only: one generator (a new one per request would seed from os.urandom)
BACKOFF_BASE = 0.1  # seconds; doubled per retry
BACKOFF_CAP = 2.0
MAX_RETRY_AFTER = 2.0  # wait at most this long for one deployment; longer: try the next one


def _retry_after(exc: GatewayError) -> float | None:
    for name in ("retry-after-ms", "retry-after"):
        value = exc.headers.get(name)
        if value:
            try:
                seconds = float(value) / (1000 if name == "retry-after-ms" else 1)
            except ValueError:
                continue
            return max(seconds, 0.0)
    return None


def _delay(retry: int, exc: GatewayError, rng: random.Random) -> float | None:
    """How long to wait before retrying the same deployment; None: do not wait, move on."""
    told = _retry_after(exc)
    if told is not None:
        return told if told <= MAX_RETRY_AFTER else None
    return min(BACKOFF_BASE * 2**retry, BACKOFF_CAP) * (1 - 0.25 * rng.random())


async def first_answer(
    candidates: Sequence[Deployment],
    router: Router,
    attempt: Callable[[Deployment], Awaitable[T]],
    rng: random.Random | None = None,
    operation: str = "chat",
) -> tuple[Deployment, T, int]:
    """Returns (deployment that answered, its answer, attempts made); raises the last error."""
    rng = rng or _RNG
    attempts = 0
    last: GatewayError | None = None
    for dep in candidates:
        health = router.health_of(dep)
        for retry in range(dep.config.retries + 1):
            attempts += 1
            health.start()
            started = time.perf_counter()
            try:
                with tracing.upstream_attempt(operation, dep):
                    result = await attempt(dep)
            except GatewayError as exc:
                exc.headers["x-switchyard-attempts"] = str(attempts)
                exc.headers["x-switchyard-deployment"] = dep.id
                if exc.code in _CONTEXT_CODES:
                    health.ended_without_verdict()
                    last = exc
                    break  # a larger window may be further down the list
                if exc.status not in _RETRYABLE_STATUSES or exc.code in _FINAL_CODES:
                    health.ended_without_verdict()
                    raise
                health.failed()
                last = exc
                delay = _delay(retry, exc, rng)
                # Our credentials refused: the same deployment will refuse again, another may not.
                same_again = exc.code != "upstream_auth_error"
                if not same_again or retry == dep.config.retries or delay is None or not health.allows():
                    break
                await asyncio.sleep(delay)
                continue
            except BaseException:
                health.ended_without_verdict()
                raise
            health.succeeded(time.perf_counter() - started)
            return dep, result, attempts
    assert last is not None
    raise last
