"""Responses API request (`POST /v1/responses`): typed view, validation, and stored input items.

Every tool and item type OpenAI accepts is accepted (see `responses_tools` for what a chat-only
deployment makes of them); what switchyard cannot serve at all (item references, background
runs, conversations, stored prompts) gets a 400 naming the param. Input items stay plain dicts
after validation: they are stored and listed as JSON anyway.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from switchyard.wire.chat import Float01, Float02, _param_of
from switchyard.wire.errors import GatewayError, invalid_request
from switchyard.wire.responses_tools import check_tools, tool_names

NAME = r"^[a-zA-Z0-9_-]{1,64}$"
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
MetadataKey = Annotated[str, Meta(max_length=64)]
MetadataValue = Annotated[str, Meta(max_length=512)]


# ---------------------------------------------------------------- top-level structs


class Reasoning(Struct):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    context: Literal["auto", "current_turn", "all_turns"] | None = None
    mode: str | None = None


class TextFormatText(Struct, tag="text", tag_field="type"):
    pass


class TextFormatJSONObject(Struct, tag="json_object", tag_field="type"):
    pass


class TextFormatJSONSchema(Struct, tag="json_schema", tag_field="type"):
    name: Annotated[str, Meta(pattern=NAME)]
    schema: dict[str, Any]
    description: str | None = None
    strict: bool | None = None


TextFormat = TextFormatText | TextFormatJSONObject | TextFormatJSONSchema


class TextConfig(Struct):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ToolChoiceFunction(Struct, tag="function", tag_field="type"):
    name: str
    namespace: str | None = None


class ToolChoiceCustom(Struct, tag="custom", tag_field="type"):
    name: str


class AllowedTool(Struct):
    type: str
    name: str | None = None


class ToolChoiceAllowed(Struct, tag="allowed_tools", tag_field="type"):
    mode: Literal["auto", "required"]
    tools: Annotated[list[AllowedTool], Meta(min_length=1)]


class ToolChoiceHosted(Struct):
    """A hosted tool forced (`{"type": "web_search"}`): OpenAI's to run."""

    type: str


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceFunction | ToolChoiceCustom | ToolChoiceAllowed | ToolChoiceHosted
_CHOICE_TAGS = {"function": ToolChoiceFunction, "custom": ToolChoiceCustom, "allowed_tools": ToolChoiceAllowed}


class StreamOptions(Struct):
    include_obfuscation: bool | None = None


