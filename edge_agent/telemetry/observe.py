"""What the agent tells about each request, from one record of it: the request log line,
the trace (OpenTelemetry GenAI conventions), and Envoy's access-log metadata.

`outcome(ex)` reads what the request's `Exchange` decided (sans-IO). `Trail` is a traced
request's notebook: the steps that took time, with their clocks, and the answer's facts;
its spans are made when the request ends. Nothing here runs for a request when all three
signals are off (`Agent.observer` is None), and a trace is kept only for a request whose
span is sampled. Prompt and completion text reach a span only with
`telemetry.tracing.capture_content`; keys never do, nor does anything reach the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceFlags

from edge_agent.api.openai import Endpoint
from edge_agent.limits.stage import answer_usage

if TYPE_CHECKING:
    from edge_agent.api.schema import Assembler
    from edge_agent.config import Config
    from edge_agent.extproc.attempt import Attempt
    from edge_agent.extproc.exchange import Exchange
    from edge_agent.telemetry.tracing import LeanSpan, Tracing

requests_log = logging.getLogger("edge_agent.requests")
log = logging.getLogger("edge_agent.telemetry")

# gen_ai.operation.name by endpoint.
_OPERATION = {
    Endpoint.CHAT: "chat",
    Endpoint.MESSAGES: "chat",
    Endpoint.COMPLETIONS: "text_completion",
    Endpoint.EMBEDDINGS: "embeddings",
}
# gen_ai.provider.name: the conventions' well-known values by provider type; other
# types are named by their configured provider name.
_PROVIDER_NAME = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure_openai": "azure.ai.openai",
    "mistral": "mistral_ai",
    "groq": "groq",
    "cohere": "cohere",
    "gemini": "gcp.gemini",
    "bedrock": "aws.bedrock",
}
# Read of an answer for its facts (finish reasons, model, text): past this, skipped.
_MAX_ANSWER_BYTES = 4 << 20
# Captured text on a span (capture_content): bounded, whatever the answer's size.
_MAX_CONTENT_CHARS = 16_384
_MAX_CLIENT_CHARS = 256


def provider_name(provider_type: str, name: str) -> str:
    return _PROVIDER_NAME.get(provider_type, name)


class Trail:
    """A traced request's notebook (only for a recording span)."""

    __slots__ = (
        "_assembler",
        "_chunks",
        "_size",
        "answer",
        "first_chunk_ns",
        "sent_ns",
        "span",
        "steps",
    )

    def __init__(self, span: LeanSpan) -> None:
        self.span = span
        # (name, start ns, end ns, attributes, index of the parent step or -1), wall clock
        self.steps: list[tuple[str, int, int, dict[str, Any], int]] = []
        self.first_chunk_ns = 0
        self.sent_ns = 0  # when the request went to its provider (single target)
        self.answer: dict[str, Any] | None = None  # the answer in the client's schema
        self._assembler: Assembler | None = None
        self._chunks: list[bytes] | None = None
        self._size = 0

    def step(self, name: str, start_ns: int, end_ns: int, under: int = -1, **attrs: Any) -> int:
        self.steps.append((name, start_ns, end_ns, attrs, under))
        return len(self.steps) - 1

    def read_answer(self, assembler: Assembler | None) -> None:
        """Read the answer's body as it passes: a stream through `assembler`, JSON whole."""
        if assembler is not None:
            self._assembler = assembler
        else:
            self._chunks = []

    def body(self, chunk: bytes, end_of_stream: bool) -> None:
        if not self.first_chunk_ns and chunk:
            self.first_chunk_ns = time.time_ns()
        self._size += len(chunk)
        if self._size > _MAX_ANSWER_BYTES:
            self._assembler = self._chunks = None
            return
        if self._assembler is not None:
            self._assembler.feed(chunk)
            if end_of_stream:
                self.answer = self._assembler.result()
        elif self._chunks is not None:
            self._chunks.append(chunk)
            if end_of_stream:
                try:
                    parsed = orjson.loads(b"".join(self._chunks))
                except orjson.JSONDecodeError:
                    parsed = None
                self.answer = parsed if isinstance(parsed, dict) else None


def _finish_reasons(answer: Mapping[str, Any]) -> list[str]:
    choices = answer.get("choices")
    if isinstance(choices, list):  # OpenAI chat and completions
        return [
            str(c["finish_reason"])
            for c in choices
            if isinstance(c, dict) and c.get("finish_reason") is not None
        ]
    stop = answer.get("stop_reason")  # Anthropic Messages
    return [str(stop)] if stop is not None else []


