"""OpenTelemetry's SDK behind one small object: a tracer that exports by OTLP (gRPC or
HTTP/protobuf) from its own thread, never making a request wait.

Spans wait in a bounded queue. The gate below counts what it hands the SDK's batch
processor and what the exporter took, and drops a span (counted in
edge_agent_trace_spans_total{outcome="dropped"}) before that queue could overflow: the
SDK itself would drop silently. An export that fails (collector down) is counted too
(outcome="export_failed"); requests never see either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from edge_agent.telemetry.settings import ResolvedTracing, TracingConfig

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from edge_agent.telemetry.metrics import Metrics

log = logging.getLogger("edge_agent.telemetry.tracing")

_PROPAGATOR = TraceContextTextMapPropagator()
_BATCH = 512
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_WARN_EVERY_S = 60.0
# The SDK's exporters log every failed batch (and each retry): the agent says it once a
# minute itself and counts every span.
for _name in (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http",
):
    logging.getLogger(_name).setLevel(logging.CRITICAL)
_UNSET = Status(StatusCode.UNSET)


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
        self._warned_at = float("-inf")

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
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                # Once per minute while the collector is away; the metric counts all.
                log.warning(
                    "trace export to the collector failed; %d spans dropped "
                    '(edge_agent_trace_spans_total{outcome="export_failed"} counts them)',
                    len(spans),
                )
                self._warned_at = now
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
        return None  # the agent's spans are exported when they end (LeanSpan.end)

    def on_end(self, span: ReadableSpan) -> None:
        if self.gate.enter():
            self.inner.on_end(span)
        else:
            self._dropped.inc()

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


_OVERWRITTEN = (
    "the OTLP exporter cannot load OpenTelemetry's protos ({exc}): another package "
    "(xds-protos ships an older copy in the same files) overwrote opentelemetry-proto's. "
    "Reinstall it: pip install --no-deps --force-reinstall opentelemetry-proto"
)


def _exporter(config: TracingConfig, resolved: ResolvedTracing) -> SpanExporter:
    try:
        from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(_OVERWRITTEN.format(exc=exc)) from None
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


class LeanSpan:
    """A span the agent fills in and ends itself, exported as the SDK's `ReadableSpan`.

    The SDK's own `Span` validates and locks on every attribute (measured: ~16 µs for a
    span of twenty attributes, ~47 µs with its processor, against ~1.3 µs for a
    ReadableSpan); the agent's spans are written by one request's code, with attribute
    values it chose, so that work buys nothing on the request path. Only sampled spans
    exist: an unsampled request gets None and costs nothing more.
    """

    __slots__ = (
        "_ended",
        "_tracing",
        "attributes",
        "context",
        "kind",
        "name",
        "parent",
        "start_ns",
        "status",
    )

    def __init__(
        self,
        tracing: Tracing,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: trace.SpanKind,
        start_ns: int,
    ) -> None:
        self._tracing = tracing
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.start_ns = start_ns
        self.attributes: dict[str, Any] = {}
        self.status = _UNSET
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self.context

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Status) -> None:
        self.status = status

    def end(self, end_ns: int | None = None) -> None:
        if not self._ended:
            self._ended = True
            self._tracing.export(self, time.time_ns() if end_ns is None else end_ns)


class Tracing:
    """The process's tracer. `start` continues a W3C traceparent (or starts a trace) and
    returns a span only when it is sampled; `child` makes its children; spans are ended
    by their owners; `shutdown` sends what is queued, bounded."""

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
            _CountingExporter(exporter or _exporter(config, resolved), gate, metrics),
            # One more than the gate lets through: the SDK's queue never overflows.
            max_queue_size=config.max_queue + 1,
            max_export_batch_size=min(_BATCH, config.max_queue),
            schedule_delay_millis=1000,
            export_timeout_millis=config.export_timeout_s * 1000,
        )
        self.processor = _GatedProcessor(batch, gate, metrics)
        self.resource = Resource.create({"service.name": resolved.service_name})
        self.scope = InstrumentationScope("edge_agent")
        self.sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
        self._ids = RandomIdGenerator()

    def start(
        self,
        name: str,
        traceparent: str | None,
        start_ns: int,
        kind: trace.SpanKind = trace.SpanKind.SERVER,
        tracestate: str | None = None,
    ) -> LeanSpan | None:
        """A span continuing `traceparent` (or a new trace), if it is sampled."""
        parent: SpanContext | None = None
        context = None
        if traceparent:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            context = _PROPAGATOR.extract(carrier)
            found = trace.get_current_span(context).get_span_context()
            parent = found if found.is_valid else None
        trace_id = parent.trace_id if parent is not None else self._ids.generate_trace_id()
        decision = self.sampler.should_sample(context, trace_id, name, kind)
        if not decision.decision.is_sampled():
            return None
        ctx = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            False,
            _SAMPLED,
            parent.trace_state if parent is not None else decision.trace_state,
        )
        return LeanSpan(self, name, ctx, parent, kind, start_ns)

    def child(
        self,
        parent: LeanSpan,
        name: str,
        start_ns: int,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    ) -> LeanSpan:
        up = parent.context
        ctx = SpanContext(
            up.trace_id, self._ids.generate_span_id(), False, _SAMPLED, up.trace_state
        )
        return LeanSpan(self, name, ctx, up, kind, start_ns)

    def export(self, span: LeanSpan, end_ns: int) -> None:
        self.processor.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=self.resource,
                attributes=span.attributes,
                kind=span.kind,
                status=span.status,
                start_time=span.start_ns,
                end_time=end_ns,
                instrumentation_scope=self.scope,
            )
        )

    def force_flush(self) -> bool:
        return self.processor.force_flush()

    def shutdown(self) -> None:
        self.processor.shutdown()

    async def close(self, timeout_s: float) -> None:
        """Send what is queued, for at most `timeout_s`. The SDK's shutdown blocks (it
        joins its exporting thread, batch after batch, for up to 30 s with a collector
        down): it runs on a daemon thread the process does not wait for."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def run() -> None:
            try:
                self.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be gone by then
                    loop.call_soon_threadsafe(done.set)

        threading.Thread(target=run, name="edge-agent-trace-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        except TimeoutError:
            log.warning("traces still queued after %.0f s at shutdown were dropped", timeout_s)
