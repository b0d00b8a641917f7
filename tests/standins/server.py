"""What every stand-in upstream shares: an aiohttp server on its own loop in a thread, on a free
port, recording what it received so tests can check what switchyard forwarded."""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ThreadedStandIn:
    received: list[Any] = field(default_factory=list)
    port: int = 0
    tls: ssl.SSLContext | None = None  # serve https with this context

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Any:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def last(self) -> Any:
        return self.received[-1]

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=256 * 1024 * 1024)
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        # A provider's front door takes a burst of connections at once; aiohttp's default
        # backlog (128) drops SYNs under a 600-request burst on a busy machine.
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.tls, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started.set()
        self._loop.run_forever()