def _answer_text(answer: Mapping[str, Any]) -> str:
    parts: list[str] = []
    choices = answer.get("choices")
    if isinstance(choices, list):
        for c in choices:
            if not isinstance(c, dict):
                continue
            message = c.get("message")
            text = message.get("content") if isinstance(message, dict) else c.get("text")
            if isinstance(text, str):
                parts.append(text)
    content = answer.get("content")
    if isinstance(content, list):
        parts += [b["text"] for b in content if isinstance(b, dict) and "text" in b]
    return "\n".join(parts)[:_MAX_CONTENT_CHARS]


def _prompt_text(body: Mapping[str, Any]) -> str:
    # Bounded, and as the client sent it (the parsed request; redaction of captured
    # prompts is for the guardrails to add).
    return orjson.dumps(body.get("messages", body.get("prompt", body.get("input", ""))))[
        :_MAX_CONTENT_CHARS
    ].decode("utf-8", "replace")


def outcome(ex: Exchange) -> dict[str, Any]:
    """What happened to a request, for its log line, span, access-log metadata and audit
    record: made once, when the request's last message is answered or it ends (nothing
    these read changes after that), and shared."""
    if ex.record is not None:
        return ex.record
    req = ex.request
    target = ex.target
    used = answer_usage(ex) if target is not None else None
    caller = ex.caller
    out: dict[str, Any] = {
        "request_id": ex.req_headers.get("x-request-id", "")[:_MAX_CLIENT_CHARS],
        "method": ex.req_headers.get(":method", ""),
        # What the client sent is bounded: a 1 MB model name is one line, not 1 MB of log.
        "path": ex.path[:_MAX_CLIENT_CHARS],
        "status": ex.status or "aborted",
        "tenant": caller.tenant,
        "model": req.model[:_MAX_CLIENT_CHARS] if req is not None else "",
        "cache": ex.cache_result,
        "stream": bool(req is not None and req.stream),
        "latency_ms": round((ex.agent.clock() - ex.started) * 1000, 3),
    }
    # Absent rather than empty: what did not happen has no field.
    if caller.key is not None:
        out["key"] = caller.key.name
    if target is not None:
        out["provider"], out["target_model"] = target.provider.name, target.model
    if used is not None:
        out["input_tokens"], out["output_tokens"], out["cost_usd"] = used
        out["cost_usd"] = round(out["cost_usd"], 8)
    if ex.saved_usd:
        out["saved_usd"] = round(ex.saved_usd, 8)
    if ex.refusal:
        out["refusal"] = ex.refusal
    if ex.findings:  # types and counts only
        out["pii"] = ",".join(f"{k}:{v}" for k, v in sorted(ex.findings.items()))
    if ex.trace is not None:
        ctx = ex.trace.span.get_span_context()
        out["trace_id"], out["span_id"] = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    ex.record = out
    return out


