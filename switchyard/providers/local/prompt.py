"""Chat messages to the model's prompt, through the chat template shipped in its GGUF file."""

from __future__ import annotations

from typing import Any

import orjson
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from switchyard.providers.local.grammar import TOOL_CLOSE, TOOL_OPEN
from switchyard.wire.chat import ChatRequest, FunctionDef, Message, TextPart
from switchyard.wire.errors import invalid_request

# ChatML, for GGUF files that carry no template of their own.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOOLS_PROMPT = (
    "You can call functions. The available functions are:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, answer with " + TOOL_OPEN + '{{"name": <function name>, "arguments": <JSON object>}}'
    + TOOL_CLOSE + ". Otherwise answer normally."
)


class PromptBuilder:
    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        self._formatter = Jinja2ChatFormatter(template or CHATML, eos_token=eos_token, bos_token=bos_token)

    def render(self, request: ChatRequest, tools: list[FunctionDef] | None) -> str:
        messages = [_message(i, m) for i, m in enumerate(request.messages)]
        if tools:
            described = "\n".join(
                orjson.dumps({"name": t.name, "description": t.description or "", "parameters": t.parameters or {}}).decode()
                for t in tools
            )
            note = TOOLS_PROMPT.format(tools=described)
            if messages and messages[0]["role"] == "system":
                messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + note}
            else:
                messages.insert(0, {"role": "system", "content": note})
        try:
            return self._formatter(messages=messages).prompt
        except Exception as exc:  # a template may refuse a message order (raise_exception in jinja)
            raise invalid_request(f"The local model's chat template rejected the messages: {exc}", param="messages") from None


def _text(index: int, message: Message) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if not isinstance(part, TextPart):
            raise invalid_request(
                f"The local model accepts only text content parts, not '{type(part).__struct_config__.tag}'.",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content",
            )
        parts.append(part.text)
    return "\n".join(parts)


def _message(index: int, message: Message) -> dict[str, Any]:
    role = message.role
    text = _text(index, message)
    if role == "developer":
        role = "system"
    elif role in ("tool", "function"):
        # Shown to the model the way its tool calls were shown: tagged, in a user turn.
        return {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}
    if message.tool_calls:
        calls = "".join(
            f'{TOOL_OPEN}{{"name": {orjson.dumps(c.function.name).decode()}, "arguments": {c.function.arguments or "{}"}}}{TOOL_CLOSE}'
            for c in message.tool_calls
        )
        text = f"{text}{calls}"
    return {"role": role, "content": text}
