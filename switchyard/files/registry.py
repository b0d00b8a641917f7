"""Files owned by organisations: metadata rows in `files`, bytes through `Blobs`.

The routes and other parts of the gateway (the batch runner, image parts naming a `file_id`)
go through `FileStore`, so ownership, expiry and size limits are checked in one place. A file
of another organisation and an expired file are both simply absent.
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import UploadFile

from switchyard.files.blobs import BlobTooLarge, Blobs, StagedBlob
from switchyard.store.schema import files
from switchyard.wire.errors import GatewayError, invalid_request

log = logging.getLogger("switchyard.files")

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MIN_EXPIRES_AFTER = 3600
MAX_EXPIRES_AFTER = 30 * 24 * 3600
# OpenAI's documented default: batch inputs expire after 30 days, other files never.
DEFAULT_EXPIRY = {"batch": MAX_EXPIRES_AFTER}
SWEEP_EVERY = 60.0  # seconds between sweeps of expired files across all organisations
SWEEP_BATCH = 200
_ALPHABET = string.digits + string.ascii_lowercase  # ascending in every collation we meet


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One row of `files`. Times are epoch milliseconds, like every time in the database."""

    id: str
    org_id: str
    key_id: str | None
    filename: str
    purpose: str
    bytes: int
    sha256: str
    created_at: int
    expires_at: int | None

    @classmethod
    def from_row(cls, row: Any) -> FileRecord:
        return cls(
            id=row.id, org_id=row.org_id, key_id=row.key_id, filename=row.filename, purpose=row.purpose,
            bytes=int(row.bytes), sha256=row.sha256, created_at=int(row.created_at),
            expires_at=int(row.expires_at) if row.expires_at is not None else None,
        )


def file_object(record: FileRecord) -> dict[str, Any]:
    """The OpenAI file object (times in seconds). Absent rather than null where there is no
    value: OpenAI's spec types `expires_at` and `status_details` as non-null."""
    obj: dict[str, Any] = {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at // 1000,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
    }
    if record.expires_at is not None:
        obj["expires_at"] = record.expires_at // 1000
    return obj


def no_such_file(file_id: str) -> GatewayError:
    return GatewayError(404, f"No such File object: {file_id}", param="id")


def too_large(purpose: str | None, limit: int) -> GatewayError:
    what = f"Files with purpose '{purpose}'" if purpose else "Files"
    return GatewayError(
        413, f"File is too large: {what} may be at most {limit} bytes ({_human(limit)}).",
        param="file", code="file_too_large",
    )


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def check_purpose(purpose: str | None) -> str:
    if not purpose:
        raise invalid_request("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise invalid_request(
            f"Invalid value for 'purpose': '{purpose[:100]}' is not one of {', '.join(UPLOAD_PURPOSES)}.",
            param="purpose",
        )
    return purpose


def check_filename(purpose: str, filename: str) -> None:
    """What can be judged from the name alone, before any byte is stored."""
    if purpose == "batch" and not filename.lower().endswith(".jsonl"):
        raise invalid_request(
            f"Files with purpose 'batch' must be JSONL with a '.jsonl' file name, not '{filename[:200]}'.",
            param="file", code="invalid_file_format",
        )


def check_expires_after(seconds: int | None) -> None:
    if seconds is not None and not MIN_EXPIRES_AFTER <= seconds <= MAX_EXPIRES_AFTER:
        raise invalid_request(
            f"'expires_after.seconds' must be between {MIN_EXPIRES_AFTER} and {MAX_EXPIRES_AFTER}, not {seconds}.",
            param="expires_after.seconds",
        )


