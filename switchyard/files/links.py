"""Signed links to files: what a generated image's `url` points at. A link names the file and
its organisation and carries an expiry and an HMAC, so a browser fetches the image without an
API key and nobody can forge a link to another file or stretch one's lifetime."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

IMAGE_PURPOSE = "image_generation"
IMAGE_TTL = 24 * 3600  # a generated image stays in the organisation's files (and its link works) a day


class FileLinks:
    def __init__(self, secret: bytes, ttl: int = IMAGE_TTL) -> None:
        self._key = hashlib.sha256(b"switchyard file links\0" + secret).digest()
        self.ttl = ttl

    def token(self, org_id: str, file_id: str, expires_at: int) -> str:
        """`<payload>.<signature>` for the path; expiry in epoch seconds."""
        payload = base64.urlsafe_b64encode(f"{org_id}:{file_id}:{expires_at}".encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def read(self, token: str, now: float | None = None) -> tuple[str, str] | None:
        """The (organisation, file) a token names, or None when it is forged, garbled or expired."""
        payload, _, signature = token.partition(".")
        if not payload or not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            org_id, file_id, expires = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split(":")
            expires_at = int(expires)
        except ValueError:
            return None
        if expires_at < (time.time() if now is None else now):
            return None
        return org_id, file_id

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()
