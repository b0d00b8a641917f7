"""multipart/form-data as the media endpoints see it: a client's form (fields and uploads), and
the bodies sent to upstreams that take uploads (OpenAI's image edits, audio)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Upload:
    """One file part: the client's name for it, its bytes (the content type is never trusted)."""

    field: str
    filename: str
    data: bytes


@dataclass(slots=True)
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[Upload]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def all(self, name: str) -> list[str]:
        """A repeated field, sent as `name` or `name[]` (the SDKs send arrays as `name[]`)."""
        return self.fields.get(name, []) + self.fields.get(f"{name}[]", [])

    def uploads(self, name: str) -> list[Upload]:
        return self.files.get(name, []) + self.files.get(f"{name}[]", [])


def encode_form(fields: Iterable[tuple[str, str]], files: Iterable[tuple[str, str, str, bytes]]) -> tuple[str, bytes]:
    """(content type, body) of a form: `fields` as (name, value), `files` as (name, filename,
    content type, bytes)."""
    boundary = "sy-" + secrets.token_hex(16)
    out = bytearray()
    for name, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, filename, content_type, data in files:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"; '
                f'filename="{_quoted(filename)}"\r\nContent-Type: {content_type}\r\n\r\n').encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


def _quoted(text: str) -> str:
    # Quotes and line breaks would end the header early: the browser convention percent-escapes them.
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
