"""API-key authentication against keys from config and the environment.

Keys are held only as SHA-256 digests, so a memory dump or a log line never holds one.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from switchyard.wire.errors import invalid_api_key

KEY_PREFIX = "sk-sy-"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: str = "admin") -> str:
    return f"{KEY_PREFIX}{kind}-{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `key_id` is a short, non-secret handle safe to log."""

    key_id: str
    is_admin: bool


class KeyRing:
    def __init__(self, admin_digests: Iterable[str], user_digests: Iterable[str]) -> None:
        self._principals: dict[str, Principal] = {}
        for d in user_digests:
            self._principals[d] = Principal(key_id=f"key_{d[:12]}", is_admin=False)
        for d in admin_digests:
            self._principals[d] = Principal(key_id=f"key_{d[:12]}", is_admin=True)

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise invalid_api_key(
                "You didn't provide an API key. Provide it in the Authorization header as 'Bearer YOUR_KEY'."
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise invalid_api_key("The Authorization header must be 'Bearer YOUR_KEY'.")
        principal = self._principals.get(digest(token))
        if principal is None:
            raise invalid_api_key(f"Incorrect API key provided: {_redact(token)}.")
        return principal


def _redact(token: str) -> str:
    """OpenAI-style hint: enough to tell keys apart, never enough to use one."""
    if len(token) <= 8:
        return "*" * len(token)
    return f"{token[:3]}{'*' * 4}{token[-4:]}"


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

