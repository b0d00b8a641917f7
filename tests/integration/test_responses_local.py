"""The Responses API on the embedded local model (translated to and from chat), through the SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.codex_turn import codex_turn, user
from tests.conftest import MASTER_KEY, USER_KEY, Admin, Gateway

MODEL = "smollm2-135m-instruct"


def test_create_returns_output_text_usage_and_cost(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    resp = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=16, temperature=0)
    assert resp.object == "response" and resp.status in ("completed", "incomplete")
    assert resp.id.startswith("resp_")
    assert resp.model == MODEL
    assert resp.output_text.strip()
    assert resp.output[0].type == "message" and resp.output[0].content[0].type == "output_text"
    usage = resp.usage
    assert usage is not None and usage.input_tokens > 0 and 0 < usage.output_tokens <= 16
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens >= 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert usage.model_extra is not None and "cost" in usage.model_extra  # the local model is free: 0


def test_max_output_tokens_reached_is_incomplete(local_gateway: Gateway) -> None:
    resp = local_gateway.client().responses.create(
        model=MODEL, input="Write a long story about a dragon.", max_output_tokens=16, temperature=0)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage.output_tokens == 16


def test_stream_events_in_order_with_sequence_numbers(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    events = list(client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=16, stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          types[-1]]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == text and events[-4].text == text
    assert final.usage is not None and final.usage.output_tokens > 0
    assert len({events[0].response.id, final.id}) == 1


def test_stream_helper_and_stored_result(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    # The SDK's helper wants `response.completed`: give the answer room to finish.
    with client.responses.stream(model=MODEL, input="Say hi.", max_output_tokens=300, temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.output_text == "".join(deltas)
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text and stored.usage.total_tokens == final.usage.total_tokens


class Pet(BaseModel):
    name: str
    age: int


def test_parse_with_a_pydantic_model(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    parsed = client.responses.parse(
        model=MODEL, input="Invent a pet. Reply as JSON with its name and age.", text_format=Pet,
        max_output_tokens=60, temperature=0)
    assert isinstance(parsed.output_parsed, Pet)
    assert json.loads(parsed.output_text) == parsed.output_parsed.model_dump()


def test_multi_turn_with_previous_response_id(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    first = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=16, temperature=0)
    second = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id,
                                     max_output_tokens=16, temperature=0)
    assert second.previous_response_id == first.id
    # The whole conversation was the prompt: the second turn's input is larger than its own text.
    alone = client.responses.create(model=MODEL, input="What is my name?", max_output_tokens=16, temperature=0, store=False)
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens


def test_store_false_keeps_nothing(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    resp = client.responses.create(model=MODEL, input="Hi", max_output_tokens=16, store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model=MODEL, input="again", previous_response_id=resp.id, max_output_tokens=16)
    assert err.value.body["param"] == "previous_response_id"


def test_get_delete_and_input_items_pages(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    resp = client.responses.create(
        model=MODEL, max_output_tokens=16, metadata={"ticket": "42"},
        input=[{"role": "developer", "content": "Be brief."},
               {"role": "user", "content": [{"type": "input_text", "text": "One"}]},
               {"role": "user", "content": "Two"}])
    assert resp.metadata == {"ticket": "42"}
    assert client.responses.retrieve(resp.id).model_dump() == resp.model_dump()
    items = client.responses.input_items.list(resp.id)
    assert [i.role for i in items.data] == ["user", "user", "developer"]  # newest first by default
    first_page = client.responses.input_items.list(resp.id, limit=2, order="asc")
    assert first_page.has_more and len(first_page.data) == 2
    every = list(client.responses.input_items.list(resp.id, limit=1, order="asc"))  # auto-paging by cursor
    assert [i.content[0].text for i in every] == ["Be brief.", "One", "Two"]
    client.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(resp.id)


def test_another_organisation_cannot_see_a_stored_response(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    resp = client.responses.create(model=MODEL, input="secret plan", max_output_tokens=16)
    admin = Admin(local_gateway, MASTER_KEY)
    org = admin.org("responses-other-org", tier="unlimited", prepaid=False)
    other = local_gateway.client(admin.key(org["id"]))
    for call in (lambda: other.responses.retrieve(resp.id), lambda: other.responses.delete(resp.id),
                 lambda: other.responses.input_items.list(resp.id),
                 lambda: other.responses.create(model=MODEL, input="x", previous_response_id=resp.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert client.responses.retrieve(resp.id).id == resp.id


def test_bad_requests_name_their_parameter(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    cases = [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": "x", "temperature": 5}, "temperature"),
        ({"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"model": MODEL, "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": MODEL, "input": "x", "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "mcp"}]}]},
         "tools[0].tools[0].type"),
        ({"model": MODEL, "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"model": "no-such-model", "input": "x"}, "model"),
    ]
    with httpx.Client(base_url=local_gateway.root, headers={"Authorization": "Bearer sk-sy-test-user"}) as http:
        for body, param in cases:
            resp = http.post("/v1/responses", json=body)
            assert resp.status_code in (400, 404), (body, resp.text)
            error = resp.json()["error"]
            assert error["param"] == param, (body, error)
            assert set(error) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="x", reasoning={"effort": "high"})
    assert err.value.body["param"] == "reasoning.effort"


def _codex(gw: Gateway, body: dict) -> tuple[httpx.Response, list[dict]]:
    events = []
    with httpx.Client(base_url=gw.root, headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=120) as http:
        with http.stream("POST", "/v1/responses", json=body) as resp:
            assert resp.status_code == 200, resp.read().decode()
            events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    return resp, events


def test_a_codex_turn_with_a_function_call_round_trip(local_gateway: Gateway) -> None:
    """Codex's whole tool list on the local model: the hosted tool left out, the rest callable."""
    first = [user("Run ls in the current directory.")]
    resp, events = _codex(local_gateway, codex_turn(MODEL, first, tool_choice={"type": "function", "name": "shell"},
                                                    max_output_tokens=64, temperature=0))
    assert resp.headers["x-switchyard-dropped-tools"] == "web_search"
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    call = next(i for i in events[-1]["response"]["output"] if i["type"] == "function_call")
    assert call["name"] == "shell"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert deltas == call["arguments"] and isinstance(json.loads(call["arguments"])["command"], list)

    history = [*first, call, {"type": "function_call_output", "call_id": call["call_id"], "output": "README.md\nsrc\n"}]
    _, events = _codex(local_gateway, codex_turn(MODEL, history, tool_choice="none", max_output_tokens=32, temperature=0))
    final = events[-1]["response"]
    assert final["status"] in ("completed", "incomplete") and final["output"][-1]["type"] == "message"
    assert final["usage"]["input_tokens"] > 0 and final["output"][-1]["content"][0]["text"]


def test_a_codex_custom_tool_call_comes_back_as_free_text(local_gateway: Gateway) -> None:
    _, events = _codex(local_gateway, codex_turn(MODEL, [user("Create hello.txt containing hi.")],
                                                 tool_choice={"type": "custom", "name": "apply_patch"},
                                                 max_output_tokens=64, temperature=0))
    call = next(i for i in events[-1]["response"]["output"] if i["type"] == "custom_tool_call")
    assert call["name"] == "apply_patch" and isinstance(call["input"], str)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
    assert deltas == call["input"]
