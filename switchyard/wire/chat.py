"""Chat Completions request: typed view for validation, raw dict kept for pass-through.

The typed structs only check what the gateway relies on; unknown fields are ignored here and
forwarded untouched from the raw body, so new OpenAI parameters keep working.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from switchyard.wire.errors import invalid_request

Float02 = Annotated[float, Meta(ge=0, le=2)]
Float01 = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, Meta(ge=1)]


class TextPart(Struct, tag="text", tag_field="type"):
    text: str


class ImageURL(Struct):
    url: str
    detail: Literal["auto", "low", "high", "original"] = "auto"


class ImagePart(Struct, tag="image_url", tag_field="type"):
    image_url: ImageURL


class InputAudio(Struct):
    data: str
    format: str


class AudioPart(Struct, tag="input_audio", tag_field="type"):
    input_audio: InputAudio


class FilePart(Struct, tag="file", tag_field="type"):
    file: dict[str, Any]


class RefusalPart(Struct, tag="refusal", tag_field="type"):
    refusal: str


ContentPart = TextPart | ImagePart | AudioPart | FilePart | RefusalPart


class FunctionCall(Struct):
    name: str
    arguments: str


class ToolCall(Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class Message(Struct):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class StreamOptions(Struct):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class FunctionDef(Struct):
    name: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Struct):
    type: str = "function"
    function: FunctionDef | None = None


class NamedFunction(Struct):
    name: str


class NamedToolChoice(Struct):
    function: NamedFunction
    type: str = "function"


class JSONSchemaFormat(Struct):
    name: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(Struct, tag="text", tag_field="type"):
    pass


class JSONObjectFormat(Struct, tag="json_object", tag_field="type"):
    pass


class JSONSchemaResponseFormat(Struct, tag="json_schema", tag_field="type"):
    json_schema: JSONSchemaFormat


ResponseFormat = TextFormat | JSONObjectFormat | JSONSchemaResponseFormat


class ChatRequest(Struct, dict=True):  # dict: room for facts computed once (has_images)
    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    temperature: Float02 | None = None
    top_p: Float01 | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    logit_bias: dict[str, Annotated[int, Meta(ge=-100, le=100)]] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    @property
    def output_limit(self) -> int | None:
        """The caller's cap on generated tokens (`max_completion_tokens` wins, as at OpenAI)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def has_images(self) -> bool:
        # Asked by routing, metering and every provider: a long conversation is walked once.
        found = self.__dict__.get("_has_images")
        if found is None:
            found = self.__dict__["_has_images"] = any(
                isinstance(m.content, list) and any(isinstance(p, ImagePart) for p in m.content)
                for m in self.messages
            )
        return found

    @property
    def json_schema(self) -> JSONSchemaFormat | None:
        rf = self.response_format
        return rf.json_schema if isinstance(rf, JSONSchemaResponseFormat) else None


_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def _param_of(message: str) -> tuple[str, str | None]:
    """Split msgspec's "Expected int, got str - at `$.messages[0].role`" into text and param."""
    m = _PATH.search(message)
    if not m:
        return message, None
    return message[: m.start()], m.group("path") or None


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded JSON body; raise a 400 naming the offending parameter."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    try:
        req = msgspec.convert(body, ChatRequest)
    except msgspec.ValidationError as exc:
        text, param = _param_of(str(exc))
        if text.startswith("Object missing required field"):
            field = text.split("`")[1] if "`" in text else None
            param = f"{param}.{field}" if param and field else field or param
            raise invalid_request(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter") from None
        raise invalid_request(f"Invalid value for '{param or 'body'}': {text}.", param=param, code="invalid_value") from None
    _check_semantics(req)
    return req


def _check_semantics(req: ChatRequest) -> None:
    for i, msg in enumerate(req.messages):
        if msg.role == "tool" and not msg.tool_call_id:
            raise invalid_request(
                f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                param=f"messages[{i}].tool_call_id",
                code="missing_required_parameter",
            )
        if msg.role in ("system", "developer", "user") and msg.content is None:
            raise invalid_request(
                f"Missing required parameter: 'messages[{i}].content'.",
                param=f"messages[{i}].content",
                code="missing_required_parameter",
            )
    if req.tools:
        for i, tool in enumerate(req.tools):
            if tool.type == "function" and tool.function is None:
                raise invalid_request(
                    f"Missing required parameter: 'tools[{i}].function'.",
                    param=f"tools[{i}].function",
                    code="missing_required_parameter",
                )
    if isinstance(req.tool_choice, NamedToolChoice):
        names = {t.function.name for t in req.tools or [] if t.function}
        if req.tool_choice.function.name not in names:
            raise invalid_request(
                f"Invalid value for 'tool_choice': no function named '{req.tool_choice.function.name}' in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
    elif req.tool_choice == "required" and not req.tools:
        raise invalid_request(
            "Invalid value for 'tool_choice': 'required' needs at least one tool in 'tools'.",
            param="tool_choice",
        )
    if req.top_logprobs is not None and not req.logprobs:
        raise invalid_request(
            "Invalid value for 'top_logprobs': 'logprobs' must be true when 'top_logprobs' is set.",
            param="top_logprobs",
        )
    if req.stream_options is not None and not req.stream:
        raise invalid_request(
            "Invalid value for 'stream_options': only allowed when 'stream' is true.",
            param="stream_options",
        )
