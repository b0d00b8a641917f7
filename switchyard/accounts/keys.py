"""API keys: generation, hashing, redaction, and the operator's master key.

Keys are held only as SHA-256 digests, so a database dump or a log line never holds one.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

KEY_PREFIX = "sk-sy-"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: str = "live") -> str:
    return f"{KEY_PREFIX}{kind}-{secrets.token_urlsafe(32)}"


def redact(token: str) -> str:
    """OpenAI-style hint: enough to tell keys apart, never enough to use one."""
    if len(token) <= 12:
        return "*" * len(token)
    return f"{token[:6]}...{token[-4:]}"


def ensure_master_key(master_key: str | None, digest_file: Path) -> tuple[str, str | None]:
    """Return (digest of the master key, the new plaintext key if one was just generated).

    With no key configured, a key is generated once, its digest kept in the data directory,
    and the plaintext handed back so the caller can print it a single time.
    """
    if master_key:
        return digest(master_key), None
    if digest_file.exists():
        return digest_file.read_text().strip(), None
    key = new_key("admin")
    digest_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = digest_file.with_suffix(".tmp")
    tmp.write_text(digest(key) + "\n")
    tmp.chmod(0o600)
    tmp.replace(digest_file)
    return digest(key), key
