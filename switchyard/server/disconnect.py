"""Non-streamed answers end with their client: a client that leaves cancels its request.

Without this, a request whose client gave up would keep its upstream call (and its money hold)
until the upstream finished, and a local model would go on generating for nobody while the
queue behind it waits. Streams need none of it: their response already listens for the
disconnect and stops the relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from switchyard.wire.errors import GatewayError

T = TypeVar("T")


class ClientGone(GatewayError):
    """The client disconnected before its answer was ready (nobody reads this error)."""

    def __init__(self) -> None:
        super().__init__(499, "The client closed the connection before the answer was ready.",
                         code="client_disconnected")


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work` (the request body already read); if the client disconnects first, cancel it
    and raise `ClientGone`. Cancellation reaches the upstream call, which closes its connection,
    and the pipeline releases the request's hold."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                left = True
                task.cancel()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left:
            task.uncancel()
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()
