"""The stand-in upstream's `POST /v1/responses` speaks OpenAI's real wire protocol.

Checked three ways, so gateway tests built on it test against the real thing: the official SDK
pointed straight at it, the SDK's pydantic models validating every raw object and event, and
OpenAI's OpenAPI spec (skipped when the spec file is missing).

The spec is checked with `allow_null_optional`: like the real API (and the spec's own examples),
the stand-in sends `"user": null` and, before the end of a stream, `"usage": null`, which the
spec's Response schema types as plain string / object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.openapi_spec import openapi  # noqa: F401  (fixture)
from tests.standins.openai_upstream import RESPONSES_USAGE, StandInUpstream

EVENTS = TypeAdapter(ResponseStreamEvent)
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                "unit": {"type": "string", "enum": ["c", "f"]}},
                               "required": ["city", "unit"], "additionalProperties": False}}
TEXT_ORDER = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
              "response.output_text.delta", "response.output_text.done", "response.content_part.done",
              "response.output_item.done", "response.completed"]
TOOL_ORDER = ["response.created", "response.in_progress", "response.output_item.added",
              "response.function_call_arguments.delta", "response.function_call_arguments.done",
              "response.output_item.done", "response.completed"]
# Spec schema for each event type: a wrong branch would otherwise hide in ResponseStreamEvent's anyOf.
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent", "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent", "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent", "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent", "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent", "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent", "error": "ResponseErrorEvent",
}

Validate = Callable[..., None]


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInUpstream]:
    s = StandInUpstream().start()
    yield s
    s.stop()


@pytest.fixture
def client(standin: StandInUpstream) -> OpenAI:
    return OpenAI(base_url=standin.base_url, api_key="x", max_retries=0, timeout=30)


def post(standin: StandInUpstream, body: Any) -> httpx.Response:
    return httpx.post(f"{standin.base_url}/responses", json=body, timeout=30)


def frames(standin: StandInUpstream, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The raw SSE text and the events it carries, each frame checked for its `event:` line."""
    with httpx.stream("POST", f"{standin.base_url}/responses", json={**body, "stream": True}, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("\n\n") and "[DONE]" not in raw
    events = []
    for frame in raw.strip("\n").split("\n\n"):
        event_line, data_line = frame.split("\n")
        event = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {event['type']}"
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return raw, events


def check_response(raw: dict[str, Any], openapi: Validate) -> Response:
    response = Response.model_validate(raw)  # the SDK client itself only constructs, never validates
    openapi(raw, "Response", allow_null_optional=True)
    return response


def check_events(events: list[dict[str, Any]], openapi: Validate) -> None:
    for event in events:
        EVENTS.validate_python(event)
        openapi(event, "ResponseStreamEvent", allow_null_optional=True)
        openapi(event, EVENT_SCHEMAS[event["type"]], allow_null_optional=True)


# ---- non-streaming ------------------------------------------------------------------------------


def test_text_answer_through_the_sdk(client: OpenAI, standin: StandInUpstream) -> None:
    r = client.responses.create(model="ok", input="hello there", instructions="be brief", metadata={"k": "v"})
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.output_text == "echo: hello there"
    assert r.model == "ok" and r.instructions == "be brief" and r.metadata == {"k": "v"}
    assert r.usage is not None and r.usage.model_dump() == {**RESPONSES_USAGE, "input_tokens_details": {
        **RESPONSES_USAGE["input_tokens_details"], "cache_write_tokens_details": None}}
    assert r.usage.input_tokens_details.cached_tokens == 8 and r.usage.output_tokens_details.reasoning_tokens == 4
    sent = standin.last()
    assert sent.path == "/v1/responses" and sent.body["input"] == "hello there" and sent.headers["Authorization"] == "Bearer x"


def test_raw_object_is_a_valid_response(standin: StandInUpstream, openapi: Validate) -> None:
    r = post(standin, {"model": "ok", "input": [
        {"role": "user", "content": "first turn"},
        {"role": "assistant", "content": "echo: first turn"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"},
                                                        {"type": "input_text", "text": "turn"}]},
    ]})
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")
    response = check_response(r.json(), openapi)
    assert response.output_text == "echo: second turn"
    assert r.json()["completed_at"] >= r.json()["created_at"]


def test_ids_are_fresh_per_call(client: OpenAI) -> None:
    a, b = (client.responses.create(model="ok", input="x") for _ in range(2))
    assert a.id != b.id and a.output[0].id != b.output[0].id


def test_function_call(client: OpenAI, standin: StandInUpstream, openapi: Validate) -> None:
    r = client.responses.create(model="tools", input="weather in Paris?", tools=[WEATHER_TOOL])  # type: ignore[list-item]
    (call,) = r.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.call_id.startswith("call_") and json.loads(call.arguments) == {"city": "Paris", "unit": "c"}
    assert r.output_text == ""
    raw = post(standin, {"model": "tools", "input": "again", "tools": [WEATHER_TOOL]}).json()
    check_response(raw, openapi)
    assert raw["tools"][0]["strict"] is True  # echoed with the API's defaults filled in


