"""Responses API wire layer: request validation, input items, the chat body, and the Response
objects and stream events built from chat answers.

Every Response and every event is checked with the official SDK's own pydantic types and,
when the reference copy of OpenAI's spec is present, against the spec's JSON schemas.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from switchyard.wire.chat import parse_chat_request
from switchyard.wire.errors import GatewayError
from switchyard.wire.responses import EFFORTS, input_items, new_id, parse_responses_request
from switchyard.wire.responses_chat import (
    ResponseEvents,
    dropped_tools,
    base_response,
    chat_body,
    response_from_chat,
    response_usage,
)

EVENT = TypeAdapter(ResponseStreamEvent)
ITEM = TypeAdapter(ResponseItem)
SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openai-openapi.yaml"
ID = re.compile(r"^(?P<prefix>[a-z]+)_[0-9a-f]{48}$")


# ---------------------------------------------------------------- helpers


@cache
def _spec_validator(schema: str) -> Any:
    if not SPEC.exists():
        return None
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = _load_spec()
    registry = Registry().with_resource("spec", Resource.from_contents(spec, default_specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"spec#/components/schemas/{schema}"}, registry=registry)


@cache
def _load_spec() -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open() as f:
        return yaml.load(f, Loader=loader)


def _spec_tolerated(obj: Any) -> Any:
    """The one known spec gap: `Response.usage` is not nullable in the spec, yet OpenAI (and the
    SDK type) send `usage: null` until a response finishes."""
    if isinstance(obj, dict):
        if obj.get("object") == "response" and obj.get("usage", 0) is None:
            obj = {k: v for k, v in obj.items() if k != "usage"}
        return {k: _spec_tolerated(v) for k, v in obj.items()}
    return obj


def _spec_check(obj: dict[str, Any], schema: str) -> None:
    validator = _spec_validator(schema)
    if validator is None:
        return
    obj = _spec_tolerated(obj)
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(obj)]
    assert not errors, errors


def check_response(obj: dict[str, Any]) -> Response:
    """The SDK (and the spec) accept the object; returns the SDK's view of it."""
    parsed = Response.model_validate(obj)
    _spec_check(obj, "Response")
    assert ID.match(obj["id"]) or obj["id"].startswith("resp_")
    return parsed


def check_events(events: list[dict[str, Any]]) -> None:
    for ev in events:
        parsed = EVENT.validate_python(ev)
        assert parsed.type == ev["type"]
        _spec_check(ev, "ResponseStreamEvent")
        if "response" in ev:
            check_response(ev["response"])
    assert [ev["sequence_number"] for ev in events] == list(range(len(events)))


