"""`POST /v1/embeddings`: the request as OpenAI defines it, and the answer's shape."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from switchyard.wire.errors import invalid_request

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
MAX_TOKEN_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    model: str
    texts: tuple[str, ...] | None  # the input as strings, or
    token_ids: tuple[tuple[int, ...], ...] | None  # as token arrays (OpenAI models only)
    encoding_format: str  # float | base64
    dimensions: int | None
    user: str | None
    raw: dict[str, Any]

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids or ())

    @property
    def text_bytes(self) -> int:
        return sum(len(t.encode()) for t in self.texts) if self.texts is not None else 0


def parse_embeddings_request(raw: Any) -> EmbeddingsRequest:
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required.", param="model")
    value = raw.get("input")
    texts: tuple[str, ...] | None = None
    token_ids: tuple[tuple[int, ...], ...] | None = None
    if isinstance(value, str):
        texts = (value,)
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = tuple(value)
    elif isinstance(value, list) and value and all(_is_token(v) for v in value):
        token_ids = (tuple(value),)
    elif isinstance(value, list) and value and all(isinstance(v, list) and v and all(_is_token(t) for t in v)
                                                    for v in value):
        token_ids = tuple(tuple(v) for v in value)
    else:
        raise invalid_request("'input' must be a string, a list of strings, a list of token ids or a list of "
                              "lists of token ids, and not empty.", param="input")
    if texts is not None and any(not t for t in texts):
        raise invalid_request("'input' cannot contain an empty string.", param="input")
    if len(texts or token_ids or ()) > MAX_INPUTS:
        raise invalid_request(f"'input' may hold at most {MAX_INPUTS} items.", param="input")
    encoding = raw.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dimensions = raw.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise invalid_request("'dimensions' must be a positive integer.", param="dimensions")
    user = raw.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid_request("'user' must be a string.", param="user")
    return EmbeddingsRequest(model=model, texts=texts, token_ids=token_ids, encoding_format=encoding,
                             dimensions=dimensions, user=user, raw=raw)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


def encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    """As OpenAI sends it: a list of floats, or base64 of little-endian float32s."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def decode_vector(value: Any) -> list[float]:
    """An upstream's vector (floats, or OpenAI's base64 float32s) as floats."""
    if isinstance(value, str):
        data = base64.b64decode(value)
        return list(struct.unpack(f"<{len(data) // 4}f", data))
    return [float(v) for v in value]


def embeddings_object(vectors: list[list[float]], model: str, prompt_tokens: int, encoding: str) -> dict[str, Any]:
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
