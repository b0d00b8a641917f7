"""OpenTelemetry traces, opt-in (`tracing.otlp_endpoint` or OTEL_EXPORTER_OTLP_ENDPOINT): one
server span per request, continuing the caller's `traceparent`, with child spans for admission,
each upstream attempt and settlement, carrying the GenAI semantic conventions (gen_ai.*).

Off, every helper here is a check of one module global and returns a shared no-op: tracing that
is not configured costs the request path nothing, and the SDK is never imported.
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Iterable
from typing import Any

_tracer: Any = None  # the SDK's tracer once configured; None: tracing off
_provider: Any = None
_ratio = 1.0  # the share of requests traced that come without a sampled traceparent
_request_span: contextvars.ContextVar[Any] = contextvars.ContextVar("switchyard_request_span", default=None)

# gen_ai.provider.name per provider module (the convention's well-known values).
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "local": "switchyard.local",
                   "compatible": "openai"}


class _NoSpan:
    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def set(self, attributes: dict[str, Any]) -> None:
        return None


_NO_SPAN = _NoSpan()


class _Span:
    """A child span, current while its block runs; an exception marks it failed."""
    __slots__ = ("_cm", "_span")

    def __init__(self, name: str, attributes: dict[str, Any], kind: Any) -> None:
        self._cm = _tracer.start_as_current_span(name, attributes=attributes, kind=kind, record_exception=False,
                                                 set_status_on_exception=False)
        self._span: Any = None

    def __enter__(self) -> _Span:
        self._span = self._cm.__enter__()
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None:
            _failed(self._span, exc)
        self._cm.__exit__(None, None, None)
        return False

    def set(self, attributes: dict[str, Any]) -> None:
        self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def configure(endpoint: str | None, service_name: str = "switchyard", sample_ratio: float = 1.0) -> bool:
    """Start exporting spans to an OTLP/HTTP collector at `endpoint` (its base or its /v1/traces).
    `sample_ratio`: the share of requests traced (a caller's sampled `traceparent` always is); a
    traced request costs about as much CPU again as an untraced one, an untraced one nothing."""
    global _tracer, _provider, _ratio
    if not endpoint:
        return False
    _ratio = sample_ratio
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
    _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _tracer = _provider.get_tracer("switchyard")
    return True


def shutdown() -> None:
    """Flush what is buffered (a worker stopping)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    """Tracing is configured (this request may still be unsampled: see `traced`)."""
    return _tracer is not None


def traced() -> bool:
    """The current request is being traced."""
    return _tracer is not None and _request_span.get() is not None


def start_request(method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> Any:
    """The server span of one request, current from now on (call `end_request` with what this
    returns), or None when the request is not sampled. The caller's W3C `traceparent`/`tracestate`
    make it a child of the caller's span, and its sampled flag decides."""
    if _tracer is None:
        return None
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
    parent = carrier.get("traceparent")
    if parent is not None and len(parent) == 55:
        if not int(parent[-2:], 16) & 1:
            return None  # the caller does not trace this one
    elif _ratio < 1.0 and random.random() >= _ratio:
        return None
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ctx = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    span = _tracer.start_span(f"{method} {path}", context=ctx, kind=trace.SpanKind.SERVER,
                              attributes={"http.request.method": method, "url.path": path})
    token = context.attach(trace.set_span_in_context(span))
    marker = _request_span.set(span)
    return span, token, marker


def end_request(started: Any, status: int, request_id: str) -> None:
    if started is None:
        return
    from opentelemetry import context, trace

    span, token, marker = started
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("switchyard.request_id", request_id)
    if status >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.set_attribute("error.type", str(status))
    span.end()
    _request_span.reset(marker)
    context.detach(token)


def span(name: str, attributes: dict[str, Any] | None = None) -> _Span | _NoSpan:
    """A child span of the current request's (internal work: admission, settlement)."""
    if _tracer is None or _request_span.get() is None:
        return _NO_SPAN
    from opentelemetry import trace

    return _Span(name, attributes or {}, trace.SpanKind.INTERNAL)


def upstream_attempt(operation: str, dep: Any) -> _Span | _NoSpan:
    """A client span per upstream attempt at deployment `dep`, named as the GenAI conventions say:
    `{operation} {model}` (the model the upstream knows)."""
    if _tracer is None or _request_span.get() is None:
        return _NO_SPAN
    from urllib.parse import urlsplit

    from opentelemetry import trace

    cfg = dep.config
    attributes = {"gen_ai.operation.name": operation,
                  "gen_ai.provider.name": _PROVIDER_NAMES.get(cfg.provider, cfg.provider),
                  "gen_ai.request.model": cfg.model, "switchyard.deployment": cfg.id}
    host = urlsplit(cfg.base_url).hostname if cfg.base_url else None
    if host:
        attributes["server.address"] = host
    return _Span(f"{operation} {cfg.model}", attributes, trace.SpanKind.CLIENT)


def operation_of(endpoint: str) -> str:
    """The GenAI operation an endpoint performs."""
    return _OPERATIONS.get(endpoint, "chat")


_OPERATIONS = {"/v1/completions": "text_completion", "/v1/embeddings": "embeddings"}


def on_request(attributes: dict[str, Any]) -> None:
    """Attributes for the request's server span (the model asked for, what was billed)."""
    if _tracer is None:
        return
    current = _request_span.get()
    if current is not None:
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def _failed(span: Any, exc: BaseException) -> None:
    from opentelemetry import trace

    code = getattr(exc, "code", None)
    span.set_attribute("error.type", str(code or type(exc).__name__))
    status = getattr(exc, "status", None)
    if status is not None:
        span.set_attribute("http.response.status_code", int(status))
    span.set_status(trace.Status(trace.StatusCode.ERROR))  # no message: an upstream's may quote the prompt
