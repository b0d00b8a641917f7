"""One Responses turn around the chat pipeline: the conversation to send, the answer adopted as ours.

The gateway routes, admits and bills a Responses request through its chat view; these helpers
do what is particular to the Responses API on either side of that.
"""

from __future__ import annotations

import base64
import copy
from typing import Any, Protocol

from switchyard.files import sniff_image
from switchyard.metering.cost import TokenUsage
from switchyard.wire.errors import GatewayError, invalid_request
from switchyard.wire.responses_chat import SUMMARY_HEADING, compaction_summary

# Fields of a Responses request that the gateway itself implements: never sent upstream.
_GATEWAY_FIELDS = frozenset({"previous_response_id", "store", "stream", "cache", "switchyard_cache",
                             "background", "conversation", "truncation"})
# Chat parameter names in errors from the shared pipeline, as the Responses API calls them.
_PARAMS = {
    "reasoning_effort": "reasoning.effort", "response_format": "text.format", "messages": "input",
    "max_completion_tokens": "max_output_tokens", "max_tokens": "max_output_tokens",
}


class FileReader(Protocol):
    async def read_bytes(self, org_id: str, file_id: str) -> bytes: ...


def native_body(raw: dict[str, Any], conversation: list[dict[str, Any]]) -> dict[str, Any]:
    """The request for an upstream that speaks Responses: the whole conversation as `input`,
    stored nowhere upstream (switchyard keeps the state and the ids)."""
    body = {k: v for k, v in raw.items() if k not in _GATEWAY_FIELDS}
    items = []
    for item in conversation:
        # Reasoning items can only go back with their encrypted content (we do not store upstream).
        if item.get("type") == "reasoning" and not item.get("encrypted_content"):
            continue
        if item.get("type") == "compaction" and (summary := compaction_summary(item)) is not None:
            # Compacted by translation: only we can read it, so the upstream gets the summary itself.
            items.append({"type": "message", "role": "developer", "content": SUMMARY_HEADING + summary})
            continue
        items.append({k: v for k, v in item.items() if k not in ("id", "status")})
    body["input"] = items
    body["store"] = False
    return body


def adopt(response: dict[str, Any], *, response_id: str, model: str, previous_response_id: str | None,
          store: bool, metadata: dict[str, str] | None, truncation: str | None) -> None:
    """Make an upstream's response ours: our id (the one GET /v1/responses/{id} knows), the
    public model name, and what the client asked for rather than what we sent upstream."""
    response.update(id=response_id, model=model, previous_response_id=previous_response_id, store=store,
                    metadata=metadata or {}, truncation=truncation or "disabled")
    if response.get("user", "") is None:
        del response["user"]  # OpenAI sends null; its own spec types `user` as a string


async def inline_files(items: list[dict[str, Any]], org_id: str, files: FileReader | None) -> list[dict[str, Any]]:
    """Image parts naming an uploaded file (`file_id`) get its bytes as a data URL: upstreams
    do not know our files. Items are copied; the stored input keeps the `file_id`."""
    out = items
    for i, item in enumerate(items):
        content = item.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "input_image" and part.get("file_id")
                    and not part.get("image_url")):
                continue
            if files is None:
                raise invalid_request("Files are not available on this server.", param=f"input[{i}].content[{j}].file_id")
            data = await files.read_bytes(org_id, part["file_id"])
            mime = sniff_image(data[:16])
            if mime is None:
                raise invalid_request(f"File {part['file_id']} is not an image (PNG, JPEG, GIF or WebP).",
                                      param=f"input[{i}].content[{j}].file_id", code="invalid_image")
            if out is items:
                out = copy.deepcopy(items)
            new_part = {k: v for k, v in part.items() if k != "file_id"}
            new_part["image_url"] = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            out[i]["content"][j] = new_part
    return out


def usage_of(usage: TokenUsage) -> dict[str, Any]:
    """Our own count as a Responses `usage` object (for upstreams that report none)."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def as_responses_error(exc: GatewayError) -> GatewayError:
    """An error from the chat pipeline, naming the parameter as the Responses request has it."""
    param = exc.param
    if param is None:
        return exc
    head = param.split("[", 1)[0].split(".", 1)[0]
    if head in _PARAMS:
        exc.param = _PARAMS[head] if head == "messages" else _PARAMS[head] + param[len(head):]
        for chat_name, name in _PARAMS.items():
            if chat_name != "messages":
                exc.message = exc.message.replace(f"'{chat_name}'", f"'{name}'").replace(f"{chat_name} is", f"{name} is")
    return exc