def bad(body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse_responses_request(body)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


def req(**kw: Any) -> Any:
    kw.setdefault("model", "gpt-test")
    kw.setdefault("input", "Hello")
    return parse_responses_request(kw)


def build(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Chat body for a raw Responses body; it must itself be a valid chat request."""
    body.setdefault("model", "gpt-test")
    r = parse_responses_request(body)
    out = chat_body(r, body, [*(history or []), *input_items(r)])
    parse_chat_request(copy.deepcopy(out))
    return out


def completion(
    content: str | None = "Hi there",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    refusal: str | None = None,
    usage: dict[str, Any] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": usage
        if usage is not None
        else {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def answer(comp: dict[str, Any], r: Any = None) -> dict[str, Any]:
    return response_from_chat(
        comp, r or req(), response_id=new_id("resp"), created_at=1700000000.0, model="gpt-test",
        previous_response_id=None,
    )  # fmt: skip


def events_for(r: Any = None) -> ResponseEvents:
    return ResponseEvents(
        r or req(stream=True), response_id=new_id("resp"), created_at=1700000000.0, model="gpt-test",
        previous_response_id=None,
    )  # fmt: skip


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    usage: dict[str, Any] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]
    return {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-test",
        "choices": choices, "usage": usage,
    }  # fmt: skip


def tool_delta(index: int, *, id: str | None = None, name: str | None = None, args: str = "") -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id is not None:
        call.update(id=id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 7,
    "total_tokens": 27,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}


# ---------------------------------------------------------------- parsing: accepted


def test_minimal_string_input_and_defaults() -> None:
    r = req()
    assert r.model == "gpt-test" and r.input == "Hello"
    assert r.store is True
    assert r.truncation == "disabled"
    assert r.stream is None and r.background is None


def test_full_request_parses() -> None:
    r = parse_responses_request(
        {
            "model": "gpt-test",
            "input": [
                {"role": "developer", "content": "Be brief."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "high"},
                        {"type": "input_image", "file_id": "file-abc", "detail": "original"},
                        {"type": "input_file", "file_id": "file-pdf"},
                    ],
                },
            ],
            "instructions": "You are terse.",
            "max_output_tokens": 16,
            "temperature": 0.2,
            "top_p": 0.9,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}, "verbosity": "low"},
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
            "metadata": {f"k{i}": "v" for i in range(16)},
            "store": False,
            "stream": True,
            "stream_options": {"include_obfuscation": False},
            "truncation": "auto",
            "service_tier": "flex",
            "user": "u1",
            "safety_identifier": "s1",
            "prompt_cache_key": "p1",
            "top_logprobs": 20,
            "include": ["message.output_text.logprobs"],
            "background": False,
            "some_future_parameter": {"ignored": True},
        }
    )
    assert r.max_output_tokens == 16 and r.store is False and r.effort == "low"
    assert len(r.metadata or {}) == 16


@pytest.mark.parametrize("effort", EFFORTS)
def test_every_reasoning_effort_is_accepted(effort: str) -> None:
    # Which model supports which effort is the gateway's business (catalog), not the parser's.
    assert req(reasoning={"effort": effort}).effort == effort


def test_input_may_be_omitted_with_previous_response_id() -> None:
    r = parse_responses_request({"model": "m", "previous_response_id": "resp_abc"})
    assert r.input is None
    assert input_items(r) == []


def test_tool_choice_variants_accepted() -> None:
    tools = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]
    for choice in ("none", "auto", "required", {"type": "function", "name": "b"},
                   {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"}]}):  # fmt: skip
        req(tools=tools, tool_choice=choice)


# ---------------------------------------------------------------- parsing: 400s


def test_body_must_be_object() -> None:
    err = bad(["not", "an", "object"])
    assert err.param is None


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": "m"}, "input", "missing_required_parameter"),
        ({"model": 5, "input": "x"}, "model", "invalid_value"),
        ({"model": "m", "input": 5}, "input", "invalid_value"),
        ({"model": "m", "input": "x", "max_output_tokens": 15}, "max_output_tokens", "invalid_value"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
        ({"model": "m", "input": "x", "temperature": 2.5}, "temperature", "invalid_value"),
        ({"model": "m", "input": "x", "temperature": -0.1}, "temperature", "invalid_value"),
        ({"model": "m", "input": "x", "top_p": 1.01}, "top_p", "invalid_value"),
        ({"model": "m", "input": "x", "top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ({"model": "m", "input": "x", "top_logprobs": -1}, "top_logprobs", "invalid_value"),
        ({"model": "m", "input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_value"),
        ({"model": "m", "input": "x", "reasoning": {"summary": "verbose"}}, "reasoning.summary", "invalid_value"),
        ({"model": "m", "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
        ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata", "invalid_value"),
        ({"model": "m", "input": "x", "truncation": "sometimes"}, "truncation", "invalid_value"),
        ({"model": "m", "input": "x", "store": "yes"}, "store", "invalid_value"),
        ({"model": "m", "input": "x", "include": "reasoning.encrypted_content"}, "include", "invalid_value"),
        ({"model": "m", "input": "x", "text": {"verbosity": "loud"}}, "text.verbosity", "invalid_value"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
            "text.format.name",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
            "text.format.schema",
            "missing_required_parameter",
        ),
        (
            # the nested Chat Completions shape is not the Responses shape
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}}},
            "text.format.name",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "bad name", "schema": {}}}},
            "text.format.name",
            "invalid_value",
        ),
    ],
)
def test_invalid_top_level_values(body: dict[str, Any], param: str, code: str) -> None:
    err = bad(body)
    assert (err.param, err.code) == (param, code)
    assert param in err.message


@pytest.mark.parametrize("kind", ["web_search", "web_search_preview", "file_search", "code_interpreter", "mcp",
                                  "image_generation", "local_shell", "tool_search"])
def test_hosted_tools_are_accepted_and_left_out_for_chat(kind: str) -> None:
    req = parse_responses_request({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": kind}]})
    body = chat_body(req, {}, input_items(req))
    assert [t["function"]["name"] for t in body["tools"]] == ["f"]
    assert dropped_tools(req) == [kind]


def test_namespace_and_custom_tools_reach_chat_as_functions_and_come_back() -> None:
    tools = [
        {"type": "namespace", "name": "crm", "description": "The CRM.", "tools": [
            {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"type": "custom", "name": "note"}]},
        {"type": "custom", "name": "apply_patch", "description": "Edit files.",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: \"*** Begin Patch\""}},
    ]
    req = parse_responses_request({"model": "m", "input": "x", "tools": tools,
                                   "tool_choice": {"type": "custom", "name": "apply_patch"}})
    body = chat_body(req, {}, input_items(req))
    names = [t["function"]["name"] for t in body["tools"]]
    assert names == ["crm__lookup", "crm__note", "apply_patch"]
    assert body["tools"][2]["function"]["parameters"]["required"] == ["input"]
    assert "*** Begin Patch" in body["tools"][2]["function"]["description"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}
    completion = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "crm__lookup", "arguments": '{"q": "acme"}'}},
        {"id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input": "*** Begin Patch"}'}},
    ]}, "finish_reason": "tool_calls"}]}
    out = response_from_chat(completion, req, response_id="resp_x", created_at=0, model="m", previous_response_id=None)
    call, custom = out["output"]
    assert (call["type"], call["name"], call["namespace"], call["arguments"]) == ("function_call", "lookup", "crm", '{"q": "acme"}')
    assert (custom["type"], custom["name"], custom["input"]) == ("custom_tool_call", "apply_patch", "*** Begin Patch")
    # The round trip: the calls and their outputs as the next turn's input, back to chat.
    items = [{"type": "function_call", "call_id": "c1", "name": "lookup", "namespace": "crm", "arguments": '{"q": "acme"}'},
             {"type": "function_call_output", "call_id": "c1", "output": "found"},
             {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
             {"type": "custom_tool_call_output", "call_id": "c2", "output": "Done!"},
             {"type": "web_search_call", "id": "ws_1", "status": "completed"}]
    req2 = parse_responses_request({"model": "m", "input": items, "tools": tools})
    messages = chat_body(req2, {}, input_items(req2))["messages"]
    assert [m["role"] for m in messages] == ["assistant", "tool", "assistant", "tool"]
    assert messages[0]["tool_calls"][0]["function"]["name"] == "crm__lookup"
    assert messages[2]["tool_calls"][0]["function"] == {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'}


@pytest.mark.parametrize(
    ("tool", "param", "code"),
    [
        ({"type": "function"}, "tools[0].name", "missing_required_parameter"),
        ({"type": "function", "name": "has space"}, "tools[0].name", "invalid_value"),
        ({"type": "function", "name": "x" * 65}, "tools[0].name", "invalid_value"),
        ({"type": "function", "name": "f", "parameters": "{}"}, "tools[0].parameters", "invalid_value"),
        ({"name": "f"}, "tools[0].type", "missing_required_parameter"),
        # the nested Chat Completions tool shape
        ({"type": "function", "function": {"name": "f"}}, "tools[0].name", "missing_required_parameter"),
    ],
)
def test_invalid_function_tools(tool: dict[str, Any], param: str, code: str) -> None:
    err = bad({"model": "m", "input": "x", "tools": [tool]})
    assert (err.param, err.code) == (param, code)


def test_tool_choice_must_name_a_tool() -> None:
    err = bad({"model": "m", "input": "x", "tools": [{"type": "function", "name": "a"}], "tool_choice": {"type": "function", "name": "b"}})
    assert err.param == "tool_choice.name" and err.code == "invalid_value"
    err = bad({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "b"}})
    assert err.param == "tool_choice.name"
    err = bad(
        {
            "model": "m", "input": "x", "tools": [{"type": "function", "name": "a"}],
            "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "zz"}]},
        }  # fmt: skip
    )
    assert err.param == "tool_choice.tools[0].name"


def test_tool_choice_required_needs_tools() -> None:
    err = bad({"model": "m", "input": "x", "tool_choice": "required"})
    assert err.param == "tool_choice" and err.code == "invalid_value"
    assert bad({"model": "m", "input": "x", "tool_choice": "sometimes"}).param == "tool_choice"


def test_hosted_tool_choice_is_accepted_and_leaves_chat_to_choose() -> None:
    req = parse_responses_request({"model": "m", "input": "x", "tools": [{"type": "web_search_preview"}],
                                   "tool_choice": {"type": "web_search_preview"}})
    body = chat_body(req, {}, input_items(req))
    assert "tool_choice" not in body and "tools" not in body


def test_hosted_tools_items_are_kept_for_native_upstreams() -> None:
    items = [{"role": "user", "content": "a"}, {"type": "web_search_call", "id": "ws_1", "status": "completed"},
             {"type": "computer_call_output", "call_id": "c", "output": {}}]
    req = parse_responses_request({"model": "m", "input": items})
    assert [i["type"] for i in input_items(req)] == ["message", "web_search_call", "computer_call_output"]
    assert [m["role"] for m in chat_body(req, {}, input_items(req))["messages"]] == ["user"]


def test_background_conversation_prompt_rejected() -> None:
    err = bad({"model": "m", "input": "x", "background": True})
    assert err.param == "background" and "not supported" in err.message
    err = bad({"model": "m", "input": "x", "conversation": "conv_123"})
    assert err.param == "conversation" and "not supported" in err.message
    err = bad({"model": "m", "input": "x", "conversation": {"id": "conv_123"}, "previous_response_id": "resp_1"})
    assert err.param == "previous_response_id"
    assert "conversation" in err.message
    err = bad({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}})
    assert err.param == "prompt"


@pytest.mark.parametrize(
    ("items", "param", "code"),
    [
        ([{"type": "item_reference", "id": "msg_1"}], "input[0].type", "invalid_value"),
        ([{"role": "user", "content": "a"}, {"type": "frobnicate", "id": "x_1"}], "input[1].type", "invalid_value"),
        ([{"type": "custom_tool_call", "call_id": "c", "name": "f"}], "input[0].input", "missing_required_parameter"),
        ([{"role": "tool", "content": "x"}], "input[0].role", "invalid_value"),
        ([{"content": "x"}], "input[0].role", "missing_required_parameter"),
        ([{"role": "user"}], "input[0].content", "missing_required_parameter"),
        ([{"role": "user", "content": 3}], "input[0].content", "invalid_value"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}],  # fmt: skip
            "input[2].content[0].image_url",
            "missing_required_parameter",
        ),
        (
            [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x.test/a.png", "detail": "huge"}]}],
            "input[0].content[0].detail",
            "invalid_value",
        ),
        (
            [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_audio", "input_audio": {}}]}],
            "input[0].content[1].type",
            "invalid_value",
        ),
        ([{"role": "user", "content": [{"type": "input_text"}]}], "input[0].content[0].text", "missing_required_parameter"),
        ([{"role": "user", "content": [{"text": "no type"}]}], "input[0].content[0].type", "missing_required_parameter"),
        ([{"role": "user", "content": [{"type": "output_text", "text": "x"}]}], "input[0].content[0].type", "invalid_value"),
        ([{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}], "input[0].content[0].type", "invalid_value"),
        ([{"role": "user", "content": [{"type": "input_file", "filename": "a.pdf"}]}], "input[0].content[0].file_id", "missing_required_parameter"),
        (
            [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a.pdf"}]}],
            "input[0].content[0].file_url",
            "invalid_value",
        ),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "input[0].call_id", "missing_required_parameter"),
        ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}], "input[0].arguments", "invalid_value"),
        ([{"type": "function_call_output", "call_id": "c"}], "input[0].output", "missing_required_parameter"),
        ([{"type": "function_call_output", "output": "x"}], "input[0].call_id", "missing_required_parameter"),
        (
            [{"type": "function_call_output", "call_id": "c", "output": [{"type": "output_text", "text": "x"}]}],
            "input[0].output[0].type",
            "invalid_value",
        ),
        ([{"type": "message", "role": "user", "content": "x", "status": "done"}], "input[0].status", "invalid_value"),
        (["just a string"], "input[0]", "invalid_value"),
    ],
)
def test_invalid_input_items(items: list[Any], param: str, code: str) -> None:
    err = bad({"model": "m", "input": items})
    assert (err.param, err.code) == (param, code), err.message
    if code == "invalid_value" and "not supported" not in err.message:
        assert param in err.message


def test_unsupported_item_message() -> None:
    err = bad({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]})
    assert "item_reference" in err.message and "not supported by this gateway" in err.message


# ---------------------------------------------------------------- ids and input items


def test_new_id_shape() -> None:
    for prefix in ("resp", "msg", "fc"):
        value = new_id(prefix)
        m = ID.match(value)
        assert m and m.group("prefix") == prefix
    assert new_id("resp") != new_id("resp")


def test_input_items_string() -> None:
    items = input_items(req(input="Hello"))
    assert len(items) == 1
    item = items[0]
    assert ID.match(item["id"]) and item["id"].startswith("msg_")
    assert {k: v for k, v in item.items() if k != "id"} == {
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "Hello"}],
    }
    ITEM.validate_python(item)


def test_input_items_shapes() -> None:
    r = req(
        input=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "https://x.test/i.png"}]},
            {"id": "msg_keep", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hey"}]},
            {"role": "assistant", "content": "plain"},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
            {"type": "function_call_output", "id": "fco_given", "call_id": "call_2",
             "output": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},  # fmt: skip
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ]
    )
    items = input_items(r)
    assert [i["type"] for i in items] == ["message"] * 4 + ["function_call", "function_call_output", "function_call_output", "reasoning"]
    assert all(isinstance(i["id"], str) and i["id"] for i in items)
    assert items[0]["content"] == [{"type": "input_text", "text": "sys"}] and items[0]["status"] == "completed"
    assert items[1]["content"][1] == {"type": "input_image", "image_url": "https://x.test/i.png", "detail": "auto", "file_id": None}
    assert items[2]["id"] == "msg_keep"
    assert items[2]["content"] == [{"type": "output_text", "text": "hey", "annotations": [], "logprobs": []}]
    assert items[3]["content"][0]["type"] == "output_text"
    assert items[4]["id"].startswith("fc_") and items[4]["call_id"] == "call_1" and items[4]["status"] == "completed"
    assert (items[5]["call_id"], items[5]["output"]) == ("call_1", "42")
    assert items[6]["id"] == "fco_given" and items[6]["output"][1]["text"] == "b"
    assert items[7]["id"] == "rs_1"
    for item in items:
        ITEM.validate_python(item)
    # stored items are fresh dicts: the request's own input is left as given
    assert "id" not in r.input[4]


# ---------------------------------------------------------------- chat body


def test_chat_body_string_input() -> None:
    body = build({"input": "Hello", "metadata": {"a": "b"}, "store": False, "truncation": "auto",
                  "previous_response_id": "resp_x", "include": ["reasoning.encrypted_content"]})  # fmt: skip
    assert body == {"model": "gpt-test", "messages": [{"role": "user", "content": "Hello"}]}


def test_chat_body_instructions_and_params() -> None:
    body = build(
        {
            "input": "Hello",
            "instructions": "Answer in French.",
            "max_output_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.8,
            "parallel_tool_calls": False,
            "service_tier": "flex",
            "user": "u",
            "safety_identifier": "s",
            "prompt_cache_key": "k",
            "reasoning": {"effort": "high", "summary": "auto"},
            "text": {"verbosity": "low", "format": {"type": "text"}},
            "top_logprobs": 3,
            "stream": True,
        }
    )
    assert body["messages"] == [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}]
    assert body["max_completion_tokens"] == 100 and "max_output_tokens" not in body
    assert (body["temperature"], body["top_p"], body["parallel_tool_calls"]) == (0.5, 0.8, False)
    assert (body["service_tier"], body["user"], body["safety_identifier"], body["prompt_cache_key"]) == ("flex", "u", "s", "k")
    assert body["reasoning_effort"] == "high" and "reasoning" not in body
    assert body["verbosity"] == "low" and "response_format" not in body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    for key in ("metadata", "store", "previous_response_id", "truncation", "include", "instructions", "input", "text"):
        assert key not in body


def test_chat_body_logprobs_from_include() -> None:
    body = build({"input": "x", "include": ["message.output_text.logprobs"]})
    assert body["logprobs"] is True and "top_logprobs" not in body


def test_chat_body_multipart_vision() -> None:
    body = build(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Compare these."},
                        {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                        {"type": "input_image", "file_id": "file-123", "detail": "high"},
                        {"type": "input_file", "file_id": "file-pdf", "filename": "a.pdf"},
                    ],
                }
            ]
        }
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these."},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "auto"}},
                {"type": "image_url", "image_url": {"url": "sy-file://file-123", "detail": "high"}},
                {"type": "file", "file": {"file_id": "file-pdf", "filename": "a.pdf"}},
            ],
        }
    ]
    assert parse_chat_request(body).has_images


def test_chat_body_roles_and_text_parts() -> None:
    body = build(
        {
            "input": [
                {"role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
                {"type": "message", "role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "c"}, {"type": "output_text", "text": "d"}]},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            ]
        }
    )
    assert body["messages"] == [
        {"role": "developer", "content": "dev"},
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "cd"},
        {"role": "assistant", "content": "no"},
    ]


def test_chat_body_multi_turn_function_round_trip() -> None:
    """Turn 1 asked for two parallel calls; turn 2 sends their outputs with previous_response_id."""
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    r1 = req(input="Weather in Paris and Rome?", tools=tools, instructions="old instructions")
    answered = answer(
        completion(
            "Let me check.",
            tool_calls=[
                {"id": "call_p", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_r", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
            ],
            finish_reason="tool_calls",
        ),
        r1,
    )
    check_response(answered)
    # a reasoning item between the calls (as reasoning models produce) must not split them
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": []}
    output = [answered["output"][0], reasoning, answered["output"][1], answered["output"][2]]
    history = [*input_items(r1), *output]
    body = build(
        {
            "previous_response_id": answered["id"],
            "tools": tools,
            "instructions": "new instructions",
            "input": [
                {"type": "function_call_output", "call_id": "call_p", "output": '{"temp": 21}'},
                {"type": "function_call_output", "call_id": "call_r", "output": [{"type": "input_text", "text": '{"temp": '}, {"type": "input_text", "text": "25}"}]},
                {"role": "user", "content": "Thanks. Which is warmer?"},
            ],
        },
        history,
    )
    assert body["messages"] == [
        {"role": "system", "content": "new instructions"},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": "call_p", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_r", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_p", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_r", "content": '{"temp": 25}'},
        {"role": "user", "content": "Thanks. Which is warmer?"},
    ]
    assert body["tools"] == [{"type": "function", "function": {"name": "get_weather", "parameters": tools[0]["parameters"]}}]


def test_chat_body_function_calls_without_text_and_separate_runs() -> None:
    call = {"type": "function_call", "name": "f", "arguments": "{}"}
    body = build(
        {
            "input": [
                {"role": "user", "content": "go"},
                {**call, "call_id": "c1"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {**call, "call_id": "c2"},
                {"type": "function_call_output", "call_id": "c2", "output": "2"},
                {"role": "assistant", "content": "done"},
                {**call, "call_id": "c3"},
                {**call, "call_id": "c4"},
            ],
            "tools": [{"type": "function", "name": "f"}],
        }
    )
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert body["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}  # fmt: skip
    assert [c["id"] for c in body["messages"][3]["tool_calls"]] == ["c2"]
    # c3 and c4 merge into the preceding text-only assistant message
    assert body["messages"][5]["content"] == "done"
    assert [c["id"] for c in body["messages"][5]["tool_calls"]] == ["c3", "c4"]


def test_chat_body_json_schema_and_json_object() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}
    body = build({"input": "x", "text": {"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True, "description": "A thing"}}})
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True, "description": "A thing"},
    }
    assert parse_chat_request(body).json_schema is not None
    body = build({"input": "x", "text": {"format": {"type": "json_schema", "name": "thing", "schema": schema}}})
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}
    assert build({"input": "x", "text": {"format": {"type": "json_object"}}})["response_format"] == {"type": "json_object"}


def test_chat_body_tools_and_tool_choice() -> None:
    tools = [
        {"type": "function", "name": "a", "description": "A", "parameters": {"type": "object"}, "strict": True},
        {"type": "function", "name": "b"},
    ]
    body = build({"input": "x", "tools": tools, "tool_choice": {"type": "function", "name": "a"}})
    assert body["tools"] == [
        {"type": "function", "function": {"name": "a", "description": "A", "parameters": {"type": "object"}, "strict": True}},
        {"type": "function", "function": {"name": "b"}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "a"}}
    assert build({"input": "x", "tools": tools, "tool_choice": "required"})["tool_choice"] == "required"
    allowed = build({"input": "x", "tools": tools, "tool_choice": {"type": "allowed_tools", "mode": "required",
                                                                     "tools": [{"type": "function", "name": "b"}]}})  # fmt: skip
    assert [t["function"]["name"] for t in allowed["tools"]] == ["b"] and allowed["tool_choice"] == "required"
    assert "tool_choice" not in build({"input": "x", "tool_choice": "none"})


def test_chat_body_forwards_chat_extras_from_raw() -> None:
    body = build({"input": "x", "seed": 7, "stop": ["END"]})
    assert (body["seed"], body["stop"]) == (7, ["END"])


# ---------------------------------------------------------------- Response objects


def test_base_response_defaults() -> None:
    r = req()
    resp = base_response(r, response_id="resp_" + "0" * 48, created_at=1700000000.5, model="gpt-test", status="in_progress", previous_response_id=None)
    parsed = check_response(resp)
    assert resp["object"] == "response" and resp["status"] == "in_progress"
    assert resp["output"] == [] and resp["usage"] is None and resp["error"] is None
    assert resp["parallel_tool_calls"] is True and resp["tool_choice"] == "auto" and resp["tools"] == []
    assert (resp["temperature"], resp["top_p"]) == (1.0, 1.0)
    assert resp["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
    assert resp["reasoning"] == {"effort": None, "summary": None}
    assert resp["metadata"] == {} and resp["store"] is True and resp["truncation"] == "disabled"
    assert resp["background"] is False
    assert parsed.output_text == ""
    if SPEC.exists():
        required = _load_spec()["components"]["schemas"]["Response"]["allOf"][2]["required"]
        assert set(required) <= set(resp)


def test_base_response_echoes_request() -> None:
    schema = {"type": "object", "properties": {}}
    r = req(
        instructions="inst", max_output_tokens=64, temperature=0.3, top_p=0.5, parallel_tool_calls=False,
        reasoning={"effort": "minimal", "summary": "concise"}, metadata={"a": "b"}, store=False, truncation="auto",
        text={"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}, "verbosity": "high"},
        tools=[{"type": "function", "name": "f", "parameters": schema}], tool_choice={"type": "function", "name": "f"},
        user="u", service_tier="fast", top_logprobs=2,
    )  # fmt: skip
    resp = base_response(r, response_id=new_id("resp"), created_at=1.0, model="gpt-test-2026", status="queued", previous_response_id="resp_prev")
    check_response(resp)
    assert resp["instructions"] == "inst" and resp["max_output_tokens"] == 64
    assert (resp["temperature"], resp["top_p"], resp["parallel_tool_calls"]) == (0.3, 0.5, False)
    assert resp["reasoning"] == {"effort": "minimal", "summary": "concise"}
    assert resp["text"] == {"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}, "verbosity": "high"}
    assert resp["tools"] == [{"type": "function", "name": "f", "description": None, "parameters": schema, "strict": None}]
    assert resp["tool_choice"] == {"type": "function", "name": "f"}
    assert resp["metadata"] == {"a": "b"} and resp["store"] is False and resp["truncation"] == "auto"
    assert resp["previous_response_id"] == "resp_prev" and resp["model"] == "gpt-test-2026"
    assert resp["user"] == "u" and resp["service_tier"] == "priority" and resp["top_logprobs"] == 2


def test_response_from_chat_text() -> None:
    resp = answer(completion("Hi there", usage=USAGE))
    parsed = check_response(resp)
    assert parsed.output_text == "Hi there"
    assert resp["status"] == "completed" and resp["incomplete_details"] is None
    assert isinstance(resp["completed_at"], int)
    [item] = resp["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert ID.match(item["id"]) and item["id"].startswith("msg_")
    assert item["content"] == [{"type": "output_text", "text": "Hi there", "annotations": [], "logprobs": []}]
    assert resp["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 27,
    }


def test_response_from_chat_tool_calls() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
    ]
    resp = answer(completion(None, tool_calls=calls, finish_reason="tool_calls"))
    parsed = check_response(resp)
    assert parsed.output_text == ""
    assert [i["type"] for i in resp["output"]] == ["function_call", "function_call"]
    first = resp["output"][0]
    assert first["id"].startswith("fc_") and ID.match(first["id"])
    assert {k: first[k] for k in ("call_id", "name", "arguments", "status")} == {
        "call_id": "call_1", "name": "a", "arguments": '{"x":1}', "status": "completed"}  # fmt: skip
    assert resp["status"] == "completed"
    # empty string content with tool calls: no message item either
    assert [i["type"] for i in answer(completion("", tool_calls=calls, finish_reason="tool_calls"))["output"]] == ["function_call"] * 2
    # text and a call: message first
    resp = answer(completion("Checking.", tool_calls=calls[:1], finish_reason="tool_calls"))
    check_response(resp)
    assert [i["type"] for i in resp["output"]] == ["message", "function_call"]


def test_response_from_chat_length_and_content_filter() -> None:
    resp = answer(completion("Once upon a", finish_reason="length"))
    parsed = check_response(resp)
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["completed_at"] is None
    assert resp["output"][0]["status"] == "incomplete"
    assert parsed.output_text == "Once upon a"
    resp = answer(completion("", finish_reason="content_filter"))
    check_response(resp)
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "content_filter"}


def test_response_from_chat_refusal() -> None:
    resp = answer(completion(None, refusal="I can't help with that."))
    parsed = check_response(resp)
    [item] = resp["output"]
    assert item["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]
    assert parsed.output_text == ""


def test_response_from_chat_empty_answer_and_no_usage() -> None:
    resp = answer(completion(None, usage={}))
    parsed = check_response(resp)
    assert parsed.output_text == "" and resp["usage"] is None
    assert resp["output"][0]["content"][0]["text"] == ""


def test_response_from_chat_logprobs() -> None:
    logprobs = {
        "content": [
            {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]},
            {"token": "!", "logprob": -0.5, "bytes": None, "top_logprobs": []},
        ],
        "refusal": None,
    }
    resp = answer(completion("Hi!", logprobs=logprobs), req(top_logprobs=1))
    check_response(resp)
    part = resp["output"][0]["content"][0]
    assert part["logprobs"] == [
        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]},
        {"token": "!", "logprob": -0.5, "bytes": [33], "top_logprobs": []},
    ]


def test_response_from_chat_service_tier_and_cost() -> None:
    comp = completion("x", usage={**USAGE, "cost": 0.00012})
    comp["service_tier"] = "default"
    resp = answer(comp, req(service_tier="auto"))
    check_response(resp)
    assert resp["service_tier"] == "default"
    assert resp["usage"]["cost"] == 0.00012


# ---------------------------------------------------------------- usage


def test_usage_conversions() -> None:
    assert response_usage(None) is None
    bare = response_usage({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
    assert bare == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }
    full = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
        "completion_tokens_details": {"reasoning_tokens": 25},
        "cost": 0.5,
    }
    converted = response_usage(full)
    assert converted is not None
    assert converted["input_tokens_details"] == {"cached_tokens": 60, "cache_write_tokens": 30}
    assert converted["output_tokens_details"] == {"reasoning_tokens": 25} and converted["cost"] == 0.5


# ---------------------------------------------------------------- streaming


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [ev["type"] for ev in events]


def run_stream(chunks: list[dict[str, Any]], r: Any = None, usage: dict[str, Any] | None = USAGE) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    conv = events_for(r)
    events = conv.start()
    for c in chunks:
        events += conv.feed(c)
    tail, final = conv.complete(usage)
    return events + tail, final


def test_stream_text() -> None:
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({"content": " world"}),
        chunk({}, "stop"),
        chunk(None, usage=USAGE),
    ]
    events, final = run_stream(chunks)
    assert types_of(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    check_events(events)
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    added = events[2]
    assert added["output_index"] == 0
    assert added["item"]["status"] == "in_progress" and added["item"]["content"] == [] and added["item"]["role"] == "assistant"
    item_id = added["item"]["id"]
    assert events[3]["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    for ev in events[3:9]:
        assert (ev["item_id"], ev["output_index"], ev["content_index"]) == (item_id, 0, 0)
    assert [ev["delta"] for ev in events[4:7]] == ["Hel", "lo", " world"]
    assert all(ev["logprobs"] == [] for ev in events[4:8])
    assert events[7]["text"] == "Hello world"
    assert events[8]["part"]["text"] == "Hello world"
    assert events[9]["item"]["status"] == "completed" and events[9]["item"]["id"] == item_id
    done = events[10]["response"]
    assert done == final
    parsed = check_response(final)
    assert parsed.output_text == "Hello world"
    assert final["status"] == "completed" and isinstance(final["completed_at"], int)
    assert final["usage"]["input_tokens"] == 20 and final["usage"]["input_tokens_details"]["cached_tokens"] == 4
    assert final["output"] == [events[9]["item"]]


def test_stream_two_parallel_tool_calls() -> None:
    tools = [{"type": "function", "name": "get_weather"}]
    r = req(stream=True, tools=tools)
    chunks = [
        chunk({"role": "assistant", "content": None}),
        chunk(tool_delta(0, id="call_a", name="get_weather")),
        chunk(tool_delta(0, args='{"city":')),
        chunk(tool_delta(0, args='"Paris"}')),
        chunk(tool_delta(1, id="call_b", name="get_weather", args='{"city"')),
        chunk(tool_delta(1, args=':"Rome"}')),
        chunk({}, "tool_calls"),
        chunk(None, usage=USAGE),
    ]
    events, final = run_stream(chunks, r)
    assert types_of(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    check_events(events)
    first, second = events[2]["item"], events[7]["item"]
    assert (events[2]["output_index"], events[7]["output_index"]) == (0, 1)
    assert first["type"] == "function_call" and first["status"] == "in_progress" and first["arguments"] == ""
    assert (first["call_id"], first["name"]) == ("call_a", "get_weather")
    assert first["id"].startswith("fc_") and second["call_id"] == "call_b"
    assert events[5] == {
        "type": "response.function_call_arguments.done", "sequence_number": 5, "item_id": first["id"], "output_index": 0,
        "name": "get_weather", "arguments": '{"city":"Paris"}',
    }  # fmt: skip
    assert events[10]["arguments"] == '{"city":"Rome"}' and events[10]["item_id"] == second["id"]
    assert all(ev["item_id"] == second["id"] and ev["output_index"] == 1 for ev in events[8:11])
    assert [i["arguments"] for i in final["output"]] == ['{"city":"Paris"}', '{"city":"Rome"}']
    assert all(i["status"] == "completed" for i in final["output"])
    parsed = check_response(final)
    assert parsed.output_text == ""


def test_stream_text_then_tool_call() -> None:
    chunks = [
        chunk({"role": "assistant", "content": "Let me look."}),
        chunk(tool_delta(0, id="call_a", name="f", args="{}")),
        chunk({}, "tool_calls"),
    ]
    events, final = run_stream(chunks, req(stream=True, tools=[{"type": "function", "name": "f"}]))
    assert types_of(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    check_events(events)
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert events[8]["output_index"] == 1
    assert check_response(final).output_text == "Let me look."


def test_stream_tool_call_then_text() -> None:
    chunks = [chunk(tool_delta(0, id="call_a", name="f", args="{}")), chunk({"content": "after"}), chunk({}, "stop")]
    events, final = run_stream(chunks, req(stream=True, tools=[{"type": "function", "name": "f"}]))
    check_events(events)
    assert types_of(events)[2:7] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert [i["type"] for i in final["output"]] == ["function_call", "message"]


def test_stream_length_is_incomplete() -> None:
    events, final = run_stream([chunk({"content": "Once upon"}), chunk({}, "length")], req(stream=True, max_output_tokens=16))
    check_events(events)
    assert types_of(events)[-2:] == ["response.output_item.done", "response.incomplete"]
    assert events[-2]["item"]["status"] == "incomplete"
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1]["response"] == final


def test_stream_content_filter_is_incomplete() -> None:
    events, final = run_stream([chunk({"content": "x"}), chunk({}, "content_filter")])
    check_events(events)
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "content_filter"}


def test_stream_failure_mid_text() -> None:
    conv = events_for()
    events = conv.start() + conv.feed(chunk({"content": "partial"}))
    tail, final = conv.fail({"code": "upstream_timeout", "message": "The upstream timed out."})
    events += tail
    check_events(events)
    assert types_of(events)[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    assert events[-2]["item"]["status"] == "incomplete"
    assert final["status"] == "failed"
    assert final["error"] == {"code": "server_error", "message": "The upstream timed out."}
    assert final["output"][0]["content"][0]["text"] == "partial"
    _, limited = events_for().fail({"code": "rate_limit_exceeded", "message": "slow down"})
    check_response(limited)
    assert limited["error"]["code"] == "rate_limit_exceeded" and limited["output"] == []


def test_stream_failure_mid_tool_call() -> None:
    conv = events_for(req(stream=True, tools=[{"type": "function", "name": "f"}]))
    events = conv.start() + conv.feed(chunk(tool_delta(0, id="c", name="f", args='{"a"')))
    tail, final = conv.fail({"message": "boom"})
    events += tail
    check_events(events)
    assert types_of(tail) == ["response.function_call_arguments.done", "response.output_item.done", "response.failed"]
    assert final["output"][0]["status"] == "incomplete" and final["output"][0]["arguments"] == '{"a"'


def test_stream_empty_answer_still_has_a_message() -> None:
    events, final = run_stream([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")], usage=None)
    check_events(events)
    assert types_of(events)[2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final["usage"] is None and check_response(final).output_text == ""


def test_stream_ignores_usage_only_chunks() -> None:
    conv = events_for()
    conv.start()
    assert conv.feed(chunk(None, usage=USAGE)) == []
    assert conv.feed(chunk({"role": "assistant"})) == []


def test_stream_refusal() -> None:
    events, final = run_stream([chunk({"refusal": "I can't"}), chunk({"refusal": " do that."}), chunk({}, "stop")])
    check_events(events)
    assert types_of(events)[2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-4]["refusal"] == "I can't do that."
    assert final["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't do that."}]


def test_stream_logprobs() -> None:
    lp = {"content": [{"token": "Hi", "logprob": -0.2, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.2, "bytes": [72, 105]}]}]}
    events, final = run_stream([chunk({"content": "Hi"}, logprobs=lp), chunk({}, "stop")], req(stream=True, top_logprobs=1))
    check_events(events)
    delta = next(ev for ev in events if ev["type"] == "response.output_text.delta")
    assert delta["logprobs"] == [{"token": "Hi", "logprob": -0.2, "top_logprobs": [{"token": "Hi", "logprob": -0.2}]}]
    assert final["output"][0]["content"][0]["logprobs"][0]["bytes"] == [72, 105]


def test_stream_events_are_snapshots() -> None:
    """Events already handed out must not change when later chunks arrive."""
    conv = events_for()
    events = conv.start() + conv.feed(chunk({"content": "a"}))
    before = copy.deepcopy(events)
    events += conv.feed(chunk({"content": "b"}))
    conv.complete(None)
    assert events[: len(before)] == before


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=12),
)
def test_stream_random_splits(text: str, cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:]) if text[a:b]]
    conv = events_for()
    events = conv.start()
    for piece in pieces:
        events += conv.feed(chunk({"content": piece}))
    tail, final = conv.complete(USAGE)
    events += tail
    assert [ev["sequence_number"] for ev in events] == list(range(len(events)))
    deltas = [ev["delta"] for ev in events if ev["type"] == "response.output_text.delta"]
    assert deltas == pieces
    assert "".join(deltas) == text
    done = next(ev for ev in events if ev["type"] == "response.output_text.done")
    assert done["text"] == text
    assert Response.model_validate(final).output_text == text
    for ev in events:
        EVENT.validate_python(ev)


def test_stream_interleaved_tool_fragments_land_in_the_final_object() -> None:
    """Upstreams that interleave call fragments: events stay one item at a time, the final object is right."""
    chunks = [
        chunk(tool_delta(0, id="c0", name="f", args='{"a":')),
        chunk(tool_delta(1, id="c1", name="f", args='{"b":2}')),
        chunk(tool_delta(0, args="1}")),
        chunk({}, "tool_calls"),
    ]
    events, final = run_stream(chunks, req(stream=True, tools=[{"type": "function", "name": "f"}]))
    check_events(events)
    assert [i["arguments"] for i in final["output"]] == ['{"a":1}', '{"b":2}']
    assert events[-1]["response"]["output"][0]["arguments"] == '{"a":1}'


def test_streamed_chat_body_is_a_valid_streaming_chat_request() -> None:
    body = build({"input": "x", "stream": True, "stream_options": {"include_obfuscation": False}})
    parsed = parse_chat_request(body)
    assert parsed.stream and parsed.wants_usage_chunk
