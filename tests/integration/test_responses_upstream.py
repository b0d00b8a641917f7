"""The Responses API against stand-in upstreams: OpenAI deployments natively, others via chat.

Every object and event the gateway returns is checked against OpenAI's OpenAPI spec as well as
the SDK's own types (the SDK parses them).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.codex_turn import CODEX_TOOLS, codex_turn, user
from tests.conftest import MASTER_KEY, USER_KEY, Admin, Gateway, start_gateway, upstream_config
from tests.standins.openai_upstream import ANSWER, StandInUpstream

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                          "required": ["city", "unit"], "additionalProperties": False}, "strict": True}
# RESPONSES_USAGE at gpt-5.2 prices: (12 x 1.75 + 8 x 0.175 + 9 x 14) / 1M dollars.
NATIVE_COST = "0.0001484"


def _dep(upstream: StandInUpstream, model: str, catalog: str = "gpt-5.2", native: bool = True) -> dict[str, Any]:
    return {"deployments": [{"provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY",
                             "model": model, "catalog": catalog, "native_responses": native,
                             "timeouts": {"connect": 2, "read": 5}}]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    config = upstream_config(upstream)
    config["models"].update({
        "translated": _dep(upstream, "ok", native=False),
        "tools-native": _dep(upstream, "tools"),
        "tools-translated": _dep(upstream, "tools", native=False),
        "tools-last-translated": _dep(upstream, "tools-last", native=False),
        "gpt-5.2-pro": _dep(upstream, "ok", catalog="gpt-5.2-pro"),
    })
    gateway = start_gateway(tmp_path_factory.mktemp("responses-upstream"), config=config,
                            env={"STANDIN_KEY": "sk-upstream-secret"})
    yield gateway
    gateway.stop()


def _raw(gw: Gateway, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=gw.root, headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=30) as http:
        return http.post("/v1/responses", json=body)


def test_native_answer_is_ours_with_exact_usage_and_cost(gw: Gateway, upstream: StandInUpstream, openapi: Any) -> None:
    raw = _raw(gw, {"model": "gpt-5.2", "input": "Hello there", "reasoning": {"effort": "high"}, "metadata": {"a": "b"}})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    openapi(body, "Response")
    assert body["id"].startswith("resp_") and body["model"] == "gpt-5.2" and body["metadata"] == {"a": "b"}
    assert raw.headers["x-switchyard-cost-usd"] == NATIVE_COST
    assert body["usage"]["cost"] == float(NATIVE_COST)
    sent = upstream.last()
    assert sent.path == "/v1/responses"
    assert sent.body["model"] == "ok" and sent.body["store"] is False and sent.body["reasoning"] == {"effort": "high"}
    assert sent.body["input"] == [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}]
    assert body["id"] != upstream_id(sent)

    resp = gw.client().responses.retrieve(body["id"])
    assert resp.output_text == "echo: Hello there"
    assert resp.usage.input_tokens == 20 and resp.usage.input_tokens_details.cached_tokens == 8
    assert resp.usage.output_tokens == 9 and resp.usage.output_tokens_details.reasoning_tokens == 4


def _wire_events(gw: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream as it is on the wire: every `event:` line must name its data's type."""
    events = []
    with httpx.Client(base_url=gw.root, headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=30) as http:
        with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    assert event["type"] == name
                    events.append(event)
    return events


def upstream_id(sent: Any) -> str | None:
    return sent.body.get("id")


def test_native_multi_turn_sends_the_whole_conversation(gw: Gateway, upstream: StandInUpstream) -> None:
    client = gw.client()
    first = client.responses.create(model="gpt-5.2", input="one", instructions="Be terse.")
    second = client.responses.create(model="gpt-5.2", input="two", previous_response_id=first.id)
    assert second.output_text == "echo: two" and second.previous_response_id == first.id
    sent = upstream.last().body
    assert "previous_response_id" not in sent and "instructions" not in sent  # instructions do not carry over
    assert [(i.get("type"), i.get("role")) for i in sent["input"]] == [
        ("message", "user"), ("message", "assistant"), ("message", "user")]
    assert sent["input"][1]["content"][0]["text"] == "echo: one"
    assert all("id" not in item for item in sent["input"])


