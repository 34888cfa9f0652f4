"""The ext_proc gRPC servicer: protobuf ⇄ Exchange, nothing else.

This is the only module that speaks ext_proc protobuf. Nested messages are built in
place (`resp.request_headers.response...`): assigning a sub-message copies it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Protocol

import grpc
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValueOption
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from edge_agent.api import errors
from edge_agent.extproc.attempt import STAGE_METADATA, Attempt
from edge_agent.extproc.decisions import BodyMode, Continue, Decision, Respond
from edge_agent.extproc.exchange import Exchange
from edge_agent.pipeline.base import Pending
from edge_agent.telemetry.settings import METADATA_NAMESPACE

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger("edge_agent.extproc.servicer")

_ATTRIBUTES = "envoy.filters.http.ext_proc"


class Handler(Protocol):
    """One HTTP request as one of the agent's filters sees it: the downstream `Exchange`,
    or a failover chain's upstream `Attempt`."""

    path: str
    done: bool  # Envoy needs nothing more from the agent for this request

    def request_headers(
        self, headers: Mapping[str, str], end_of_stream: bool, attributes: Mapping[str, str]
    ) -> Decision: ...

    def request_body(self, body: bytes, end_of_stream: bool) -> Decision | Pending: ...

    def response_headers(self, headers: Mapping[str, str]) -> Decision: ...

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Decision: ...

    def close(self) -> None: ...


_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_BODY_MODES = {
    BodyMode.NONE: ProcessingMode.NONE,
    BodyMode.BUFFERED: ProcessingMode.BUFFERED,
    BodyMode.STREAMED: ProcessingMode.STREAMED,
}
_INTERNAL_ERROR = errors.ApiError(
    500,
    "The edge agent failed to process this request; it has been logged. Retry, and report "
    "it if it persists.",
    type="api_error",
    code="edge_agent_internal_error",
)


def headers_to_dict(headers: HeaderMap) -> dict[str, str]:
    # Envoy 1.40 sends values in raw_value (bytes); `value` is empty.
    out: dict[str, str] = {}
    for h in headers.headers:
        value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        prev = out.get(h.key)
        out[h.key] = value if prev is None else f"{prev},{value}"
    return out


def _fill_common(common: pb.CommonResponse, decision: Continue) -> None:
    if decision.set_headers or decision.body is not None:
        mutation = common.header_mutation
        for key, value in decision.set_headers:
            opt = mutation.set_headers.add()
            opt.header.key = key
            opt.header.raw_value = value.encode()
            opt.append_action = _OVERWRITE
        if decision.body is not None and not decision.chunk:
            # Envoy answers 500 if a mutated body keeps its old content-length.
            opt = mutation.set_headers.add()
            opt.header.key = "content-length"
            opt.header.raw_value = str(len(decision.body)).encode()
            opt.append_action = _OVERWRITE
        if decision.body is not None:
            common.body_mutation.body = decision.body
    if decision.remove_headers:
        common.header_mutation.remove_headers.extend(decision.remove_headers)
    if decision.clear_route_cache:
        common.clear_route_cache = True


def _immediate(resp: pb.ProcessingResponse, decision: Respond) -> None:
    imm = resp.immediate_response
    imm.status.code = decision.status  # type: ignore[assignment]
    for key, value in decision.headers:
        opt = imm.headers.set_headers.add()
        opt.header.key = key
        opt.header.raw_value = value.encode()
        opt.append_action = _OVERWRITE
    imm.body = decision.body
    imm.details = "edge_agent"


def extend_timeout(seconds: float) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    resp.override_message_timeout.FromNanoseconds(int(seconds * 1e9))
    return resp


def build_response(phase: str, decision: Decision) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    if isinstance(decision, Respond):
        _immediate(resp, decision)
        return resp
    holder = getattr(resp, phase)
    holder.SetInParent()
    if (
        decision.set_headers
        or decision.remove_headers
        or decision.body is not None
        or (decision.clear_route_cache)
    ):
        _fill_common(holder.response, decision)
    if decision.response_body_mode is not None:
        resp.mode_override.response_body_mode = _BODY_MODES[decision.response_body_mode]
    return resp


