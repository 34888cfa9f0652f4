"""One attempt on a failover chain, sans-IO: the agent as Envoy's *upstream* ext_proc filter.

When a model fails over (config `models[].failover`), the downstream `Exchange` only
picks the chain cluster; Envoy then tries the chain's targets in order (retry policy with
`previous_priorities`), and for every attempt runs the upstream filter, which opens one
`Attempt`: it learns the attempt's target from the endpoint metadata, translates the
client's request for it, sets its path and credentials, reports the outcome to the
target's health, and translates the answer back (docs/failover.md).

Envoy keeps header changes across attempts, so every attempt resets every credential
header before setting its own: a retry never carries the previous provider's key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from edge_agent.api import errors
from edge_agent.api.errors import ApiError
from edge_agent.api.openai import ENDPOINT_BY_PATH, Endpoint
from edge_agent.api.schema import OPENAI, ClientSchema, schema_for
from edge_agent.extproc.attempt_log import ATTEMPT_KEY_HEADER
from edge_agent.extproc.decisions import CONTINUE, JSON, BodyMode, Continue, Decision, Respond
from edge_agent.extproc.provider_call import (
    CREDENTIAL_HEADERS,
    METERED_HEADER,
    ProviderCall,
)
from edge_agent.identity.settings import OTHER_TENANT

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.routing.router import Target
    from edge_agent.telemetry.tracing import LeanSpan

log = logging.getLogger("edge_agent.extproc.attempt")

#: Endpoint metadata key (filter_metadata['edge_agent']['target']) naming an attempt's target.
TARGET_ATTRIBUTE = "xds.upstream_host_metadata.filter_metadata['edge_agent']['target']"
#: gRPC metadata the upstream (per-attempt) filter sends: its streams are Attempts.
STAGE_METADATA = "x-edge-agent-stage"


class Attempt:
    __slots__ = (
        "_call",
        "_query",
        "_sent_at",
        "_status",
        "_tenant",
        "agent",
        "done",
        "endpoint",
        "key",
        "path",
        "request_key",
        "schema",
        "target",
        "trace",
    )

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.key = ""
        self.target: Target | None = None
        self.endpoint: Endpoint | None = None
        self.schema: ClientSchema = OPENAI  # the client's API, from the endpoint
        self.path = ""
        self._query = ""
        self._call: ProviderCall | None = None
        self._sent_at = 0.0
        self._status: str | None = None
        self._tenant = OTHER_TENANT  # a chain begun elsewhere: its caller is not known here
        self.request_key = ""
        self.done = False
        self.trace: LeanSpan | None = None  # this attempt's span, when traced

    def request_headers(
        self, headers: Mapping[str, str], end_of_stream: bool, attributes: Mapping[str, str]
    ) -> Decision:
        # The target this attempt goes to: its host's metadata in the chain cluster.
        target_key = attributes.get(TARGET_ATTRIBUTE, "")
        self.key = target_key
        self.request_key = headers.get(ATTEMPT_KEY_HEADER, "")
        chained = self.agent.attempts.get(self.request_key)
        if chained is not None:
            self.path, self._query = chained.path, chained.query
            self._tenant = chained.tenant
        else:  # not begun by our Exchange (a hand-written route): the path is the client's
            self.path, _, self._query = headers.get(":path", "").partition("?")
        self.endpoint = ENDPOINT_BY_PATH.get(self.path)
        if self.endpoint is not None:
            self.schema = schema_for(self.endpoint)
        self.target = self.agent.router.target(target_key)
        self.agent.attempts.note(self.request_key, target_key, "started")
        observer = self.agent.observer
        if observer is not None:
            # A child of the downstream request's span (same process), else of whatever
            # trace context the upstream request carries.
            # A chain the Exchange began and did not sample gets no span of its own.
            if chained is None:
                observer.begin_attempt(self, headers.get("traceparent"), 1)
            elif chained.traceparent is not None:
                observer.begin_attempt(self, chained.traceparent, len(chained.states))
        if self.target is None or self.endpoint is None:
            # Only a misconfigured chain gets here (a disabled provider, a hand-written
            # filter); Envoy does not retry an upstream filter's own answer.
            log.error("failover attempt to unusable target %r for %s", target_key, self.path)
            return self._error(
                errors.service_unavailable(
                    f"The failover target '{target_key}' is not usable by the edge agent "
                    "(its provider is disabled or unknown); tell the gateway's operator.",
                    code="no_available_provider",
                )
            )
        return CONTINUE

    def request_body(self, body: bytes, end_of_stream: bool = True) -> Decision:
        assert self.target is not None and self.endpoint is not None
        try:
            req = self.schema.parse(self.endpoint, body)
            call = self._call = ProviderCall(self.agent, self.target, req, req.model, self._tenant)
            set_headers, new_body = call.request_changes(self._query, body)
        except ApiError as exc:
            return self._error(exc)
        if new_body is None:
            # Set even when unchanged: an earlier attempt's length may still be there.
            set_headers.append(("content-length", str(len(body))))
        injected = {name for name, _ in set_headers}
        self._sent_at = self.agent.clock()
        return Continue(
            set_headers=set_headers,
            remove_headers=[h for h in CREDENTIAL_HEADERS if h not in injected],
            body=new_body,
        )

    def response_headers(self, headers: Mapping[str, str]) -> Decision:
        status = self._status = headers.get(":status", "")
        self._report(status, headers)
        call = self._call
        if call is None:
            self.done = True
            return CONTINUE
        set_headers, remove, want = call.response_headers(status, headers)
        decision = Continue(set_headers=set_headers, remove_headers=remove)
        if want is not None:
            decision.response_body_mode = BodyMode.STREAMED if want else BodyMode.BUFFERED
            decision.set_headers.append((METERED_HEADER, "1"))
        elif (
            status == "200"
            and headers.get("content-encoding", "identity").lower() == "identity"
            and headers.get("content-type", "").startswith(JSON)
        ):
            decision.response_body_mode = BodyMode.BUFFERED  # read for its usage
            decision.set_headers.append((METERED_HEADER, "1"))
        self.done = decision.response_body_mode is None
        return decision

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Decision:
        if end_of_stream:
            self.done = True
        call = self._call
        assert call is not None
        out = call.response_body(chunk, end_of_stream, self._status or "")
        if out is None and end_of_stream and self._status == "200":
            call.count_usage(call.schema.usage_of(chunk))
        agent = self.agent
        if end_of_stream and call.used is not None and (agent.limiter or agent.observer):
            # For the request's limits (the downstream Exchange settles with it) and its
            # log line.
            self.agent.attempts.record_usage(self.request_key, call.used)
        if out is not None:
            if call.stream_out is None:
                # A whole body: its headers are still held, and follow the new body.
                return Continue(body=out, set_headers=call.body_headers())
            return Continue(body=out, chunk=True)
        return CONTINUE

    def close(self) -> None:
        """The attempt's stream ended. One that got no answer reports nothing: Envoy may
        cancel it before its first message, so the downstream Exchange, which sees which
        target finally answered, judges the attempts that never reported (see
        `Exchange._judge_silent_attempts`)."""
        if self.trace is not None and self.agent.observer is not None:
            self.agent.observer.end_attempt(self, self._status)

    @property
    def provider_call(self) -> ProviderCall | None:
        return self._call

    def _report(self, status: str, headers: Mapping[str, str]) -> None:
        call = self._call
        if call is None or not self._sent_at:
            return
        self.agent.attempts.note(self.request_key, call.target.key, "answered")
        if call.answered(status, headers, self.agent.clock() - self._sent_at):
            self.agent.metrics.failover_attempts.labels(call.target.key, status).inc()

    def _error(self, exc: ApiError) -> Respond:
        self.done = True
        # Our own refusal, not the provider's failure: the Exchange must not charge it.
        self.agent.attempts.note(self.request_key, self.key, "refused")
        body = self.schema.error_body(exc)
        return Respond(exc.status, [("content-type", JSON), *exc.headers], body)
