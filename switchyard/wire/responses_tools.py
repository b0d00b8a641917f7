"""The tools of a Responses request, as OpenAI accepts them and as a chat deployment can run them.

OpenAI's Responses API takes function tools, `namespace` tools (functions and custom tools
grouped under a name), `custom` tools (free-text input, optionally a grammar) and hosted tools
(`web_search`, `file_search`, `code_interpreter`, `mcp`, ...). Coding agents such as Codex send
all of them. Deployments that speak Responses natively get them untouched. For the others the
request is translated to chat, where:
- namespaced tools become functions named `<namespace>__<name>`, and calls map back to items
  naming the namespace;
- custom tools become functions with one string parameter, `input`, and calls map back to
  `custom_tool_call` items;
- hosted tools, which only OpenAI can run, are left out (the gateway says so in a response
  header and the log) rather than refusing the turn.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchyard.wire.errors import invalid_request

CLIENT_TOOLS = frozenset({"function", "custom", "namespace"})
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CUSTOM_PARAMETERS = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
                      "additionalProperties": False}


@dataclass(frozen=True, slots=True)
class ToolName:
    """What one chat function stands for in the Responses request."""

    name: str
    namespace: str | None = None
    custom: bool = False


@dataclass(slots=True)
class ToolMap:
    """A request's tools for a chat deployment, and the way back from its tool calls."""

    chat_tools: list[dict[str, Any]] = field(default_factory=list)
    by_chat_name: dict[str, ToolName] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # hosted tool types no chat deployment can run

    def chat_name(self, name: str, namespace: str | None = None) -> str:
        """The chat function name of a Responses tool (unknown ones keep their name)."""
        if namespace:
            return _joined(namespace, name)
        return name

    def call_item(self, call_id: str, chat_name: str, arguments: str, item_id: str, status: str) -> dict[str, Any]:
        """A chat tool call as its Responses output item."""
        target = self.by_chat_name.get(chat_name, ToolName(chat_name))
        if target.custom:
            item: dict[str, Any] = {"id": item_id, "type": "custom_tool_call", "call_id": call_id, "name": target.name,
                                    "input": custom_input(arguments), "status": status}
        else:
            item = {"id": item_id, "type": "function_call", "call_id": call_id, "name": target.name,
                    "arguments": arguments, "status": status}
        if target.namespace:
            item["namespace"] = target.namespace
        return item


def _joined(namespace: str, name: str) -> str:
    joined = f"{namespace}__{name}"
    if _NAME.match(joined):
        return joined
    # Too long or odd characters for a chat function name: a stable short form of it.
    digest = hashlib.sha256(joined.encode()).hexdigest()[:10]
    return re.sub(r"[^a-zA-Z0-9_-]", "_", joined)[:53] + "_" + digest


def custom_input(arguments: str) -> str:
    """The free-text input of a custom tool call, from the chat call's JSON arguments."""
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return arguments  # a model that wrote the text itself
    return str(value.get("input", "")) if isinstance(value, dict) else str(value)


def check_tools(tools: Any) -> None:
    """Validate a Responses `tools` list; every type OpenAI accepts passes, malformed ones get a 400."""
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid_request("Invalid value for 'tools': expected an array of tools.", param="tools", code="invalid_type")
    for i, tool in enumerate(tools):
        _check_tool(tool, f"tools[{i}]", nested=False)


def _check_tool(tool: Any, path: str, *, nested: bool) -> None:
    if not isinstance(tool, dict):
        raise invalid_request(f"Invalid value for '{path}': expected an object.", param=path, code="invalid_type")
    kind = tool.get("type")
    if not isinstance(kind, str) or not kind:
        raise invalid_request(f"Missing required parameter: '{path}.type'.", param=f"{path}.type",
                              code="missing_required_parameter")
    if nested and kind not in ("function", "custom"):
        raise invalid_request(f"Invalid value for '{path}.type': a namespace holds function and custom tools only.",
                              param=f"{path}.type", code="invalid_value")
    if kind not in CLIENT_TOOLS:
        return  # a hosted tool: OpenAI runs it; validated there, left out for chat deployments
    name = tool.get("name")
    if name is None:
        raise invalid_request(f"Missing required parameter: '{path}.name'.", param=f"{path}.name",
                              code="missing_required_parameter")
    if not isinstance(name, str) or not _NAME.match(name):
        raise invalid_request(f"Invalid value for '{path}.name': letters, digits, '_' and '-', at most 64 characters.",
                              param=f"{path}.name", code="invalid_value")
    if kind == "function" and tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
        raise invalid_request(f"Invalid value for '{path}.parameters': expected a JSON schema object.",
                              param=f"{path}.parameters", code="invalid_value")
    if kind == "namespace":
        inner = tool.get("tools")
        if not isinstance(inner, list) or not inner:
            raise invalid_request(f"Missing required parameter: '{path}.tools'.", param=f"{path}.tools",
                                  code="missing_required_parameter")
        for j, sub in enumerate(inner):
            _check_tool(sub, f"{path}.tools[{j}]", nested=True)


def tool_names(tools: list[dict[str, Any]] | None) -> set[str]:
    """Names a `tool_choice` may name: functions and custom tools, at any level."""
    names: set[str] = set()
    for tool in tools or ():
        if tool.get("type") in ("function", "custom"):
            names.add(tool["name"])
        elif tool.get("type") == "namespace":
            names.update(t["name"] for t in tool.get("tools") or ())
    return names


def tool_map(tools: list[dict[str, Any]] | None) -> ToolMap:
    out = ToolMap()
    for tool in tools or ():
        kind = tool.get("type")
        if kind == "namespace":
            for inner in tool.get("tools") or ():
                _add(out, inner, tool["name"], tool.get("description"))
        elif kind in ("function", "custom"):
            _add(out, tool, None, None)
        else:
            out.dropped.append(str(kind))
    return out


def _add(out: ToolMap, tool: dict[str, Any], namespace: str | None, namespace_description: str | None) -> None:
    custom = tool.get("type") == "custom"
    chat_name = out.chat_name(tool["name"], namespace)
    description = tool.get("description") or ""
    if namespace_description:
        description = f"[{namespace}: {namespace_description}] {description}".strip()
    fn: dict[str, Any] = {"name": chat_name}
    if custom:
        fmt = tool.get("format") or {}
        if fmt.get("type") == "grammar" and fmt.get("definition"):
            description += f"\n\nThe `input` must follow this {fmt.get('syntax') or 'grammar'} grammar:\n{fmt['definition']}"
        fn["parameters"] = _CUSTOM_PARAMETERS
    else:
        for key in ("parameters", "strict"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
    if description:
        fn["description"] = description
    out.chat_tools.append({"type": "function", "function": fn})
    out.by_chat_name[chat_name] = ToolName(tool["name"], namespace, custom)
