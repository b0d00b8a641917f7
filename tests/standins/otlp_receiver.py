"""An OTLP/HTTP trace receiver (what a collector listens on at :4318): POST /v1/traces with an
ExportTraceServiceRequest in protobuf, as the OpenTelemetry SDK's exporter sends it. Spans are
kept, flattened, for tests to inspect the tree and its attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

from tests.standins.server import ThreadedStandIn


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    error: bool
    service: str


def _value(v: Any) -> Any:
    field = v.WhichOneof("value")
    return getattr(v, field) if field else None


class OtlpReceiver(ThreadedStandIn):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._traces)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.headers.get("content-type") == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            service = {a.key: _value(a.value) for a in resource_spans.resource.attributes}.get("service.name", "")
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.received.append(Span(
                        s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                        {a.key: _value(a.value) for a in s.attributes}, s.status.code == 2, service))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")
