"""Facts read off a whole answer (a `chat.completion` or a Responses `response`)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from switchyard.catalog import ModelSpec
from switchyard.wire.responses_chat import compaction_summary


def answer_text(body: dict[str, Any]) -> str:
    """Everything the model wrote, over every choice or output item: text, refusals, tool-call
    names and arguments, reasoning summaries. Metering counts it when an upstream reports no usage."""
    parts: list[str] = []
    for choice in body.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get("text"), str):  # a legacy completion
            parts.append(choice["text"])
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for key in ("content", "refusal", "reasoning_content"):
            if isinstance(message.get(key), str):
                parts.append(message[key])
        for call in message.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                parts.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
    for item in body.get("output") or ():
        if not isinstance(item, dict) or item.get("role") == "user":  # (a compaction keeps the user's turns)
            continue
        if item.get("type") == "function_call":
            parts.append(str(item.get("name") or "") + str(item.get("arguments") or ""))
        elif item.get("type") == "custom_tool_call":
            parts.append(str(item.get("name") or "") + str(item.get("input") or ""))
        elif item.get("type") == "compaction":
            parts.append(compaction_summary(item) or "")  # ours only: OpenAI's are opaque
        for part in (item.get("content") or ()) if isinstance(item.get("content"), list) else ():
            if isinstance(part, dict):
                parts.append(str(part.get("text") or part.get("refusal") or ""))
        for part in item.get("summary") or ():
            if isinstance(part, dict):
                parts.append(str(part.get("text") or ""))
    return "".join(parts)


def public_model_name(returned: Any, public: str, spec: ModelSpec) -> str:
    """The `model` a client sees: the public name it asked for, or that model's dated snapshot
    (as OpenAI answers `gpt-5.2` with `gpt-5.2-2025-12-11`), never an upstream's own id."""
    if returned == public:
        return public
    if isinstance(returned, str) and spec.id == public and returned in spec.snapshots:
        return returned
    return public


_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


def json_answer(text: str) -> str | None:
    """An answer to a JSON-mode request as bare JSON: a Markdown fence around it (which models
    that only get an instruction like to add) removed; None if what is left is not a JSON object."""
    fenced = _FENCE.match(text)
    body = (fenced.group("body") if fenced else text).strip()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(value, dict) else None
