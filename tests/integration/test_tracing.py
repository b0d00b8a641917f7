"""OpenTelemetry traces from a real server process to an OTLP/HTTP receiver: one server span per
request continuing the caller's traceparent, child spans for admission, each upstream attempt
(a failed one marked as such) and settlement, with the GenAI attributes (model, provider, tokens)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import USER_KEY, StandInUpstream, start_gateway, upstream_config
from tests.standins.otlp_receiver import OtlpReceiver, Span

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _spans_of(receiver: OtlpReceiver, trace_id: str, at_least: int) -> list[Span]:
    deadline = time.monotonic() + 30
    while True:
        spans = [s for s in receiver.received if s.trace_id == trace_id]
        if len(spans) >= at_least and any(s.kind == 2 for s in spans):  # the server span ends last
            return spans
        assert time.monotonic() < deadline, f"spans of {trace_id}: {spans}"
        time.sleep(0.1)


def test_a_request_leaves_a_span_tree_with_genai_attributes(tmp_path: Path, upstream: StandInUpstream) -> None:
    receiver = OtlpReceiver().start()
    config = upstream_config(upstream)
    config["tracing"] = {"otlp_endpoint": receiver.endpoint, "service_name": "switchyard-test", "sample_ratio": 1}
    config["models"]["fallback"] = {"deployments": [
        {"provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY", "model": "status-503",
         "catalog": "gpt-5.2", "retries": 0},
        {"provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY", "model": "ok",
         "catalog": "gpt-5.2"}]}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    try:
        client = gw.client(USER_KEY)
        answer = client.chat.completions.with_raw_response.create(
            model="fallback", messages=[{"role": "user", "content": "Hello"}], max_tokens=5,
            extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
        completion = answer.parse()
        spans = _spans_of(receiver, CALLER_TRACE, 5)
        server = next(s for s in spans if s.kind == 2)
        assert server.parent_span_id == CALLER_SPAN and server.name == "POST /v1/chat/completions"
        assert server.service == "switchyard-test"
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["switchyard.request_id"] == answer.headers["x-request-id"]
        assert server.attributes["gen_ai.request.model"] == "fallback"
        assert server.attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
        assert server.attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
        children = [s for s in spans if s is not server]
        assert all(s.parent_span_id == server.span_id for s in children), spans
        names = [s.name for s in sorted(children, key=lambda s: s.name)]
        assert sorted(names) == sorted(["switchyard.admit", "chat status-503", "chat ok", "switchyard.settle"]), names
        failed = next(s for s in children if s.name == "chat status-503")
        ok = next(s for s in children if s.name == "chat ok")
        assert failed.error and failed.attributes["error.type"] and not ok.error
        for attempt in (failed, ok):
            assert attempt.kind == 3  # CLIENT
            assert attempt.attributes["gen_ai.operation.name"] == "chat"
            assert attempt.attributes["gen_ai.provider.name"] == "openai"
            assert attempt.attributes["server.address"] == "127.0.0.1"
        settle = next(s for s in children if s.name == "switchyard.settle")
        assert settle.attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
        assert settle.attributes["switchyard.cost_usd"] == completion.usage.model_extra["cost"]

        # A stream: its server span ends after the last chunk, with the usage it was billed.
        stream = client.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "Hi"}],
                                                stream=True, stream_options={"include_usage": True})
        usage = [c.usage for c in stream if c.usage][0]
        deadline = time.monotonic() + 30
        while not (streamed := [s for s in receiver.received if s.kind == 2 and s.trace_id != CALLER_TRACE
                                and s.attributes.get("gen_ai.request.model") == "gpt-5.2"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert streamed[0].parent_span_id == ""  # no traceparent: a trace of its own
        assert streamed[0].attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
        # Nothing of the prompt is in any span.
        assert not any("Hello" in str(v) or "Hi" == v for s in receiver.received for v in s.attributes.values())
    finally:
        gw.stop()
        receiver.stop()


def test_only_sampled_requests_are_traced(tmp_path: Path, upstream: StandInUpstream) -> None:
    """sample_ratio 0: no trace of its own, but a caller's sampled traceparent is always followed
    and an unsampled one never."""
    receiver = OtlpReceiver().start()
    config = upstream_config(upstream)
    config["tracing"] = {"otlp_endpoint": receiver.endpoint, "sample_ratio": 0}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    try:
        client = gw.client(USER_KEY)
        hello = [{"role": "user", "content": "Hello"}]
        for _ in range(5):
            client.chat.completions.create(model="gpt-5.2", messages=hello)
        client.chat.completions.create(model="gpt-5.2", messages=hello,
                                       extra_headers={"traceparent": f"00-{'1' * 32}-{CALLER_SPAN}-00"})
        client.chat.completions.create(model="gpt-5.2", messages=hello,
                                       extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
        spans = _spans_of(receiver, CALLER_TRACE, 4)
        time.sleep(0.5)  # anything else exported meanwhile would be here too
        assert {s.trace_id for s in receiver.received} == {CALLER_TRACE}, receiver.received
        assert len([s for s in spans if s.kind == 2]) == 1
    finally:
        gw.stop()
        receiver.stop()
