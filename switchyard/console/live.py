"""Usage events from every worker and replica: through Redis pub/sub when Redis is configured,
so a console connected to one worker sees requests that any other served.

Publishing costs a Redis command per commit group only while some console somewhere listens:
listening workers keep a short-lived flag in Redis, and every worker reads it four times a
second (a few commands a second per worker, whatever the request rate), so a console sees
another worker's requests from at most about half a second after it opens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchyard.accounts.events import UsageEvents, event_of
from switchyard.accounts.ledger import Settlement
from switchyard.background import stop

log = logging.getLogger("switchyard.console")

FLAG_SECONDS = 3
WATCH_SECONDS = 0.25


class SharedUsageEvents:
    def __init__(self, events: UsageEvents, redis: Redis, namespace: str) -> None:
        self.events = events
        self._redis = redis
        self._channel = f"switchyard:{namespace}:usage-events"
        self._flag = f"switchyard:{namespace}:usage-listeners"
        self._wanted = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch_listeners()), loop.create_task(self._receive())]

    async def close(self) -> None:
        await stop(self._tasks)

    def publish(self, batch: Sequence[tuple[Settlement, Any]]) -> None:
        """A committed group's events to every worker (this one hears them back from Redis)."""
        if not (self._wanted or self.events.listened):
            return
        payload = orjson.dumps([event_of(s) for s, _ in batch])
        task = asyncio.get_running_loop().create_task(self._send(payload))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send(self, payload: bytes) -> None:
        try:
            await self._redis.publish(self._channel, payload)
        except (RedisError, OSError) as exc:
            log.warning("could not publish usage events: %s", exc)

    async def _watch_listeners(self) -> None:
        while True:
            try:
                if self.events.listened:
                    await self._redis.set(self._flag, b"1", ex=FLAG_SECONDS)
                    self._wanted = True
                else:
                    self._wanted = bool(await self._redis.exists(self._flag))
            except (RedisError, OSError):
                self._wanted = False
            await asyncio.sleep(WATCH_SECONDS)

    async def _receive(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        for event in orjson.loads(message["data"]):
                            self.events.deliver(event)
            except (RedisError, OSError) as exc:
                log.warning("usage events from Redis interrupted (%s); resubscribing", exc)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