class Observer:
    """The request log, traces and access-log metadata; one per agent process."""

    __slots__ = ("access_log", "request_log", "tracing")

    def __init__(self, config: Config) -> None:
        self.request_log = config.telemetry.request_log
        self.access_log = config.envoy.access_log.enabled
        self.tracing: Tracing | None = None  # attached by the runtime (it exports)

    @staticmethod
    def wanted(config: Config) -> bool:
        return (
            config.telemetry.request_log
            or config.envoy.access_log.enabled
            or config.telemetry.tracing.enabled
        )

    # ---- the downstream request ------------------------------------------------------
    def begin(self, ex: Exchange, traceparent: str | None) -> None:
        tracing = self.tracing
        if tracing is None:
            return
        # Envoy's context (gRPC metadata, no tracestate), else the client's headers.
        headers = ex.req_headers
        span = tracing.start(
            "edge-agent request",
            traceparent or headers.get("traceparent"),
            time.time_ns() - int((ex.agent.clock() - ex.started) * 1e9),
            tracestate=None if traceparent else headers.get("tracestate"),
        )
        if span is not None:  # sampled
            ex.trace = Trail(span)

    def metadata(self, ex: Exchange) -> dict[str, Any] | None:
        """Envoy's dynamic metadata for its access log (None when not configured)."""
        if not self.access_log:
            return None
        return outcome(ex)

    def finish(self, ex: Exchange) -> None:
        try:
            self._finish(ex)
        except Exception:  # telling about a request must never fail it
            log.exception("could not record the request's log line or trace")

    def _finish(self, ex: Exchange) -> None:
        logging_on = self.request_log and requests_log.isEnabledFor(logging.INFO)
        trail = ex.trace
        if not logging_on and trail is None:
            return
        out = outcome(ex)
        if trail is not None:
            self._end_trace(ex, trail, out)
        if logging_on:
            requests_log.info("request", extra={"fields": out})

    def _end_trace(self, ex: Exchange, trail: Trail, out: dict[str, Any]) -> None:
        tracing = self.tracing
        assert tracing is not None
        span = trail.span
        req = ex.request
        operation = _OPERATION.get(ex.endpoint) if ex.endpoint is not None else None
        name = f"{operation} {out['model']}" if operation and out["model"] else ex.path
        span.update_name(name or "edge-agent request")
        attrs: dict[str, Any] = {
            "http.request.method": out["method"],
            "url.path": ex.path,
            "edge_agent.cache.result": out["cache"],
            "edge_agent.tenant": out["tenant"],
        }
        if out["request_id"]:
            attrs["edge_agent.request_id"] = out["request_id"]
        if "key" in out:
            attrs["edge_agent.key"] = out["key"]
        if "pii" in out:
            attrs["edge_agent.guardrails.findings"] = out["pii"]
        if operation:
            attrs["gen_ai.operation.name"] = operation
        if req is not None:
            attrs["gen_ai.request.model"] = out["model"]
            _request_attrs(attrs, req.body, req.temperature)
            if tracing.capture_content:
                attrs["gen_ai.input.messages"] = _prompt_text(req.body)
        target = ex.target
        if target is not None:
            attrs["gen_ai.provider.name"] = provider_name(
                target.provider.type, target.provider.name
            )
            attrs["edge_agent.provider"] = target.provider.name
        _usage_attrs(attrs, out)
        answer = trail.answer
        if answer is not None:
            _answer_attrs(attrs, answer, tracing.capture_content)
        if ex.semantic is not None and ex.semantic.hit is not None:
            attrs["edge_agent.cache.score"] = round(ex.semantic.hit.score, 4)
        status = out["status"]
        if status.isdigit():
            attrs["http.response.status_code"] = int(status)
            if int(status) >= 400:
                attrs["error.type"] = out.get("refusal") or status
                if int(status) >= 500:
                    span.set_status(Status(StatusCode.ERROR))
        elif status == "aborted":
            attrs["error.type"] = "aborted"
        span.set_attributes(attrs)
        made: list[LeanSpan] = []
        for step_name, start_ns, end_ns, step_attrs, under in trail.steps:
            parent = made[under] if under >= 0 else span
            child = tracing.child(parent, step_name, start_ns, _kind(step_name))
            if step_attrs:
                child.set_attributes(step_attrs)
            child.end(end_ns)
            made.append(child)
        if ex.call is not None and trail.sent_ns:
            self._provider_span(ex, trail, out, operation or "call")
        span.end()

    def _provider_span(
        self, ex: Exchange, trail: Trail, out: dict[str, Any], operation: str
    ) -> None:
        """The provider call of a single-target request (a chain's attempts make theirs)."""
        tracing = self.tracing
        target = ex.target
        assert tracing is not None and target is not None
        sent = trail.sent_ns
        span = tracing.child(trail.span, f"{operation} {target.model}", sent, SpanKind.CLIENT)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider_name(target.provider.type, target.provider.name),
            "gen_ai.request.model": target.model,
            "edge_agent.provider": target.provider.name,
            "server.address": target.provider.host,
        }
        _usage_attrs(attrs, out)
        if trail.answer is not None:
            _answer_attrs(attrs, trail.answer, False)
        status = out["status"]
        if status.isdigit():
            attrs["http.response.status_code"] = int(status)
            if int(status) >= 400:
                attrs["error.type"] = status
                span.set_status(Status(StatusCode.ERROR))
        if trail.first_chunk_ns and out["stream"]:
            # Time to first token: from sending to the first chunk of the answer.
            first = tracing.child(span, "gen_ai.first_token", sent)
            first.end(trail.first_chunk_ns)
            attrs["gen_ai.response.time_to_first_chunk"] = (trail.first_chunk_ns - sent) / 1e9
        span.set_attributes(attrs)
        span.end()

    # ---- one failover attempt (the upstream filter) ----------------------------------
    def begin_attempt(self, attempt: Attempt, traceparent: str | None, number: int) -> None:
        tracing = self.tracing
        if tracing is None or attempt.target is None:
            return
        target = attempt.target
        span = tracing.start(
            f"attempt {target.model}", traceparent, time.time_ns(), kind=SpanKind.CLIENT
        )
        if span is not None:
            span.set_attributes(
                {
                    "gen_ai.provider.name": provider_name(
                        target.provider.type, target.provider.name
                    ),
                    "gen_ai.request.model": target.model,
                    "edge_agent.provider": target.provider.name,
                    "edge_agent.failover.attempt": number,
                    "server.address": target.provider.host,
                }
            )
            attempt.trace = span

    def end_attempt(self, attempt: Attempt, status: str | None) -> None:
        try:
            self._end_attempt(attempt, status)
        except Exception:  # telling about an attempt must never fail it
            log.exception("could not record a failover attempt's span")

    def _end_attempt(self, attempt: Attempt, status: str | None) -> None:
        span = attempt.trace
        if span is None:
            return
        attempt.trace = None
        call = attempt.provider_call
        if call is not None and call.used is not None:
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": call.used[0],
                    "gen_ai.usage.output_tokens": call.used[1],
                    "edge_agent.cost_usd": round(call.used[2], 8),
                }
            )
        if status and status.isdigit():
            span.set_attribute("http.response.status_code", int(status))
            if int(status) >= 400:
                span.set_attribute("error.type", status)
                span.set_status(Status(StatusCode.ERROR))
        else:
            span.set_attribute("error.type", "no_answer")
            span.set_status(Status(StatusCode.ERROR))
        span.end()


