"""Reading tool calls back out of the local model's grammar-constrained text, whole or streamed."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from switchyard.providers.local.grammar import TOOL_OPEN

_HEADER = re.compile(
    re.escape(TOOL_OPEN) + r'\s*\{\s*"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*'
)


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class _JSONEnd:
    """Finds where one JSON value ends, fed a character at a time."""

    __slots__ = ("depth", "in_string", "escaped", "started")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.started = False

    def feed(self, ch: str) -> bool:
        """True when `ch` closes the value."""
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif ch == "\\":
                self.escaped = True
            elif ch == '"':
                self.in_string = False
                return self.depth == 0
            return False
        if ch == '"':
            self.in_string = True
            self.started = True
        elif ch in "{[":
            self.depth += 1
            self.started = True
        elif ch in "}]":
            self.depth -= 1
            return self.depth == 0
        return False


@dataclass
class ToolCallStream:
    """Turns generated text into OpenAI `delta.tool_calls` fragments as it arrives.

    The name is sent once with the call's id; argument text is sent as soon as it is known to
    belong to the arguments (the JSON scanner tells where they end).
    """

    buffer: str = ""
    index: int = -1
    in_args: bool = False
    scanner: _JSONEnd = field(default_factory=_JSONEnd)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.buffer += text
        out: list[dict[str, Any]] = []
        while True:
            if not self.in_args:
                m = _HEADER.search(self.buffer)
                if not m:
                    return out
                self.index += 1
                call = {"id": new_call_id(), "type": "function", "function": {"name": m.group("name"), "arguments": ""}}
                self.calls.append(call)
                out.append({"index": self.index, "id": call["id"], "type": "function",
                            "function": {"name": m.group("name"), "arguments": ""}})
                self.buffer = self.buffer[m.end():]
                self.in_args = True
                self.scanner = _JSONEnd()
            consumed = 0
            closed = False
            for i, ch in enumerate(self.buffer):
                consumed = i + 1
                if self.scanner.feed(ch):
                    closed = True
                    break
            piece = self.buffer[:consumed]
            self.buffer = self.buffer[consumed:]
            if piece:
                self.calls[-1]["function"]["arguments"] += piece
                out.append({"index": self.index, "function": {"arguments": piece}})
            if not closed:
                return out
            self.in_args = False


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """All complete tool calls in `text`, or None if it is not (only) tool calls."""
    if not text.startswith(TOOL_OPEN):
        return None
    stream = ToolCallStream()
    stream.feed(text)
    if not stream.calls or stream.in_args:
        return None
    return stream.calls
