"""A turn as OpenAI's Codex CLI sends it to `/v1/responses`: its tool list (a function, a custom
tool with a Lark grammar, a namespace of MCP functions, the hosted web_search) and the fields it
always sets. Shapes follow codex-rs's request builder; the texts are shortened."""

from __future__ import annotations

import uuid
from typing import Any

SHELL = {
    "type": "function", "name": "shell", "strict": False,
    "description": "Runs a shell command and returns its output.",
    "parameters": {"type": "object", "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"},
        "workdir": {"type": "string", "description": "The working directory to execute the command in"},
        "timeout_ms": {"type": "number", "description": "The timeout for the command in milliseconds"},
    }, "required": ["command"], "additionalProperties": False},
}
APPLY_PATCH = {
    "type": "custom", "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON.",
    "format": {"type": "grammar", "syntax": "lark", "definition": (
        'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?\n'
        'hunk: add_hunk\nadd_hunk: "*** Add File: " filename LF add_line+\nfilename: /(.+)/\n'
        'add_line: "+" /(.*)/ LF -> line\n%import common.LF\n')},
}
MCP_DOCS = {
    "type": "namespace", "name": "mcp__docs", "description": "Tools from the `docs` MCP server.",
    "tools": [{"type": "function", "name": "search", "description": "Search the project documentation.",
               "strict": False, "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                               "required": ["query"], "additionalProperties": False}}],
}
WEB_SEARCH = {"type": "web_search"}
CODEX_TOOLS = [SHELL, APPLY_PATCH, MCP_DOCS, WEB_SEARCH]


def codex_turn(model: str, input_items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A whole Codex request body (always streamed, never stored upstream)."""
    return {
        "model": model,
        "instructions": "You are Codex, a coding agent. Use the tools to inspect and change the repository.",
        "input": input_items, "tools": CODEX_TOOLS, "tool_choice": "auto", "parallel_tool_calls": False,
        "store": False, "stream": True, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": str(uuid.uuid4()),
        "client_metadata": {"originator": "codex_cli_rs", "session_id": str(uuid.uuid4())},
        **extra,
    }


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