def test_native_stream_events_validate_and_end_with_cost(gw: Gateway, openapi: Any) -> None:
    client = gw.client()
    with client.responses.stream(model="gpt-5.2", input="streamed words here") as stream:
        events = list(stream)
        final = stream.get_final_response()
    for event in _wire_events(gw, {"model": "gpt-5.2", "input": "streamed words here"}):
        openapi(event, "ResponseStreamEvent")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert {events[0].response.id, final.id} == {final.id}
    assert final.output_text == "echo: streamed words here"
    assert final.usage.model_extra["cost"] == float(NATIVE_COST)
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_translated_answer_and_stream(gw: Gateway, upstream: StandInUpstream, openapi: Any) -> None:
    client = gw.client()
    resp = client.responses.create(model="translated", input="Hi", instructions="Be nice.", max_output_tokens=50)
    openapi(client.responses.with_raw_response.retrieve(resp.id).http_response.json(), "Response")
    assert resp.output_text == "".join(ANSWER)
    sent = upstream.last()
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"][0] == {"role": "system", "content": "Be nice."}
    assert sent.body["messages"][1]["role"] == "user" and sent.body["max_completion_tokens"] == 50
    events = list(client.responses.create(model="translated", input="Hi", stream=True))
    for event in _wire_events(gw, {"model": "translated", "input": "Hi"}):
        openapi(event, "ResponseStreamEvent")
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "".join(ANSWER)
    assert events[-1].type == "response.completed" and events[-1].response.usage.total_tokens == 17


@pytest.mark.parametrize("model", ["tools-native", "tools-translated"])
def test_function_call_round_trip(gw: Gateway, upstream: StandInUpstream, model: str) -> None:
    client = gw.client()
    first = client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    json.loads(calls[0].arguments)
    follow = client.responses.create(
        model="gpt-5.2" if model == "tools-native" else "translated", previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp": 21}'}])
    sent = upstream.last().body
    if model == "tools-native":
        kinds = [i.get("type") for i in sent["input"]]
        assert kinds == ["message", "function_call", "function_call_output"]
        assert sent["input"][1]["call_id"] == sent["input"][2]["call_id"] == calls[0].call_id
        assert follow.output_text == 'echo: tool output {"temp": 21}'
    else:
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["user", "assistant", "tool"]
        assert sent["messages"][1]["tool_calls"][0]["id"] == calls[0].call_id == sent["messages"][2]["tool_call_id"]
        assert sent["messages"][2]["content"] == '{"temp": 21}'
        assert follow.output_text == "".join(ANSWER)


def test_tool_call_stream_events(gw: Gateway, openapi: Any) -> None:
    events = list(gw.client().responses.create(model="tools-translated", input="Weather?", tools=[WEATHER], stream=True))
    for event in _wire_events(gw, {"model": "tools-translated", "input": "Weather?", "tools": [WEATHER]}):
        openapi(event, "ResponseStreamEvent")
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"location": "Paris", "unit": "c"}
    assert events[-1].response.output[-1].type == "function_call"


def test_reasoning_effort_is_checked_against_the_catalog(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().responses.create(model="gpt-5.2", input="x", reasoning={"effort": "minimal"})
    assert err.value.body["param"] == "reasoning.effort" and "minimal" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().responses.create(model="gpt-5.2-pro", input="x", reasoning={"effort": "low"})
    assert err.value.body["param"] == "reasoning.effort"


def test_responses_only_model(gw: Gateway) -> None:
    client = gw.client()
    assert client.responses.create(model="gpt-5.2-pro", input="deep thought").output_text == "echo: deep thought"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-5.2-pro", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "unsupported_endpoint"


def test_upstream_errors_map_like_chat(gw: Gateway) -> None:
    client = gw.client()
    with pytest.raises(openai.RateLimitError) as err:
        client.responses.create(model="sim-status-429", input="x")
    assert err.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="sim-status-400", input="x")
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="gpt-5.2", input="x", previous_response_id="resp_nope")
    assert err.value.body["param"] == "previous_response_id"


