"""`POST /v1/moderations`: the request as OpenAI defines it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchyard.wire.errors import invalid_request

DEFAULT_MODEL = "omni-moderation-latest"  # OpenAI's default when `model` is left out
MAX_INPUTS = 32


@dataclass(frozen=True, slots=True)
class ModerationRequest:
    model: str
    texts: tuple[str, ...]  # every text to classify (for admission and metering)
    images: int  # image parts (omni models classify images too)
    raw: dict[str, Any]


def parse_moderation_request(raw: Any) -> ModerationRequest:
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = raw.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' must be a model name.", param="model")
    value = raw.get("input")
    texts: list[str] = []
    images = 0
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = list(value)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, part in enumerate(value):
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url" and isinstance((part.get("image_url") or {}).get("url"), str):
                images += 1
            else:
                raise invalid_request("Each input part must be {type: text, text} or {type: image_url, image_url: "
                                      "{url}}.", param=f"input[{i}]")
    else:
        raise invalid_request("'input' must be a string, a list of strings or a list of text and image parts.",
                              param="input")
    if len(texts) + images > MAX_INPUTS:
        raise invalid_request(f"'input' may hold at most {MAX_INPUTS} items.", param="input")
    return ModerationRequest(model=model, texts=tuple(texts), images=images, raw=raw)
