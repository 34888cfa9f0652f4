"""The ext_proc gRPC servicer: protobuf ⇄ Exchange, nothing else.

This is the only module that speaks ext_proc protobuf. Nested messages are built in
place (`resp.request_headers.response...`): assigning a sub-message copies it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from time import perf_counter
from typing import TYPE_CHECKING

import grpc
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValueOption
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from edge_agent.api import errors
from edge_agent.attempt import STAGE_METADATA, TARGET_ATTRIBUTE, Attempt
from edge_agent.exchange import (
    BodyMode,
    Continue,
    Decision,
    Exchange,
    Respond,
    SemanticLookup,
    SharedLease,
    SharedLookup,
    SharedWait,
    Step,
    WaitFor,
)

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger("edge_agent.server")

Wait = WaitFor | SharedWait
_ATTRIBUTES = "envoy.filters.http.ext_proc"

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
    """One gRPC bidi stream per HTTP request; one Exchange per stream."""

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
    ) -> AsyncIterator[pb.ProcessingResponse]:
        metadata = context.invocation_metadata() or ()
        if any(k == STAGE_METADATA and v == "upstream" for k, v in metadata):
            async for resp in self._attempt(request_iterator):
                yield resp
            return
        exchange = self.agent.exchange()
        metrics = self.agent.metrics
        metrics.streams.inc()
        try:
            async for request in request_iterator:
                phase = request.WhichOneof("request")
                started = perf_counter()
                resp = await self._handle(exchange, phase, request)
                if resp is None:
                    continue
                while isinstance(resp, WaitFor | SharedWait):
                    # Keep Envoy waiting past its message timeout (bounded by the filter's
                    # max_message_timeout) while an identical request is in flight.
                    # After the wait the usual work follows (a semantic lookup, routing):
                    # it gets the ordinary message budget on top.
                    budget_s = self.agent.config.envoy.message_timeout_ms / 1000
                    yield extend_timeout(resp.timeout_s + budget_s + 1.0)
                    resp = await self._after_wait(exchange, resp)
                    started = perf_counter()  # the phase histogram measures our work only
                self._observe[phase](perf_counter() - started)
                yield resp
                if exchange.done or resp.HasField("immediate_response"):
                    # Nothing more to decide (an immediate response, ours or a refusal
                    # after a bug, or no response body wanted): end the stream now rather
                    # than wait for Envoy to close it.
                    return
        finally:
            exchange.close()
            metrics.streams.dec()

    async def _attempt(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest]
    ) -> AsyncIterator[pb.ProcessingResponse]:
        """One attempt of a failover chain (the upstream filter): see attempt.py."""
        attempt = self.agent.attempt()
        metrics = self.agent.metrics
        metrics.streams.inc()
        try:
            async for request in request_iterator:
                phase = request.WhichOneof("request")
                started = perf_counter()
                resp = self._handle_attempt(attempt, phase, request)
                if resp is None:
                    continue
                self._observe[phase](perf_counter() - started)
                yield resp
                if attempt.done or resp.HasField("immediate_response"):
                    return
        finally:
            attempt.close()
            metrics.streams.dec()

    def _handle_attempt(
        self, attempt: Attempt, phase: str | None, request: pb.ProcessingRequest
    ) -> pb.ProcessingResponse | None:
        try:
            if phase == "request_headers":
                attrs = request.attributes.get(_ATTRIBUTES)
                target = ""
                if attrs is not None and TARGET_ATTRIBUTE in attrs.fields:
                    target = attrs.fields[TARGET_ATTRIBUTE].string_value
                decision = attempt.request_headers(
                    headers_to_dict(request.request_headers.headers), target
                )
            elif phase == "request_body":
                decision = attempt.request_body(request.request_body.body)
            elif phase == "response_headers":
                decision = attempt.response_headers(
                    headers_to_dict(request.response_headers.headers)
                )
            elif phase == "response_body":
                body = request.response_body
                decision = attempt.response_body(body.body, body.end_of_stream)
            else:
                return _trailers(phase)
            return build_response(phase, decision)
        except Exception:
            log.exception("ext_proc attempt %s failed for %s", phase, attempt.path)
            return self._failed(phase)

    async def drive(
        self, exchange: Exchange, step: Decision | Step
    ) -> pb.ProcessingResponse | Wait:
        """Carry out the I/O the core asks for until it decides, or must wait (which the
        caller does, after telling Envoy to wait longer)."""
        agent = self.agent
        while True:
            if isinstance(step, SemanticLookup):
                assert agent.semantic is not None
                step = exchange.semantic_result(
                    await agent.semantic.lookup(step.partition, step.text)
                )
            elif isinstance(step, SharedLookup):
                assert agent.shared is not None
                step = exchange.shared_result(await agent.shared.get(step.key))
            elif isinstance(step, SharedLease):
                assert agent.shared is not None
                step = exchange.lease_result(await agent.shared.acquire_lease(step.key, step.ttl_s))
            elif isinstance(step, WaitFor | SharedWait):
                return step
            else:
                return build_response("request_body", step)

    async def _wait(self, exchange: Exchange, wait: Wait) -> Decision | Step:
        """Wait (bounded) for an identical request's answer, here or in another process."""
        if isinstance(wait, SharedWait):
            assert self.agent.shared is not None
            return exchange.shared_waited(
                await self.agent.shared.wait_for(wait.key, wait.timeout_s)
            )
        loop = asyncio.get_running_loop()
        landed: asyncio.Future[bytes | None] = loop.create_future()

        def on_land(body: bytes | None) -> None:
            if not landed.done():
                landed.set_result(body)

        wait.flight.add_waiter(on_land)
        try:
            body = await asyncio.wait_for(landed, wait.timeout_s)
        except TimeoutError:
            body = None
        return exchange.coalesced(body)

    async def _after_wait(self, exchange: Exchange, wait: Wait) -> pb.ProcessingResponse | Wait:
        try:
            return await self.drive(exchange, await self._wait(exchange, wait))
        except Exception:
            log.exception("ext_proc request_body failed after waiting for %s", exchange.path)
            return self._failed("request_body")

    def _failed(self, phase: str | None) -> pb.ProcessingResponse:
        """A bug must never take a request down with it: refuse cleanly while the request
        is still ours, let the provider's answer through afterwards."""
        self.agent.metrics.stream_errors.inc()
        assert phase is not None
        if phase in ("request_headers", "request_body"):
            error = Respond(500, [("content-type", "application/json")], _INTERNAL_ERROR.body())
            return build_response(phase, error)
        return build_response(phase, Continue())

    async def _handle(
        self, exchange: Exchange, phase: str | None, request: pb.ProcessingRequest
    ) -> pb.ProcessingResponse | Wait | None:
        try:
            if phase == "request_headers":
                msg = request.request_headers
                decision = exchange.request_headers(headers_to_dict(msg.headers), msg.end_of_stream)
            elif phase == "request_body":
                body = request.request_body
                step = exchange.request_body(body.body, body.end_of_stream)
                return await self.drive(exchange, step)
            elif phase == "response_headers":
                decision = exchange.response_headers(
                    headers_to_dict(request.response_headers.headers)
                )
            elif phase == "response_body":
                body = request.response_body
                decision = exchange.response_body(body.body, body.end_of_stream)
            else:
                return _trailers(phase)
            return build_response(phase, decision)
        except Exception:
            log.exception("ext_proc %s failed for %s", phase, exchange.path)
            return self._failed(phase)