def sniff_image(head: bytes) -> str | None:
    """The image format named by the first bytes, or None: the file name and the client's
    content type are not trusted."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def clean_filename(name: str | None) -> str:
    # Browsers and some clients send a full path; keep the last part, within the column.
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip().replace("\x00", "")
    return (base or "upload")[:500]


def new_file_id(now_ms: int) -> str:
    """`file-` + 24 lowercase alphanumerics: the creation millisecond (9 base-36 digits, so ids
    sort by time) then 15 random ones. A list cursor stays usable after its file is deleted."""
    digits, n = [], now_ms
    for _ in range(9):
        n, r = divmod(n, 36)
        digits.append(_ALPHABET[r])
    return "file-" + "".join(reversed(digits)) + "".join(secrets.choice(_ALPHABET) for _ in range(15))


def _time_of_id(file_id: str) -> int | None:
    body = file_id.removeprefix("file-")
    if len(body) < 24 or not file_id.startswith("file-"):
        return None
    try:
        return int(body[:9], 36)
    except ValueError:
        return None


def upload_limit(store: FileStore, purpose: str | None) -> int:
    """Bytes allowed for an upload (the larger general limit while the purpose is unknown)."""
    if purpose == "batch":
        return min(store.batch_max_bytes, store.max_bytes)
    return store.max_bytes


async def _upload_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while data := await upload.read(1024 * 1024):
        yield data


class FileStore:
    def __init__(self, engine: AsyncEngine, data_dir: Path, max_bytes: int, batch_max_bytes: int) -> None:
        self.engine = engine
        self.blobs = Blobs(data_dir / "files")
        self.max_bytes = max_bytes
        self.batch_max_bytes = batch_max_bytes
        self._last_sweep = 0.0

    async def save_upload(
        self, org_id: str, key_id: str | None, filename: str, purpose: str,
        chunks: AsyncIterator[bytes] | UploadFile | StagedBlob, expires_after: int | None,
    ) -> FileRecord:
        """Store a client's upload after checking purpose, size, name and (for vision) content.

        `chunks` may also be a blob the caller already staged (the multipart route streams
        the body to disk before it has read every form field); it is consumed either way."""
        staged = chunks if isinstance(chunks, StagedBlob) else None
        try:
            check_purpose(purpose)
            filename = clean_filename(filename)
            check_filename(purpose, filename)
            check_expires_after(expires_after)
            limit = upload_limit(self, purpose)
            if staged is None:
                stream = _upload_chunks(chunks) if isinstance(chunks, UploadFile) else chunks
                assert not isinstance(stream, StagedBlob)
                try:
                    staged = await self.blobs.stage(org_id, stream, limit)
                except BlobTooLarge:
                    raise too_large(purpose, limit) from None
            assert staged.org_id == org_id, "a blob staged for another organisation"
            if staged.size > limit:
                raise too_large(purpose, limit)
            if staged.size == 0:
                raise invalid_request("The uploaded file is empty.", param="file")
            if purpose == "vision" and sniff_image(staged.head) is None:
                raise invalid_request(
                    "Files with purpose 'vision' must be PNG, JPEG, GIF or WebP images.",
                    param="file", code="invalid_image_format",
                )
            if expires_after is None:
                expires_after = DEFAULT_EXPIRY.get(purpose)
        except BaseException:
            if staged is not None:
                await self.blobs.discard(staged)
            raise
        return await self._commit(org_id, key_id, filename, purpose, staged, expires_after)

    async def create(self, org_id: str, key_id: str | None, filename: str, purpose: str, data: bytes,
                     expires_after: int | None = None) -> FileRecord:
        """A file the gateway writes itself (`batch_output`, a generated image): no upload checks;
        no expiry unless given (seconds)."""
        staged = await self.blobs.stage_bytes(org_id, data)
        return await self._commit(org_id, key_id, clean_filename(filename), purpose, staged, expires_after)

    async def _commit(
        self, org_id: str, key_id: str | None, filename: str, purpose: str, staged: StagedBlob,
        expires_after: int | None,
    ) -> FileRecord:
        now = int(time.time() * 1000)
        record = FileRecord(
            id=new_file_id(now), org_id=org_id, key_id=key_id, filename=filename, purpose=purpose,
            bytes=staged.size, sha256=staged.sha256, created_at=now,
            expires_at=now + expires_after * 1000 if expires_after is not None else None,
        )
        # Bytes first, row second: a crash in between leaves an unlisted blob, never a row
        # whose content is missing.
        try:
            await self.blobs.commit(staged, record.id)
        except BaseException:
            await self.blobs.discard(staged)
            raise
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(files).values(
                    id=record.id, org_id=org_id, key_id=key_id, filename=filename, purpose=purpose,
                    bytes=record.bytes, sha256=record.sha256, created_at=now, expires_at=record.expires_at,
                ))
        except BaseException:
            await self.blobs.delete(org_id, record.id)
            raise
        await self._maybe_sweep()
        return record

    async def get(self, org_id: str, file_id: str) -> FileRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(files).where(files.c.id == file_id, files.c.org_id == org_id)
            )).first()
        if row is None:
            return None
        record = FileRecord.from_row(row)
        if _expired(record, _now_ms()):
            await self._purge(record)
            return None
        return record

    async def read_bytes(self, org_id: str, file_id: str) -> bytes:
        record = await self.get(org_id, file_id)
        if record is None:
            raise no_such_file(file_id)
        try:
            return await self.blobs.read(org_id, file_id)
        except FileNotFoundError:  # deleted between the lookup and the read
            raise no_such_file(file_id) from None

    def path(self, record: FileRecord) -> Path:
        return self.blobs.path(record.org_id, record.id)

    async def list(
        self, org_id: str, *, after: str | None, limit: int, order: str, purpose: str | None,
    ) -> tuple[list[FileRecord], bool]:
        """One cursor page ordered by creation (id breaks ties) and whether more follow."""
        await self._maybe_sweep()
        now = _now_ms()
        desc = order == "desc"
        query = select(files).where(
            files.c.org_id == org_id, or_(files.c.expires_at.is_(None), files.c.expires_at > now),
        )
        if purpose:
            query = query.where(files.c.purpose == purpose)
        async with self.engine.connect() as conn:
            if after:
                cursor_time = (await conn.execute(
                    select(files.c.created_at).where(files.c.id == after, files.c.org_id == org_id)
                )).scalar()
                if cursor_time is None:  # deleted or expired since: its id still tells its time
                    cursor_time = _time_of_id(after)
                if cursor_time is None:
                    raise invalid_request(f"Invalid 'after' cursor: no such File object: {after}", param="after")
                if desc:
                    query = query.where(or_(files.c.created_at < cursor_time,
                                            and_(files.c.created_at == cursor_time, files.c.id < after)))
                else:
                    query = query.where(or_(files.c.created_at > cursor_time,
                                            and_(files.c.created_at == cursor_time, files.c.id > after)))
            ordering = (files.c.created_at.desc(), files.c.id.desc()) if desc else (files.c.created_at, files.c.id)
            rows = (await conn.execute(query.order_by(*ordering).limit(limit + 1))).all()
        records = [FileRecord.from_row(r) for r in rows]
        return records[:limit], len(records) > limit

    async def delete(self, org_id: str, file_id: str) -> bool:
        record = await self.get(org_id, file_id)
        if record is None:
            return False
        return await self._purge(record)

    async def _purge(self, record: FileRecord) -> bool:
        """Remove the row, then the bytes; only the caller that removed the row unlinks."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(files).where(files.c.id == record.id, files.c.org_id == record.org_id)
            )
        if result.rowcount:
            await self.blobs.delete(record.org_id, record.id)
        return bool(result.rowcount)

    async def _maybe_sweep(self) -> None:
        """Now and then remove expired files nobody asked for again (expiry is otherwise lazy)."""
        if time.monotonic() - self._last_sweep < SWEEP_EVERY:
            return
        self._last_sweep = time.monotonic()
        try:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(
                    select(files).where(files.c.expires_at.is_not(None), files.c.expires_at <= _now_ms())
                    .limit(SWEEP_BATCH)
                )).all()
            for row in rows:
                await self._purge(FileRecord.from_row(row))
        except Exception:  # a sweep is housekeeping: never fail the request that triggered it
            log.exception("sweeping expired files failed")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _expired(record: FileRecord, now_ms: int) -> bool:
    return record.expires_at is not None and record.expires_at <= now_ms