def _trailers(phase: str | None) -> pb.ProcessingResponse | None:
    """Trailers are not requested by the filter config; answer them so Envoy moves on."""
    if phase not in ("request_trailers", "response_trailers"):
        return None
    resp = pb.ProcessingResponse()
    getattr(resp, phase).SetInParent()
    return resp


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    """One gRPC bidi stream per HTTP request, one handler per stream; a trampoline that
    performs the effects the request pipeline asks for and never knows its stages."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        hist = agent.metrics.phase_seconds
        self._observe: dict[str, Callable[[float], None]] = {
            phase: hist.labels(phase).observe
            for phase in (
                "request_headers",
                "request_body",
                "request_trailers",
                "response_headers",
                "response_body",
                "response_trailers",
            )
        }

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        # context.read()/write() rather than iterating and yielding: grpc.aio then runs
        # the handler as a plain coroutine, without its async-generator wrapper.
        metadata = context.invocation_metadata() or ()
        upstream = any(k == STAGE_METADATA and v == "upstream" for k, v in metadata)
        observer = self.agent.observer
        handler: Handler
        if upstream:
            handler = Attempt(self.agent)
        elif observer is not None and observer.tracing is not None:
            # Envoy's own span for this ext_proc call, when Envoy traces.
            parent = next((v for k, v in metadata if k == "traceparent"), None)
            handler = Exchange(self.agent, parent if isinstance(parent, str) else None)
        else:
            handler = Exchange(self.agent)
        access_log = observer is not None and observer.access_log and not upstream
        metrics = self.agent.metrics
        metrics.streams.inc()
        try:
            while (request := await context.read()) is not grpc.aio.EOF:
                phase = request.WhichOneof("request")
                started = perf_counter()
                try:
                    decision = _dispatch(handler, phase, request)
                    while isinstance(decision, Pending):
                        effect = decision.effect
                        if effect.wait_s is not None:
                            # Keep Envoy waiting past its message timeout (bounded by the
                            # filter's max_message_timeout); after the wait the usual
                            # work follows, with the ordinary message budget on top.
                            budget_s = self.agent.config.envoy.message_timeout_ms / 1000
                            await context.write(extend_timeout(effect.wait_s + budget_s + 1.0))
                        result = await effect.perform(self.agent)
                        if effect.wait_s is not None:
                            started = perf_counter()  # the histogram measures our work only
                        decision = decision.send(result)
                    resp = (
                        build_response(phase, decision)
                        if decision is not None
                        else _trailers(phase)
                    )
                except Exception:
                    log.exception("ext_proc %s failed for %s", phase, handler.path)
                    resp = self._failed(phase)
                if resp is None:
                    continue
                self._observe[phase](perf_counter() - started)
                last = handler.done or resp.HasField("immediate_response")
                if last and access_log:
                    assert observer is not None and isinstance(handler, Exchange)
                    try:
                        _set_metadata(resp, observer.metadata(handler))
                    except Exception:  # the log line must never cost the answer
                        log.exception("could not write the access-log metadata")
                await context.write(resp)
                if last:
                    # Nothing more to decide (an immediate response, ours or a refusal
                    # after a bug, or no response body wanted): end the stream now rather
                    # than wait for Envoy to close it.
                    return
        finally:
            try:
                handler.close()
            finally:
                metrics.streams.dec()

    def _failed(self, phase: str | None) -> pb.ProcessingResponse:
        """A bug must never take a request down with it: refuse cleanly while the request
        is still ours, let the provider's answer through afterwards."""
        self.agent.metrics.stream_errors.inc()
        assert phase is not None
        if phase in ("request_headers", "request_body"):
            error = Respond(500, [("content-type", "application/json")], _INTERNAL_ERROR.body())
            return build_response(phase, error)
        return build_response(phase, Continue())


def _dispatch(
    handler: Handler, phase: str | None, request: pb.ProcessingRequest
) -> Decision | Pending | None:
    """The handler's answer to one ext_proc message; None for trailers (not asked for)."""
    if phase == "request_headers":
        msg = request.request_headers
        return handler.request_headers(
            headers_to_dict(msg.headers), msg.end_of_stream, _attributes(request)
        )
    if phase == "request_body":
        body = request.request_body
        return handler.request_body(body.body, body.end_of_stream)
    if phase == "response_headers":
        return handler.response_headers(headers_to_dict(request.response_headers.headers))
    if phase == "response_body":
        body = request.response_body
        return handler.response_body(body.body, body.end_of_stream)
    return None


def _set_metadata(resp: pb.ProcessingResponse, fields: dict[str, object] | None) -> None:
    """What the agent decided, as Envoy dynamic metadata for its access log."""
    if fields:
        resp.dynamic_metadata.get_or_create_struct(METADATA_NAMESPACE).update(fields)


def _attributes(request: pb.ProcessingRequest) -> dict[str, str]:
    """The attributes the filter was configured to send (request_attributes), as strings."""
    attrs = request.attributes.get(_ATTRIBUTES)
    if attrs is None:
        return {}
    return {key: value.string_value for key, value in attrs.fields.items()}
