"""`POST /v1/responses/compact` on either side of the pipeline: what a compaction request may
carry, the body a native upstream gets, and for the others the chat request that has the model
write a summary and the `response.compaction` made from its answer.

OpenAI's compaction items are encrypted (only OpenAI reads them); ours carry the summary itself
(`wire.responses_chat.compaction_item`), so any deployment can be shown it later.
"""

from __future__ import annotations

from typing import Any

from switchyard.responses.turns import native_body
from switchyard.wire.responses import ResponsesRequest
from switchyard.wire.responses_chat import chat_body, compaction_item, response_usage

# What a compaction request may carry (the rest of a Responses request has no meaning there).
FIELDS = frozenset({"model", "input", "instructions", "previous_response_id", "prompt_cache_key",
                    "prompt_cache_retention", "prompt_cache_options", "service_tier", "safety_identifier", "user"})
MAX_SUMMARY_TOKENS = 4096  # a summary needs no more; the hold of a compaction stays small
PROMPT = (
    "Summarise this conversation so far for continuing it later: the goal, what was done and decided, "
    "facts, names, file paths and open questions, tool results that still matter, and what to do next. "
    "Write only the summary."
)


def compaction_fields(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k in FIELDS}


def native_compaction_body(fields: dict[str, Any], conversation: list[dict[str, Any]]) -> dict[str, Any]:
    """For an upstream with `/responses/compact`: the whole conversation as `input` (it has no `store`)."""
    return {k: v for k, v in native_body(fields, conversation).items() if k != "store"}


def summary_chat(req: ResponsesRequest, fields: dict[str, Any], conversation: list[dict[str, Any]],
                 max_tokens: int) -> dict[str, Any]:
    """The chat request that has a model summarise the conversation, in at most `max_tokens`."""
    chat = chat_body(req, fields, conversation)
    chat["messages"].append({"role": "user", "content": PROMPT})
    chat["max_completion_tokens"] = min(max_tokens, MAX_SUMMARY_TOKENS)
    return chat


def compaction_from_chat(completion: dict[str, Any], conversation: list[dict[str, Any]], *,
                         compaction_id: str, created_at: int) -> dict[str, Any]:
    """The `response.compaction` of a summary written through chat: the user's own turns kept (as
    OpenAI keeps them), then one compaction item of ours holding the summary."""
    message = ((completion.get("choices") or [{}])[0]).get("message") or {}
    kept = [item for item in conversation if item.get("type", "message") == "message" and item.get("role") == "user"]
    return {"id": compaction_id, "object": "response.compaction", "created_at": created_at,
            "output": [*kept, compaction_item(str(message.get("content") or ""))],
            "usage": response_usage(completion.get("usage"))}