def test_broken_native_stream_ends_as_failed(gw: Gateway) -> None:
    events = list(gw.client().responses.create(model="sim-broken-stream", input="x", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed" and events[-1].response.error is not None
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_input_items_page_validates(gw: Gateway, openapi: Any) -> None:
    client = gw.client()
    resp = client.responses.create(model="gpt-5.2", input=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with httpx.Client(base_url=gw.root, headers={"Authorization": f"Bearer {USER_KEY}"}) as http:
        page = http.get(f"/v1/responses/{resp.id}/input_items", params={"limit": 1}).json()
        deleted = http.delete(f"/v1/responses/{resp.id}").json()
    openapi(page, "ResponseItemList")
    assert page["has_more"] is True and page["data"][0]["content"][0]["text"] == "b"
    assert deleted == {"id": resp.id, "object": "response", "deleted": True}


def test_truncation_auto_drops_the_oldest_turns(gw: Gateway, upstream: StandInUpstream) -> None:
    client = gw.client()
    words = " ".join(f"w{i}" for i in range(300))  # ~600 tokens; the model's window is 1,000
    first = client.responses.create(model="small-window", input=words)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="small-window", input=words, previous_response_id=first.id)
    assert err.value.body["code"] == "context_length_exceeded" and err.value.body["param"] == "input"
    second = client.responses.create(model="small-window", input="short", previous_response_id=first.id,
                                     truncation="auto")
    assert second.truncation == "auto" and second.output_text == "echo: short"
    sent = upstream.last().body["input"]
    assert sent[-1]["content"][0]["text"] == "short" and len(sent) < 3  # the oldest turn no longer fits


PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.mark.parametrize("model", ["gpt-5.2", "translated"])
def test_input_image_by_file_id_reaches_the_upstream_as_data(gw: Gateway, upstream: StandInUpstream, model: str) -> None:
    client = gw.client()
    uploaded = client.files.create(file=("dot.png", io.BytesIO(PNG_1PX), "image/png"), purpose="vision")
    content = [{"type": "input_text", "text": "What is this?"},
               {"type": "input_image", "file_id": uploaded.id, "detail": "low"}]
    resp = client.responses.create(model=model, input=[{"role": "user", "content": content}])
    data_url = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    sent = upstream.last().body
    if model == "gpt-5.2":
        part = sent["input"][0]["content"][1]
        assert part == {"type": "input_image", "image_url": data_url, "detail": "low"}
    else:
        assert sent["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}}
    # The stored input keeps the file reference, not the bytes.
    item = client.responses.input_items.list(resp.id).data[0]
    assert item.content[1].file_id == uploaded.id


def test_input_image_file_of_another_organisation_is_not_found(gw: Gateway) -> None:
    uploaded = gw.client().files.create(file=("dot.png", io.BytesIO(PNG_1PX), "image/png"), purpose="vision")
    admin = Admin(gw, MASTER_KEY)
    org = admin.org("responses-file-thief", tier="unlimited", prepaid=False)
    other = gw.client(admin.key(org["id"]))
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="gpt-5.2", input=[{"role": "user", "content": [
            {"type": "input_image", "file_id": uploaded.id, "detail": "auto"}]}])


# ---- coding agents: Codex's turns --------------------------------------------------------


def _codex_stream(gw: Gateway, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """A turn sent as Codex sends it (raw HTTP, SSE back); the response and its events."""
    events = []
    with httpx.Client(base_url=gw.root, headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=30) as http:
        with http.stream("POST", "/v1/responses", json=body) as resp:
            assert resp.status_code == 200, resp.read().decode()
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
    return resp, events


def test_a_codex_turn_reaches_a_native_deployment_untouched(gw: Gateway, upstream: StandInUpstream, openapi: Any) -> None:
    body = codex_turn("tools-native", [user("List the files here.")], reasoning={"effort": "medium", "summary": "auto"})
    resp, events = _codex_stream(gw, body)
    for event in events:
        openapi(event, "ResponseStreamEvent")
    assert "x-switchyard-dropped-tools" not in resp.headers
    sent = upstream.last().body
    assert sent["tools"] == CODEX_TOOLS  # namespace, custom and hosted tools as the client sent them
    assert sent["include"] == ["reasoning.encrypted_content"] and sent["store"] is False
    assert sent["prompt_cache_key"] == body["prompt_cache_key"] and sent["client_metadata"] == body["client_metadata"]
    done = events[-1]
    assert done["type"] == "response.completed"
    call = next(item for item in done["response"]["output"] if item["type"] == "function_call")
    assert call["name"] == "shell"

    # Codex keeps the state itself (store: false): the next turn carries the whole history.
    history = [user("List the files here."), call,
               {"type": "function_call_output", "call_id": call["call_id"], "output": "README.md\nsrc"}]
    _, events = _codex_stream(gw, codex_turn("gpt-5.2", history))
    assert events[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == 'echo: tool output README.md\nsrc'
    sent = upstream.last().body
    assert [i["type"] for i in sent["input"]] == ["message", "function_call", "function_call_output"]


def test_a_codex_turn_is_translated_for_a_chat_deployment(gw: Gateway, upstream: StandInUpstream, openapi: Any) -> None:
    resp, events = _codex_stream(gw, codex_turn("tools-last-translated", [user("Find the docs on routing.")]))
    for event in events:
        openapi(event, "ResponseStreamEvent")
    assert resp.headers["x-switchyard-dropped-tools"] == "web_search"  # a hosted tool a chat model cannot run
    gw.logs_with("cannot run hosted tools web_search")
    sent = upstream.last().body
    names = [t["function"]["name"] for t in sent["tools"]]
    assert names == ["shell", "apply_patch", "mcp__docs__search"]  # the namespace unpacked, web_search left out
    assert sent["tools"][1]["function"]["parameters"]["properties"] == {"input": {"type": "string"}}
    # The chat model called the namespaced function: the client sees it by its own name and namespace.
    call = next(i for i in events[-1]["response"]["output"] if i["type"] == "function_call")
    assert (call["name"], call.get("namespace"), json.loads(call["arguments"])) == ("search", "mcp__docs", {"query": "Paris"})
    added = next(e for e in events if e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call")
    assert added["item"]["name"] == "search"

    history = [user("Find the docs on routing."), call,
               {"type": "function_call_output", "call_id": call["call_id"], "output": "docs/routing.md"}]
    _, events = _codex_stream(gw, codex_turn("translated", history))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "".join(ANSWER)
    sent = upstream.last().body["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "mcp__docs__search"
    assert sent[-1] == {"role": "tool", "tool_call_id": call["call_id"], "content": "docs/routing.md"}


def test_compaction_natively_and_by_translation(gw: Gateway, upstream: StandInUpstream, openapi: Any) -> None:
    client = gw.client()
    history = [{"role": "user", "content": "Create a landing page for a dog cafe."},
               {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Here it is: ..."}]}]
    native = client.responses.with_raw_response.compact(model="gpt-5.2", input=history)
    openapi(native.http_response.json(), "CompactResource")
    compacted = native.parse()
    assert upstream.last().path == "/v1/responses/compact" and upstream.last().body["model"] == "ok"
    assert compacted.id.startswith("resp_") and compacted.output[-1].type == "compaction"
    assert native.headers["x-switchyard-cost-usd"] == NATIVE_COST  # the upstream's usage, billed
    # OpenAI's own compaction goes back to OpenAI as it came.
    client.responses.create(model="gpt-5.2", input=[*[i.model_dump(exclude_none=True, warnings=False)
                                                      for i in compacted.output], user("Add a menu.")])
    assert upstream.last().body["input"][-2]["encrypted_content"] == compacted.output[-1].encrypted_content

    translated = client.responses.with_raw_response.compact(model="translated", input=history)
    openapi(translated.http_response.json(), "CompactResource")
    ours = translated.parse()
    assert upstream.last().path == "/v1/chat/completions"
    assert ours.output[-1].encrypted_content.startswith("sy-compaction-v1:")
    assert ours.usage.input_tokens == 12 and ours.usage.output_tokens == 5  # the chat upstream's usage
    # Ours goes to a native deployment as the summary itself: OpenAI could not read it.
    client.responses.create(model="gpt-5.2", input=[*[i.model_dump(exclude_none=True, warnings=False)
                                                      for i in ours.output], user("Add a menu.")])
    sent = upstream.last().body["input"]
    assert sent[-2] == {"type": "message", "role": "developer",
                        "content": "Summary of the conversation so far:\n" + "".join(ANSWER)}


def test_compaction_refuses_what_it_cannot_read(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        gw.client().responses.compact(model="gpt-5.2", input=[{"role": "robot", "content": "x"}])
    assert refused.value.param and refused.value.param.startswith("input")
    with pytest.raises(openai.NotFoundError):
        gw.client().responses.compact(model="no-such-model", input="hi")
