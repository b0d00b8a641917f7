"""The OpenAPI validation helper: right answers on good and broken objects, readable failures."""

from __future__ import annotations

import copy
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import openapi_spec
from tests.openapi_spec import openapi, schema, schema_names  # noqa: F401  (openapi is a fixture)
from tests.standins.openai_upstream import ResponsesTurn, completion, stream_chunks, tool_call

Validate = Callable[..., None]

USAGE = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 0},
         "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 29}
RESPONSE: dict[str, Any] = {
    "id": "resp_1", "object": "response", "created_at": 1741476777, "status": "completed", "completed_at": 1741476778,
    "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None, "model": "gpt-5",
    "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}]},
               {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}",
                "status": "completed"}],
    "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
    "store": True, "temperature": 1, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
    "top_p": 1, "truncation": "disabled", "usage": USAGE, "metadata": {},
}
FILE = {"id": "file-abc", "object": "file", "bytes": 120, "created_at": 1677610602, "expires_at": 1680202602,
        "filename": "in.jsonl", "purpose": "batch", "status": "processed"}
BATCH: dict[str, Any] = {
    "id": "batch_abc", "object": "batch", "endpoint": "/v1/chat/completions", "model": "gpt-5",
    "input_file_id": "file-abc", "completion_window": "24h", "status": "completed", "output_file_id": "file-out",
    "error_file_id": "file-err", "created_at": 1711471533, "in_progress_at": 1711471538, "expires_at": 1711557933,
    "finalizing_at": 1711493133, "completed_at": 1711493163,
    "request_counts": {"total": 100, "completed": 95, "failed": 5},
    "usage": {"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1024}, "output_tokens": 500,
              "output_tokens_details": {"reasoning_tokens": 300}, "total_tokens": 2000},
    "metadata": {"job": "nightly"},
}
ERROR = {"error": {"message": "Invalid API key", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}


def fails(validate: Validate, instance: Any, name: str, *expected: str, **kwargs: Any) -> str:
    """Assert validation fails and that the message names every expected fragment."""
    with pytest.raises(AssertionError) as caught:
        validate(instance, name, **kwargs)
    message = str(caught.value)
    for fragment in expected:
        assert fragment in message, message
    return message


def test_loaded_once_and_cached_on_disk(openapi: Validate) -> None:
    assert openapi_spec._spec() is openapi_spec._spec()
    pickles = list(Path(tempfile.gettempdir()).glob("switchyard-openai-openapi-*.pickle"))
    assert pickles, "the parsed spec should be cached as a pickle"
    with max(pickles, key=lambda p: p.stat().st_mtime).open("rb") as f:
        assert pickle.load(f)["openapi"].startswith("3.1")
    assert len(schema_names()) > 1000 and "Response" in schema_names()


def test_unknown_schema_name_is_a_key_error(openapi: Validate) -> None:
    with pytest.raises(KeyError, match="NoSuchSchema"):
        openapi({}, "NoSuchSchema")


# ---- Responses ----------------------------------------------------------------------------------


def test_response(openapi: Validate) -> None:
    openapi(RESPONSE, "Response")
    fails(openapi, {**RESPONSE, "object": "chat.completion"}, "Response", "$.object", "'response'")
    missing = {k: v for k, v in RESPONSE.items() if k != "output"}
    fails(openapi, missing, "Response", "'output' is a required property")
    broken = copy.deepcopy(RESPONSE)
    broken["output"][0]["content"][0]["text"] = 5
    broken["usage"]["input_tokens_details"] = {"cached_tokens": 8}
    message = fails(openapi, broken, "Response", "$.output[0].content[0].text: 5 is not of type 'string'",
                    "$.usage.input_tokens_details: 'cache_write_tokens' is a required property")
    assert "is not valid under any of the given schemas" not in message  # the matching branch is shown


def test_spec_examples_need_lenient_nulls(openapi: Validate) -> None:
    # The spec's own Response example sends "user": null, which its schema types as a string:
    # the real API does the same, hence allow_null_optional.
    example = copy.deepcopy(schema("Response")["example"])
    fails(openapi, example, "Response", "$.user: None is not of type 'string'",
          # ...and its output_text part lacks `logprobs`, which the schema requires (the SDK does not).
          "$.output[0].content[0]: 'logprobs' is a required property")
    example["output"][0]["content"][0]["logprobs"] = []
    openapi(example, "Response", allow_null_optional=True)
    fails(openapi, {**example, "id": None}, "Response", "$.id", allow_null_optional=True)  # required stays non-null


def test_usage_allows_extra_properties(openapi: Validate) -> None:
    # The gateway adds usage.cost: neither usage schema forbids additional properties.
    openapi({**USAGE, "cost": "0.000123"}, "ResponseUsage")
    openapi({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost": "0.1"}, "CompletionUsage")
    openapi({**RESPONSE, "usage": {**USAGE, "cost": "0.1"}}, "Response")


@pytest.mark.parametrize("behaviour", ["ok", "tools", "reasoning", "incomplete", "failed"])
def test_stream_events(openapi: Validate, behaviour: str) -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}]
    turn = ResponsesTurn({"model": behaviour, "input": "hi", "tools": tools if behaviour == "tools" else []}, behaviour)
    for event in turn.events():
        openapi(event, "ResponseStreamEvent", allow_null_optional=True)


def test_individual_event_schemas(openapi: Validate) -> None:
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
             "delta": "hi", "logprobs": [], "sequence_number": 4}
    openapi(delta, "ResponseTextDeltaEvent")
    openapi(delta, "ResponseStreamEvent")
    fails(openapi, {**delta, "delta": 5}, "ResponseStreamEvent", "$.delta: 5 is not of type 'string'")
    fails(openapi, {k: v for k, v in delta.items() if k != "sequence_number"}, "ResponseStreamEvent",
          "'sequence_number' is a required property")
    fails(openapi, {**delta, "type": "response.nope"}, "ResponseStreamEvent", "no anyOf branch accepts {'type': 'response.nope'}")
    fails(openapi, delta, "ResponseTextDoneEvent", "$.type")
    openapi({"type": "response.completed", "response": RESPONSE, "sequence_number": 9}, "ResponseCompletedEvent")
    openapi({"type": "response.function_call_arguments.done", "item_id": "fc_1", "name": "f", "output_index": 0,
             "arguments": "{}", "sequence_number": 3}, "ResponseFunctionCallArgumentsDoneEvent")
    openapi({"type": "error", "code": "server_error", "message": "boom", "param": None, "sequence_number": 2},
            "ResponseErrorEvent")


