"""GBNF grammars that make the local model's output parse: JSON, JSON Schema, tool calls.

llama.cpp samples only tokens the grammar allows, so `json_schema` output always validates
and tool-call arguments always match the tool's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson
from llama_cpp.llama_grammar import SchemaConverter

from switchyard.wire.chat import FunctionDef
from switchyard.wire.errors import invalid_request

TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"


def _converter() -> SchemaConverter:
    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


# llama.cpp's converter lets any character but `"` and `\` into a string, raw newlines and other
# control characters included, which JSON forbids (a model did write one); strings here are
# JSON's: no U+0000-U+001F or DEL unescaped.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def _strict_strings(grammar: str) -> str:
    if _LOOSE_CHAR not in grammar and "char ::=" in grammar:
        raise RuntimeError("llama.cpp's JSON string rule changed: check grammar._strict_strings")
    return grammar.replace(_LOOSE_CHAR, _JSON_CHAR)


def _visit(conv: SchemaConverter, schema: dict[str, Any], name: str, param: str) -> str:
    try:
        resolved = conv.resolve_refs(schema, "input")
        return conv.visit(resolved, name)
    except Exception as exc:  # the converter raises plain exceptions for schemas it cannot express
        raise invalid_request(f"Unsupported JSON schema: {exc}", param=param, code="invalid_schema") from None


@lru_cache(maxsize=256)
def _json_grammar_cached(schema_json: bytes) -> str:
    schema = orjson.loads(schema_json)
    conv = _converter()
    _visit(conv, schema, "", "response_format")
    return _strict_strings(conv.format_grammar())


def json_grammar(schema: dict[str, Any] | None) -> str:
    """Grammar for `json_object` (any object) or `json_schema` (that schema)."""
    return _json_grammar_cached(orjson.dumps(schema if schema is not None else {"type": "object"}, option=orjson.OPT_SORT_KEYS))


def tool_grammar(tools: Sequence[FunctionDef], mode: str, parallel: bool) -> str:
    """Grammar for tool calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

    mode "auto": either plain text (not starting with '<') or tool calls; "required": calls only.
    """
    key = orjson.dumps([[t.name, t.parameters] for t in tools] + [mode, parallel])
    return _tool_grammar_cached(key)


@lru_cache(maxsize=256)
def _tool_grammar_cached(key: bytes) -> str:
    *pairs, mode, parallel = orjson.loads(key)
    conv = _converter()
    rules = []
    for i, (name, parameters) in enumerate(pairs):
        schema = {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": parameters or {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        rules.append(_visit(conv, schema, f"call{i}", f"tools[{i}].function.parameters"))
    lines = [_strict_strings(conv.format_grammar())]
    lines.append(f'toolcall ::= "{TOOL_OPEN}" ( {" | ".join(rules)} ) "{TOOL_CLOSE}"')
    lines.append('toolcalls ::= toolcall ( "\\n" toolcall )*' if parallel else "toolcalls ::= toolcall")
    if mode == "auto":
        lines.append('plaintext ::= [^<] [^\\x00]*')
        lines.append("root ::= toolcalls | plaintext")
    else:
        lines.append("root ::= toolcalls")
    return "\n".join(lines)
