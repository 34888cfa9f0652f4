"""OpenTelemetry's SDK behind one small object: a tracer that exports by OTLP (gRPC or
HTTP/protobuf) from its own thread, never making a request wait.

Spans wait in a bounded queue. The gate below counts what it hands the SDK's batch
processor and what the exporter took, and drops a span (counted in
edge_agent_trace_spans_total{outcome="dropped"}) before that queue could overflow: the
SDK itself would drop silently. An export that fails (collector down) is counted too
(outcome="export_failed"); requests never see either.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from edge_agent.telemetry.settings import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from edge_agent.telemetry.metrics import Metrics

log = logging.getLogger("edge_agent.telemetry.tracing")

_PROPAGATOR = TraceContextTextMapPropagator()
_BATCH = 512


class _Gate:
    """Spans handed to the batch processor and not yet taken by the exporter."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        self.lock = threading.Lock()

    def enter(self) -> bool:
        with self.lock:
            if self.waiting >= self.limit:
                return False
            self.waiting += 1
            return True

    def leave(self, count: int) -> None:
        with self.lock:
            self.waiting = max(0, self.waiting - count)


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, gate: _Gate, metrics: Metrics) -> None:
        self.inner = inner
        self.gate = gate
        spans = metrics.trace_spans
        self._exported = spans.labels("exported")
        self._failed = spans.labels("export_failed")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.leave(len(spans))
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter bug must not kill the export thread
            log.warning("trace export failed: %r", exc)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._exported.inc(len(spans))
        else:
            self._failed.inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _GatedProcessor(SpanProcessor):
    def __init__(self, inner: BatchSpanProcessor, gate: _Gate, metrics: Metrics) -> None:
        self.inner = inner
        self.gate = gate
        self._dropped = metrics.trace_spans.labels("dropped")

    def on_start(self, span: object, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self.gate.enter():
            self.inner.on_end(span)
        else:
            self._dropped.inc()

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _exporter(config: TracingConfig, environ: Mapping[str, str]) -> SpanExporter:
    resolved = config.resolved(environ)
    if resolved.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=resolved.endpoint,
            insecure=not resolved.tls,
            timeout=config.export_timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=resolved.endpoint, timeout=config.export_timeout_s)


class Tracing:
    """The process's tracer. `start` continues a W3C traceparent (or starts a trace);
    spans are ended by their owners; `shutdown` flushes what is queued, bounded."""

    def __init__(
        self,
        config: TracingConfig,
        environ: Mapping[str, str],
        metrics: Metrics,
        exporter: SpanExporter | None = None,
    ) -> None:
        self.capture_content = config.capture_content
        resolved = config.resolved(environ)
        self.endpoint = resolved.endpoint
        gate = _Gate(config.max_queue)
        batch = BatchSpanProcessor(
            _CountingExporter(exporter or _exporter(config, environ), gate, metrics),
            # One more than the gate lets through: the SDK's queue never overflows.
            max_queue_size=config.max_queue + 1,
            max_export_batch_size=min(_BATCH, config.max_queue),
            schedule_delay_millis=1000,
            export_timeout_millis=config.export_timeout_s * 1000,
        )
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": resolved.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        self.provider.add_span_processor(_GatedProcessor(batch, gate, metrics))
        self.tracer = self.provider.get_tracer("edge_agent")

    def start(
        self,
        name: str,
        traceparent: str | None,
        start_ns: int,
        kind: trace.SpanKind = trace.SpanKind.SERVER,
        tracestate: str | None = None,
    ) -> Span:
        carrier = {"traceparent": traceparent} if traceparent else {}
        if traceparent and tracestate:
            carrier["tracestate"] = tracestate
        context = _PROPAGATOR.extract(carrier) if carrier else None
        return self.tracer.start_span(name, context=context, kind=kind, start_time=start_ns)

    def child(
        self,
        parent: Span | SpanContext,
        name: str,
        start_ns: int,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    ) -> Span:
        if isinstance(parent, SpanContext):
            parent = NonRecordingSpan(parent)
        context = trace.set_span_in_context(parent)
        return self.tracer.start_span(name, context=context, kind=kind, start_time=start_ns)

    def shutdown(self) -> None:
        self.provider.shutdown()