def test_tool_output_turn_is_echoed(client: OpenAI) -> None:
    r = client.responses.create(model="ok", input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ])
    assert r.output_text == "echo: tool output sunny"


@pytest.mark.parametrize("behaviour", ["reasoning", "incomplete", "failed"])
def test_other_behaviours_are_valid(standin: StandInUpstream, openapi: Validate, behaviour: str) -> None:
    raw = post(standin, {"model": behaviour, "input": "hi"}).json()
    response = check_response(raw, openapi)
    if behaviour == "reasoning":
        assert [o.type for o in response.output] == ["reasoning", "message"] and response.output_text == "echo: hi"
    elif behaviour == "incomplete":
        assert response.status == "incomplete" and response.incomplete_details and response.incomplete_details.reason == "max_output_tokens"
    else:
        assert response.status == "failed" and response.error and response.error.code == "server_error"


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["model", "input"])
def test_missing_required_parameter_is_400(standin: StandInUpstream, openapi: Validate, missing: str) -> None:
    body = {"model": "ok", "input": "hi"}
    del body[missing]
    r = post(standin, body)
    assert r.status_code == 400
    openapi(r.json(), "ErrorResponse")
    assert r.json()["error"]["param"] == missing and r.json()["error"]["type"] == "invalid_request_error"


def test_status_behaviours_through_the_sdk(client: OpenAI, standin: StandInUpstream, openapi: Validate) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="status-429", input="hi")
    assert caught.value.response.headers["retry-after"] == "7" and caught.value.code == "stand_in_code"
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="status-500", input="hi")
    with pytest.raises(openai.AuthenticationError):
        client.responses.create(model="status-401", input="hi")
    openapi(post(standin, {"model": "status-503", "input": "hi"}).json(), "ErrorResponse")


def test_unparseable_body_is_400(standin: StandInUpstream) -> None:
    r = httpx.post(f"{standin.base_url}/responses", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "could not parse" in r.json()["error"]["message"]


# ---- streaming ----------------------------------------------------------------------------------


def test_text_stream_order_and_validity(standin: StandInUpstream, openapi: Validate) -> None:
    _, events = frames(standin, {"model": "ok", "input": "stream me please"})
    types = [e["type"] for e in events]
    deltas = types.count("response.output_text.delta")
    assert deltas > 1
    assert types == TEXT_ORDER[:4] + ["response.output_text.delta"] * deltas + TEXT_ORDER[5:]
    check_events(events, openapi)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "echo: stream me please" == events[-4]["text"]
    created, completed = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert completed["status"] == "completed" and completed["usage"] == RESPONSES_USAGE
    assert created["id"] == completed["id"]
    item_ids = {e["item_id"] for e in events if "item_id" in e}
    assert item_ids == {completed["output"][0]["id"]}


def test_tool_stream_order_and_validity(standin: StandInUpstream, openapi: Validate) -> None:
    _, events = frames(standin, {"model": "tools", "input": "weather?", "tools": [WEATHER_TOOL]})
    types = [e["type"] for e in events]
    n = types.count("response.function_call_arguments.delta")
    assert n > 1 and types == TOOL_ORDER[:3] + [TOOL_ORDER[3]] * n + TOOL_ORDER[4:]
    check_events(events, openapi)
    args = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris", "unit": "c"}
    assert events[-3]["arguments"] == args and events[-3]["name"] == "get_weather"


@pytest.mark.parametrize("behaviour", ["reasoning", "incomplete", "failed", "error-event"])
def test_other_streams_are_valid(standin: StandInUpstream, openapi: Validate, behaviour: str) -> None:
    _, events = frames(standin, {"model": behaviour, "input": "hi"})
    check_events(events, openapi)
    last = {"reasoning": "response.completed", "incomplete": "response.incomplete",
            "failed": "response.failed", "error-event": "error"}[behaviour]
    assert events[-1]["type"] == last


def test_sdk_stream_helper(client: OpenAI) -> None:
    with client.responses.stream(model="ok", input="via the helper") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "echo: via the helper" and final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == 4


def test_sdk_stream_helper_with_tools(client: OpenAI, standin: StandInUpstream) -> None:
    with client.responses.stream(model="tools", input="weather?", tools=[WEATHER_TOOL]) as stream:  # type: ignore[list-item]
        done = [e for e in stream if e.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    assert len(done) == 1 and final.output[0].type == "function_call"
    assert json.loads(final.output[0].arguments) == {"city": "Paris", "unit": "c"}
    assert standin.last().body["stream"] is True


def test_sdk_create_stream(client: OpenAI) -> None:
    events = list(client.responses.create(model="ok", input="raw iterator", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "echo: raw iterator"


def test_broken_stream_drops_the_connection(client: OpenAI) -> None:
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(model="broken-stream", input="hi", stream=True):
            seen.append(event.type)
    assert seen == ["response.created", "response.in_progress", "response.output_item.added"]