def test_input_item_list(openapi: Validate) -> None:
    items = {"object": "list", "data": [{"id": "msg_1", "type": "message", "role": "user", "status": "completed",
                                         "content": [{"type": "input_text", "text": "hi"}]}],
             "first_id": "msg_1", "last_id": "msg_1", "has_more": False}
    openapi(items, "ResponseItemList")
    fails(openapi, {**items, "object": "page"}, "ResponseItemList", "$.object")


# ---- Files, Batches, errors, chat -------------------------------------------------------------


def test_files(openapi: Validate) -> None:
    openapi(FILE, "OpenAIFile")
    fails(openapi, {**FILE, "object": "blob"}, "OpenAIFile", "$.object")
    fails(openapi, {k: v for k, v in FILE.items() if k != "bytes"}, "OpenAIFile", "'bytes' is a required property")
    fails(openapi, {**FILE, "purpose": "batch-output"}, "OpenAIFile", "$.purpose")
    openapi({"object": "list", "data": [FILE], "first_id": "file-abc", "last_id": "file-abc", "has_more": False},
            "ListFilesResponse")
    openapi({"id": "file-abc", "object": "file", "deleted": True}, "DeleteFileResponse")
    fails(openapi, {"id": "file-abc", "object": "file"}, "DeleteFileResponse", "'deleted' is a required property")


def test_batches(openapi: Validate) -> None:
    openapi(BATCH, "Batch")
    fails(openapi, {**BATCH, "status": "done"}, "Batch", "$.status")
    fails(openapi, {k: v for k, v in BATCH.items() if k != "input_file_id"}, "Batch", "'input_file_id' is a required property")
    # OpenAI sends null for the timestamps and files a batch does not have yet; the spec types them
    # as plain integers and strings.
    pending = {**BATCH, "status": "in_progress", "output_file_id": None, "error_file_id": None, "completed_at": None,
               "errors": None}
    fails(openapi, pending, "Batch", "$.output_file_id", "$.completed_at", "$.errors")
    openapi(pending, "Batch", allow_null_optional=True)
    openapi({"object": "list", "data": [BATCH], "first_id": "batch_abc", "last_id": "batch_abc", "has_more": False},
            "ListBatchesResponse")


def test_errors(openapi: Validate) -> None:
    openapi(ERROR, "ErrorResponse")
    openapi(ERROR["error"], "Error")
    fails(openapi, {"error": {"message": "x", "type": "t"}}, "ErrorResponse", "$.error: 'param' is a required property",
          "$.error: 'code' is a required property")
    fails(openapi, {"message": "x"}, "ErrorResponse", "'error' is a required property")


def test_chat_and_nullable_rewrite(openapi: Validate) -> None:
    openapi(completion({"model": "ok"}), "CreateChatCompletionResponse")
    openapi(completion({"model": "tools"}, call=tool_call({}, "tools")), "CreateChatCompletionResponse")
    bad = completion({"model": "ok"})
    bad["object"] = "chat.completion.chunk"
    fails(openapi, bad, "CreateChatCompletionResponse", "$.object")
    # Chunks carry `finish_reason: null`, `logprobs: null`, `usage: null`: OpenAPI 3.0 `nullable`
    # in a 3.1 spec, rewritten to type unions by the loader.
    for chunk in stream_chunks({"model": "ok", "stream_options": {"include_usage": True}}):
        openapi(chunk, "CreateChatCompletionStreamResponse")
    chunk = stream_chunks({"model": "ok"})[1]
    chunk["choices"][0]["finish_reason"] = "done"
    fails(openapi, chunk, "CreateChatCompletionStreamResponse", "$.choices[0].finish_reason")


def test_recursive_ref_is_followed(openapi: Validate) -> None:
    leaf = {"type": "eq", "key": "a", "value": "b"}
    openapi({"type": "and", "filters": [leaf, {"type": "or", "filters": [leaf]}]}, "CompoundFilter")
    fails(openapi, {"type": "and", "filters": [leaf, {"type": "or", "filters": [{"type": "eq", "key": 5, "value": "b"}]}]},
          "CompoundFilter", "$.filters[1].filters[0]")


def test_fixture_skips_without_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openapi_spec, "SPEC_PATH", Path("/nonexistent/openai-openapi.yaml"))
    with pytest.raises(pytest.skip.Exception, match="OpenAI OpenAPI spec not found at /nonexistent/openai-openapi.yaml"):
        openapi_spec.openapi_validator()
