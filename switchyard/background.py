"""A worker's long-lived background task (the pruner, alert checks, alert delivery): started with
the worker, cancelled when it stops. Subclasses write `_run`, a loop that never returns."""

from __future__ import annotations

import asyncio


class Background:
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
