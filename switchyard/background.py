"""A worker's long-lived background task (the pruner, alert checks, alert delivery): started with
the worker, cancelled when it stops. Subclasses write `_run`, a loop that never returns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


class Background:
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def stop(tasks: Iterable[asyncio.Task[Any]], every: float = 0.5) -> None:
    """Cancel `tasks` and wait until each has ended, cancelling again every `every` seconds: a
    cancellation that lands inside a redis-py call can come out of it as a RedisError, which a
    retrying loop catches and goes on."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