def _request_attrs(
    attrs: dict[str, Any], body: Mapping[str, Any], temperature: float | None
) -> None:
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attrs["gen_ai.request.max_tokens"] = max_tokens
    if temperature is not None:
        attrs["gen_ai.request.temperature"] = float(temperature)
    top_p = body.get("top_p")
    if isinstance(top_p, (int, float)) and not isinstance(top_p, bool):
        attrs["gen_ai.request.top_p"] = float(top_p)


def _usage_attrs(attrs: dict[str, Any], out: Mapping[str, Any]) -> None:
    if "input_tokens" in out:
        attrs["gen_ai.usage.input_tokens"] = out["input_tokens"]
        attrs["gen_ai.usage.output_tokens"] = out["output_tokens"]
        attrs["edge_agent.cost_usd"] = out["cost_usd"]
    if "saved_usd" in out:
        attrs["edge_agent.cache.saved_usd"] = out["saved_usd"]


def _answer_attrs(attrs: dict[str, Any], answer: Mapping[str, Any], content: bool) -> None:
    model = answer.get("model")
    if isinstance(model, str):
        attrs["gen_ai.response.model"] = model
    answer_id = answer.get("id")
    if isinstance(answer_id, str):
        attrs["gen_ai.response.id"] = answer_id
    reasons = _finish_reasons(answer)
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    if content:
        attrs["gen_ai.output.messages"] = _answer_text(answer)


def _kind(step: str) -> SpanKind:
    return SpanKind.CLIENT if step.startswith("cache.lookup shared") else SpanKind.INTERNAL


def traceparent_of(span: LeanSpan) -> str | None:
    """The W3C traceparent naming `span` (for a child begun elsewhere)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    flags = "01" if ctx.trace_flags & TraceFlags.SAMPLED else "00"
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags}"


def semantic_steps(trail: Trail, marks: tuple[int, ...], beside: bool) -> None:
    """The semantic lookup's embedding, search and verification, from its clock marks
    (perf_counter_ns: start, embedded, searched, verified; a step that did not run has
    no mark, and no span)."""
    if len(marks) < 2:
        return
    offset = time.time_ns() - time.perf_counter_ns()
    names = ("cache.semantic.embed", "cache.semantic.search", "cache.semantic.verify")
    lookup = trail.step(
        "cache.lookup semantic",
        marks[0] + offset,
        marks[-1] + offset,
        **{"edge_agent.cache.semantic.beside": beside},
    )
    for name, start, end in zip(names, marks, marks[1:], strict=False):
        trail.step(name, start + offset, end + offset, lookup)
