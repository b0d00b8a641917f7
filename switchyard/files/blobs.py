"""File bytes on disk: `<root>/<org_id>/<file_id>`, written through a temporary name and renamed.

Uploads can be hundreds of MiB, so bytes are streamed to disk in chunks (never held whole in
memory) and every blocking call (open, write, fsync, rename, read, unlink) runs in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

WRITE_CHUNK = 1024 * 1024  # gather this much before a thread hop: fewer hops, bounded memory
READ_CHUNK = 1024 * 1024
HEAD_BYTES = 64  # kept from the start of every upload, to sniff its type without re-reading it
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BlobTooLarge(Exception):
    """The stream went over its byte limit (the partial bytes are already removed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """Bytes written under a temporary name, not yet a file: commit or discard it."""

    path: Path
    org_id: str
    size: int
    sha256: str
    head: bytes  # the first HEAD_BYTES bytes


def _safe(name: str) -> str:
    # Organisation and file ids become path parts: refuse anything that could leave the root.
    if not _SAFE_NAME.match(name):
        raise ValueError(f"unsafe path component: {name!r}")
    return name


class _Writer:
    """A temporary file with a running sha256; its methods run in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: BinaryIO = open(path, "xb")

    def write(self, data: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.digest.update(data)
        self.file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        # fsync before the metadata row commits: a row never outlives its bytes on power loss.
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def abort(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


class Blobs:
    """Where file bytes live. Knows nothing of purposes or the database."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, org_id: str, file_id: str) -> Path:
        return self.root / _safe(org_id) / _safe(file_id)

    async def stage(self, org_id: str, chunks: AsyncIterator[bytes], limit: int) -> StagedBlob:
        """Write `chunks` to a temporary file next to its final place (so commit is a rename).

        Raises BlobTooLarge as soon as more than `limit` bytes arrive, whatever the client
        announced; the partial file is removed on any failure."""
        tmp = self.root / _safe(org_id) / f".upload-{secrets.token_hex(12)}.part"
        writer = await asyncio.to_thread(_Writer, tmp)
        buffer = bytearray()
        received = 0
        try:
            async for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise BlobTooLarge(limit)
                buffer += chunk
                if len(buffer) >= WRITE_CHUNK:
                    data, buffer = bytes(buffer), bytearray()
                    await asyncio.to_thread(writer.write, data)
            if buffer:
                await asyncio.to_thread(writer.write, bytes(buffer))
            await asyncio.to_thread(writer.finish)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(writer.abort))
            raise
        return StagedBlob(tmp, org_id, writer.size, writer.digest.hexdigest(), writer.head)

    async def stage_bytes(self, org_id: str, data: bytes) -> StagedBlob:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.stage(org_id, one(), len(data))

    async def commit(self, staged: StagedBlob, file_id: str) -> Path:
        final = self.path(staged.org_id, file_id)

        def rename() -> None:
            os.replace(staged.path, final)
            _fsync_dir(final.parent)

        await asyncio.to_thread(rename)
        return final

    async def discard(self, staged: StagedBlob) -> None:
        await asyncio.to_thread(staged.path.unlink, True)

    async def read(self, org_id: str, file_id: str) -> bytes:
        return await asyncio.to_thread(self.path(org_id, file_id).read_bytes)

    async def delete(self, org_id: str, file_id: str) -> None:
        await asyncio.to_thread(self.path(org_id, file_id).unlink, True)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows opening a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


async def iter_open_file(file: BinaryIO, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
    """The bytes of an already open file, read in a thread, closed at the end.

    Opening first means a concurrent delete cannot cut a download short (the open handle
    keeps the bytes readable on POSIX)."""
    try:
        while True:
            data = await asyncio.to_thread(file.read, chunk_size)
            if not data:
                return
            yield data
    finally:
        await asyncio.to_thread(file.close)