class ResponsesRequest(Struct, dict=True):
    model: str
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    max_output_tokens: Annotated[int, Meta(ge=16)] | None = None
    temperature: Float02 | None = None
    top_p: Float01 | None = None
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = None  # checked by responses_tools.check_tools
    tool_choice: str | dict[str, Any] | None = None  # see `choice`
    parallel_tool_calls: bool | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=16)] | None = None
    store: bool | None = True
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    truncation: Literal["auto", "disabled"] | None = "disabled"
    previous_response_id: str | None = None
    service_tier: str | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Meta(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    include: list[str] | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    max_tool_calls: int | None = None

    @property
    def effort(self) -> str | None:
        return self.reasoning.effort if self.reasoning else None

    @property
    def choice(self) -> ToolChoice | None:
        """`tool_choice`, typed (validated by parse_responses_request)."""
        return _typed_choice(self.tool_choice)

    @property
    def wants_logprobs(self) -> bool:
        return self.top_logprobs is not None or "message.output_text.logprobs" in (self.include or ())


# ---------------------------------------------------------------- input item structs
# Only used to validate one item at a time, so a msgspec error path can be prefixed with
# `input[i]`; the validated item itself is kept as the caller's dict.


class InputText(Struct, tag="input_text", tag_field="type"):
    text: str


class InputImage(Struct, tag="input_image", tag_field="type"):
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"


class InputFile(Struct, tag="input_file", tag_field="type"):
    file_id: str | None = None
    filename: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class OutputText(Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class Refusal(Struct, tag="refusal", tag_field="type"):
    refusal: str


ContentPart = InputText | InputImage | InputFile | OutputText | Refusal
ToolOutputPart = InputText | InputImage | InputFile


class MessageItem(Struct):
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    type: Literal["message"] = "message"
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(Struct):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(Struct):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Meta(min_length=1, max_length=64)]
    output: str | list[ToolOutputPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItem(Struct):
    type: Literal["reasoning"]
    summary: list[dict[str, Any]] = []
    id: str | None = None
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class CustomToolCallItem(Struct):
    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str
    namespace: str | None = None
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class CustomToolCallOutputItem(Struct):
    type: Literal["custom_tool_call_output"]
    call_id: Annotated[str, Meta(min_length=1, max_length=64)]
    output: str | list[ToolOutputPart]
    id: str | None = None


class CompactionItem(Struct):
    type: Literal["compaction"]
    encrypted_content: str
    id: str | None = None
    created_by: str | None = None


_ITEM_STRUCTS: dict[str, type[Struct]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
    "reasoning": ReasoningItem,
    "custom_tool_call": CustomToolCallItem,
    "custom_tool_call_output": CustomToolCallOutputItem,
    "compaction": CompactionItem,
}
# Items of tools OpenAI runs (web_search_call, mcp_call, ...): kept for native upstreams, which
# know them; a translated conversation leaves them out.
_OPAQUE_ITEMS = re.compile(r"^[a-z][a-z0-9_]*_(call|call_output|list_tools|approval_request|approval_response)$")


# ---------------------------------------------------------------- parsing


def new_id(prefix: str) -> str:
    """An OpenAI-looking id: `resp_`, `msg_`, `fc_`… followed by 48 lowercase hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


def _convert_error(exc: msgspec.ValidationError, prefix: str | None) -> GatewayError:
    text, param = _param_of(str(exc))
    if param:
        param = param.replace("[...]", "") or None  # msgspec's marker for "some dict value"
    if prefix:
        param = f"{prefix}.{param}" if param and not param.startswith("[") else f"{prefix}{param or ''}"
    if text.startswith("Object missing required field"):
        field = text.split("`")[1] if "`" in text else None
        param = f"{param}.{field}" if param and field else field or param
        return invalid_request(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return invalid_request(f"Invalid value for '{param or 'body'}': {text}.", param=param, code="invalid_value")


def _unsupported(what: str, param: str) -> GatewayError:
    return invalid_request(f"{what} is not supported by this gateway.", param=param, code="invalid_value")


def parse_responses_request(body: Any) -> ResponsesRequest:
    """Validate a decoded JSON body; raise a 400 naming the offending parameter."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    _check_unsupported(body)
    try:
        req = msgspec.convert(body, ResponsesRequest)
    except msgspec.ValidationError as exc:
        raise _convert_error(exc, None) from None
    if isinstance(req.input, list):
        for i, item in enumerate(req.input):
            _check_item(item, f"input[{i}]")
    _check_semantics(req)
    return req


def _check_unsupported(body: dict[str, Any]) -> None:
    """Check tools, and reject what we cannot serve before type checks, so the error names it plainly."""
    check_tools(body.get("tools"))
    choice = body.get("tool_choice")
    if choice is not None:
        try:
            _typed_choice(choice)
        except msgspec.ValidationError as exc:
            raise _convert_error(exc, "tool_choice") from None
    if body.get("background"):
        raise _unsupported("Background mode", "background")
    if body.get("conversation") is not None:
        if body.get("previous_response_id") is not None:
            raise invalid_request(
                "'previous_response_id' cannot be used together with 'conversation'.",
                param="previous_response_id",
                code="invalid_value",
            )
        raise _unsupported("The 'conversation' parameter", "conversation")
    if body.get("prompt") is not None:
        raise _unsupported("The 'prompt' parameter (stored prompt templates)", "prompt")


def _typed_choice(choice: Any) -> ToolChoice | None:
    if choice is None or isinstance(choice, str):
        return msgspec.convert(choice, Literal["none", "auto", "required"] | None)  # type: ignore[arg-type]
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise msgspec.ValidationError("Expected `str` or an object with a `type` - at `$`")
    return msgspec.convert(choice, _CHOICE_TAGS.get(choice["type"], ToolChoiceHosted))  # type: ignore[no-any-return]


def _check_item(item: dict[str, Any], path: str) -> None:
    kind = item.get("type", "message")
    if kind not in _ITEM_STRUCTS:
        if isinstance(kind, str) and _OPAQUE_ITEMS.match(kind):
            return
        raise _unsupported(f"Input item type '{kind}'", f"{path}.type")
    try:
        typed = msgspec.convert(item, _ITEM_STRUCTS[kind])
    except msgspec.ValidationError as exc:
        raise _convert_error(exc, path) from None
    if isinstance(typed, MessageItem) and isinstance(typed.content, list):
        output_role = typed.role == "assistant"
        for j, part in enumerate(typed.content):
            _check_part(part, f"{path}.content[{j}]", output_role=output_role, role=typed.role)
    elif isinstance(typed, (FunctionCallOutputItem, CustomToolCallOutputItem)) and isinstance(typed.output, list):
        for j, part in enumerate(typed.output):
            _check_part(part, f"{path}.output[{j}]", output_role=False, role="tool")


def _check_part(part: ContentPart, path: str, *, output_role: bool, role: str) -> None:
    is_output = isinstance(part, (OutputText, Refusal))
    if is_output != output_role:
        allowed = "'output_text' and 'refusal'" if output_role else "'input_text', 'input_image' and 'input_file'"
        kind = type(part).__struct_config__.tag
        raise invalid_request(
            f"Invalid value for '{path}.type': '{kind}'. Supported values for role '{role}' are: {allowed}.",
            param=f"{path}.type",
            code="invalid_value",
        )
    if isinstance(part, InputImage) and part.image_url is None and part.file_id is None:
        raise invalid_request(
            f"Missing required parameter: '{path}.image_url' (or '{path}.file_id').",
            param=f"{path}.image_url",
            code="missing_required_parameter",
        )
    if isinstance(part, InputFile):
        if part.file_url is not None:
            raise _unsupported("'file_url' in an input_file part", f"{path}.file_url")
        if part.file_id is None and part.file_data is None:
            raise invalid_request(
                f"Missing required parameter: '{path}.file_id' (or '{path}.file_data').",
                param=f"{path}.file_id",
                code="missing_required_parameter",
            )


def _check_semantics(req: ResponsesRequest) -> None:
    if req.input is None and req.previous_response_id is None:
        raise invalid_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    names = tool_names(req.tools)
    choice = req.choice
    if isinstance(choice, (ToolChoiceFunction, ToolChoiceCustom)) and choice.name not in names:
        raise invalid_request(
            f"Invalid value for 'tool_choice': no function named '{choice.name}' in 'tools'.",
            param="tool_choice.name",
            code="invalid_value",
        )
    if isinstance(choice, ToolChoiceAllowed):
        for i, tool in enumerate(choice.tools):
            if tool.type in ("function", "custom") and tool.name not in names:
                raise invalid_request(
                    f"Invalid value for 'tool_choice': no function named '{tool.name}' in 'tools'.",
                    param=f"tool_choice.tools[{i}].name",
                    code="invalid_value",
                )
    if choice == "required" and not req.tools:
        raise invalid_request(
            "Invalid value for 'tool_choice': 'required' needs at least one tool in 'tools'.",
            param="tool_choice",
            code="invalid_value",
        )


# ---------------------------------------------------------------- stored input items


def input_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's `input` as stored items: each with an `id`, an explicit `type` and a status."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [_message("user", [{"type": "input_text", "text": req.input}])]
    return [normalize_item(item) for item in req.input]


def normalize_item(item: dict[str, Any]) -> dict[str, Any]:
    """One validated input item in the shape OpenAI lists it (ids kept, content as parts)."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item["role"]
        content = item["content"]
        if isinstance(content, str):
            part_type = "output_text" if role == "assistant" else "input_text"
            parts = [{"type": part_type, "text": content}]
        else:
            parts = [dict(p) for p in content]
        msg = _message(role, [_normalize_part(p) for p in parts], item_id=item.get("id"))
        if item.get("status"):
            msg["status"] = item["status"]
        return msg
    out = dict(item)
    out["type"] = kind
    out.setdefault("id", None)
    if out["id"] is None:
        prefixes = {"function_call": "fc", "function_call_output": "fco", "reasoning": "rs", "custom_tool_call": "ctc",
                    "custom_tool_call_output": "ctco", "compaction": "cmp"}
        out["id"] = new_id(prefixes.get(kind, "item"))
    if kind in ("function_call", "function_call_output") and not out.get("status"):
        out["status"] = "completed"
    if kind == "reasoning":
        out.setdefault("summary", [])
    return out


def _message(role: str, content: list[dict[str, Any]], *, item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or new_id("msg"), "type": "message", "role": role, "status": "completed", "content": content}


def _normalize_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "output_text":
        part.setdefault("annotations", [])
        part.setdefault("logprobs", [])
        if part["annotations"] is None:
            part["annotations"] = []
        if part["logprobs"] is None:
            part["logprobs"] = []
    elif kind == "input_image":
        part.setdefault("detail", "auto")
        part.setdefault("image_url", None)
        part.setdefault("file_id", None)
    return part
