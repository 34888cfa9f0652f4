"""One HTTP request's life, sans-IO: phase events in, decisions out.

`servicer.py` turns ext_proc messages into calls on an `Exchange` and its decisions back
into ext_proc responses. The Exchange is also the request's context: the request
pipeline's stages (edge_agent.pipeline) read and fill it. In phase order:

  request headers  → classify the endpoint; answer /v1/models; refuse early (404/405/413)
  request body     → the pipeline: parse, [slots], cache tiers, route (edge_agent.pipeline)
  response headers → cache-status header; translation (provider_call); whether the
                     answer's keeper (answer.py) reads the body
  response body    → translated; read, metered and stored by the keeper
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from edge_agent.api import errors
from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint, ParsedRequest
from edge_agent.api.schema import OPENAI, ClientSchema, schema_for
from edge_agent.extproc.answer import AnswerKeeper
from edge_agent.extproc.attempt_log import ATTEMPT_COUNT_HEADER
from edge_agent.extproc.decisions import (
    CONTINUE,
    EVENT_STREAM,
    JSON,
    BodyMode,
    Continue,
    Decision,
    Respond,
)
from edge_agent.extproc.provider_call import (
    METERED_HEADER,
    MODEL_HEADER,
    PROVIDER_HEADER,
    ProviderCall,
    tokens_of,
)
from edge_agent.identity.tenants import ANONYMOUS, UNIDENTIFIED, Caller
from edge_agent.limits.stage import record_spend
from edge_agent.limits.stage import settle as settle_limits
from edge_agent.pipeline.base import Pending, Stage, advance
from edge_agent.pipeline.effects import Effect
from edge_agent.providers.headers import PROVIDER_ONLY_HEADERS

if TYPE_CHECKING:
    import asyncio

    from edge_agent.agent import Agent
    from edge_agent.cache.coalesce import Flight
    from edge_agent.cache.keys import CachePolicy
    from edge_agent.cache.semantic import LookupResult, SemanticHit
    from edge_agent.limits.stage import Admission
    from edge_agent.routing.router import Target
    from edge_agent.telemetry.observe import Trail

log = logging.getLogger("edge_agent.extproc.exchange")

CACHE_HEADER = "x-edge-agent-cache"
CACHE_KEY_HEADER = "x-edge-agent-cache-key"  # names an answer for DELETE /admin/cache?key=
_PARTIAL_BODY = ApiError(
    500,
    "The gateway is misconfigured: the edge agent needs whole request bodies (ext_proc "
    "request_body_mode BUFFERED). Tell the gateway's operator.",
    type="api_error",
    code="edge_agent_misconfigured",
)


class Exchange:
    __slots__ = (
        "_closed",
        "agent",
        "answer",
        "attempt_key",
        "body_changed",
        "body_mode",
        "cache_result",
        "call",
        "caller",
        "chained",
        "done",
        "endpoint",
        "findings",
        "flight",
        "key",
        "lease",
        "limit",
        "limit_charged",
        "model",
        "overrides",
        "path",
        "policy",
        "query",
        "ratelimit_headers",
        "raw",
        "record",
        "refusal",
        "req_headers",
        "request",
        "saved_usd",
        "schema",
        "scope",
        "semantic",
        "semantic_pending",
        "sent_at",
        "shadow_hit",
        "started",
        "status",
        "target",
        "trace",
        "traceparent",
        "used",
    )

    def __init__(self, agent: Agent, traceparent: str | None = None) -> None:
        self.agent = agent
        self.started = agent.clock()
        # Observability (telemetry/observe.py): the trace context Envoy sent with the
        # stream, this request's trail when its span is sampled, and why it was refused.
        self.traceparent = traceparent
        self.trace: Trail | None = None
        self.refusal = ""
        self.record: dict[str, Any] | None = None  # what it told (observe.outcome), once
        self.endpoint: Endpoint | None = None
        self.schema: ClientSchema = OPENAI  # the client's API, from the endpoint
        self.path = ""
        self.query = ""
        self.req_headers: Mapping[str, str] = {}
        self.raw = b""  # the client's body, for providers that sign what they are sent
        self.body_changed = False  # a stage rewrote it (guardrails): it must be sent
        self.findings: dict[str, int] | None = None  # personal data found, by type
        self.request: ParsedRequest | None = None
        # Who is calling (stage identify); without identity checks, everyone is anonymous.
        self.caller: Caller = ANONYMOUS if agent.identity is None else UNIDENTIFIED
        self.model = "-"  # client-facing model name once known and configured (metric label)
        self.overrides: tuple[str | None, frozenset[str]] = (None, frozenset())
        self.status: str | None = None
        # True once Envoy needs nothing more from the agent for this request.
        self.done = False
        # The cache tiers' state (pipeline stages exact, shared, coalesce, semantic).
        self.policy: CachePolicy | None = None
        self.key: str | None = None
        self.cache_result = "bypass"
        self.scope: tuple[str, str] | None = None  # (partition, text) for the semantic tier
        self.semantic: LookupResult | None = None
        # A lookup the request did not wait for (shadow mode), until it lands.
        self.semantic_pending: asyncio.Task[LookupResult] | None = None
        self.shadow_hit: SemanticHit | None = None
        self.flight: Flight | None = None  # leading identical requests in flight
        self.lease = False  # holding the cross-process lease on self.key
        # Where it went (stage route).
        self.target: Target | None = None
        self.call: ProviderCall | None = None  # the provider side, when routed to one target
        self.chained = ""  # the failover chain routed to: attempts are handled upstream
        self.attempt_key = ""  # its AttemptLog entry
        self.sent_at = 0.0
        # The answer: read, metered and stored by its keeper.
        self.answer = AnswerKeeper(self)
        self.body_mode: BodyMode | None = None  # how Envoy sends the answer's body
        # Limits (edge_agent.limits.stage): the admission, its headers for the answer,
        # and the provider's usage (input, output tokens, USD) for the settlement.
        self.limit: Admission | None = None
        self.limit_charged = False
        self.ratelimit_headers: list[tuple[str, str]] = []
        self.used: tuple[int, int, float] | None = None
        self.saved_usd = 0.0  # what a cache hit saved, at the model's first target
        self._closed = False

    # ---- request headers -------------------------------------------------------------
    def request_headers(
        self,
        headers: Mapping[str, str],
        end_of_stream: bool,
        attributes: Mapping[str, str] | None = None,
    ) -> Decision | Pending:
        self.req_headers = headers
        method = headers.get(":method", "")
        path, _, self.query = headers.get(":path", "").partition("?")
        self.path = path
        endpoint = self.agent.endpoints.get(path)
        if endpoint is None:
            return self.error(errors.unknown_endpoint(method, path))
        self.endpoint = endpoint
        self.schema = schema_for(endpoint)
        if self.agent.observer is not None:
            self.agent.observer.begin(self, self.traceparent)
        if self.agent.header_stages:
            # Who is calling is settled before the body is read: an unauthenticated
            # caller never gets the gateway to buffer its body.
            return advance(self._headers_pipeline(method, end_of_stream))
        return self._headers_checked(method, end_of_stream)

    def _headers_pipeline(
        self, method: str, end_of_stream: bool
    ) -> Generator[Effect, Any, Decision]:
        decision = yield from self._run(self.agent.header_stages)
        if decision is not None:
            return decision
        return self._headers_checked(method, end_of_stream)

    def _headers_checked(self, method: str, end_of_stream: bool) -> Decision:
        path = self.path
        if self.endpoint is Endpoint.MODELS:
            if method not in ("GET", "HEAD"):
                return self.error(errors.method_not_allowed(method, path, "GET"))
            return self._respond(200, self.agent.models_body_for(self.caller), JSON, "bypass")
        if method != "POST":
            return self.error(errors.method_not_allowed(method, path, "POST"))
        limit = self.agent.config.envoy.max_request_bytes
        length = self.req_headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
            return self.error(errors.payload_too_large(int(length), limit))
        if end_of_stream:
            return self.error(
                errors.invalid_request(
                    f"The request to {path} has no body; send a JSON object.", code="missing_body"
                )
            )
        return CONTINUE

    # ---- request body: the pipeline --------------------------------------------------
    def request_body(self, body: bytes, end_of_stream: bool = True) -> Decision | Pending:
        """The pipeline's decision, or the effect it waits for (`Pending.send` the result)."""
        return advance(self._pipeline(body, end_of_stream))

    def _pipeline(self, body: bytes, end_of_stream: bool) -> Generator[Effect, Any, Decision]:
        assert self.endpoint is not None, "request_body before request_headers"
        if not end_of_stream:
            # The generated filter config buffers whole bodies; a hand-written one that
            # streams them cannot work with the agent. Say so instead of guessing.
            log.error("received a partial request body: set request_body_mode BUFFERED")
            return self.error(_PARTIAL_BODY)
        self.raw = body
        decision = yield from self._run(self.agent.request_stages)
        assert decision is not None, "the route stage decides every request"
        return decision

    def _run(self, stages: list[Stage]) -> Generator[Effect, Any, Decision | None]:
        """Run `stages` in order until one decides; a refusal becomes the error answer."""
        try:
            for stage in stages:
                decision = stage(self)
                if isinstance(decision, Generator):
                    decision = yield from decision
                if decision is not None:
                    return decision
        except ApiError as exc:
            return self.error(exc)
        return None

    # ---- for the stages ----------------------------------------------------------------
    @property
    def tenant_label(self) -> str:
        """The caller's tenant as a metrics label (bounded to the configured ones)."""
        identity = self.agent.identity
        return (
            self.caller.tenant if identity is None else identity.tenants.label(self.caller.tenant)
        )

    @property
    def cache_namespace(self) -> str:
        """Where the caller's answers are cached: its tenant's own space, or the pool of
        the tenants that share one."""
        identity = self.agent.identity
        return "" if identity is None else identity.tenants.cache_namespace(self.caller.tenant)

    def cache_lookup_wanted(self) -> bool:
        return self.key is not None and self.policy is not None and self.policy.lookup

    def shared_lookup_wanted(self) -> bool:
        return self.cache_lookup_wanted() and self.agent.shared is not None

    def serve(self, stored: bytes, result: str) -> Respond | None:
        """A cached answer as the client asked for it (JSON, or replayed SSE); None when
        it cannot be replayed so."""
        req = self.request
        assert req is not None
        reply = self._replay(req, stored, result)
        if reply is not None:
            self.land(stored)  # a leader answered from cache: so are its followers
            tier = {"hit": "exact", "semantic-hit": "semantic"}.get(result, result)
            self._count_saved(stored, tier)
        return reply

    def land(self, body: bytes | None) -> None:
        """As a leader: hand the stored answer (or None) to the requests waiting for it."""
        flight, self.flight = self.flight, None
        if flight is not None and self.agent.flights is not None:
            self.agent.flights.land(flight, body)
        if self.lease:
            # Other processes' waiters see the entry (written before the release) or,
            # with no entry, that the lease is gone: they go upstream themselves.
            self.lease = False
            assert self.agent.shared is not None and self.key is not None
            self.agent.shared.release_lease(self.key)

    def _count_saved(self, stored: bytes, tier: str) -> None:
        # Priced at the model's first target: the one a miss would normally have used.
        target = self.agent.router.first_target(self.model)
        price = target.provider.model(target.model) if target is not None else None
        usage = tokens_of(self.schema.usage_of(stored))
        if price is None or usage is None:
            return
        self.saved_usd = price.cost_usd(*usage)
        self.agent.metrics.cost_saved.labels(self.model, tier, self.tenant_label).inc(
            self.saved_usd
        )

    def _replay(self, req: ParsedRequest, stored: bytes, result: str) -> Respond | None:
        if req.stream:
            try:
                body = self.schema.replay(req, orjson.loads(stored))
            except ValueError:
                return None
            self.cache_result = result
            return self._respond(200, body, EVENT_STREAM, result, stream=True)
        self.cache_result = result
        return self._respond(200, stored, JSON, result)

    # ---- response headers ------------------------------------------------------------
    def response_headers(self, headers: Mapping[str, str]) -> Decision:
        agent = self.agent
        status = headers.get(":status", "")
        if self.chained:
            # Attempts measured and judged themselves; name the target that answered
            # before counting the request, and judge the attempts that never could.
            self._judge_silent_attempts(self._adopt_answering_target(headers), headers)
        self._finish(status)
        if self.call is not None and self.sent_at:  # a chain's attempts report themselves
            self.call.answered(status, headers, agent.clock() - self.sent_at)
        self.sent_at = 0.0
        decision = Continue(
            set_headers=[(CACHE_HEADER, self.cache_result), *self.ratelimit_headers],
            remove_headers=[*PROVIDER_ONLY_HEADERS, ATTEMPT_COUNT_HEADER],
        )
        if self.key is not None:
            decision.set_headers.append((CACHE_KEY_HEADER, self.key))  # for purges
        target = self.target
        if target is None:
            self.done = True
            return decision
        call = self.call
        translating = False
        if call is not None:
            set_headers, remove, want = call.response_headers(status, headers)
            decision.set_headers += set_headers
            decision.remove_headers += remove
            if want is not None:
                translating = True
                decision.response_body_mode = BodyMode.STREAMED if want else BodyMode.BUFFERED
        metered_upstream = headers.get(METERED_HEADER) is not None
        if metered_upstream:
            decision.remove_headers.append(METERED_HEADER)
        identity = headers.get("content-encoding", "identity").lower() == "identity"
        answer = self.answer
        storing = bool(
            status == "200" and self.key is not None and self.policy and self.policy.store
        )
        if storing:
            capture = answer.mode(headers)
            if decision.response_body_mode is None:
                decision.response_body_mode = capture
        for stage in agent.response_stages:  # the configured response stages
            want = stage.headers(self, status, headers)
            if want is not None and decision.response_body_mode is None:
                decision.response_body_mode = want
        if not storing and (
            status == "200"
            and identity
            and not translating
            and not metered_upstream
            and headers.get("content-type", "").startswith(JSON)
        ):
            # Whole JSON answers are read for their usage (tokens and cost metrics).
            decision.response_body_mode = BodyMode.BUFFERED
        if self.trace is not None and status == "200" and identity:
            # A traced answer is read for its facts (finish reasons, first token).
            # What the client gets (Bedrock's event stream is SSE once translated).
            streamed = self.request is not None and self.request.stream
            assert self.endpoint is not None
            self.trace.read_answer(self.schema.assembler(self.endpoint) if streamed else None)
            if decision.response_body_mode is None:
                decision.response_body_mode = BodyMode.STREAMED if streamed else BodyMode.BUFFERED
        self.body_mode = decision.response_body_mode
        answer.metered = metered_upstream or translating
        if decision.response_body_mode is None and status == "200" and not metered_upstream:
            answer.count_usage(None)  # a stream nobody reads: its usage stays unknown
        self.done = decision.response_body_mode is None
        if not answer.capturing:
            self.land(None)  # nothing will be stored: followers go on their own
        if self.done and self.limit is not None and not self.chained:
            # Before the client has the answer. A chain's usage is read by its attempt,
            # after these headers: it is settled when the request ends.
            settle_limits(self, release=False)
        return decision

    def _adopt_answering_target(self, headers: Mapping[str, str]) -> str | None:
        # The upstream filter names the target that answered (it may be a failover one);
        # no name: Envoy answered itself (every attempt failed).
        key = f"{headers.get(PROVIDER_HEADER, '')}/{headers.get(MODEL_HEADER, '')}"
        answered = self.agent.router.target(key)
        if answered is None:
            return None
        self.target = answered
        return key

    def _judge_silent_attempts(self, answered: str | None, headers: Mapping[str, str]) -> None:
        # Envoy walks the chain in order, one target per attempt, and says how many
        # attempts it made. A tried target whose attempt never saw an answer (refused or
        # reset connection, timeout; Envoy may cancel such an attempt before it reaches
        # the agent) counts as a connect failure. Targets not reached, attempts the agent
        # itself refused, and answers (judged by their attempt) are not charged.
        agent = self.agent
        order = agent.router.chain_order(self.chained)
        states = agent.attempts.finish(self.attempt_key)
        count = headers.get(ATTEMPT_COUNT_HEADER, "")
        if count.isascii() and count.isdigit():
            tried = order[: int(count)]
        else:
            tried = [key for key in order if key in states]
        for key in tried:
            target = agent.router.target(key)
            if key == answered or states.get(key) in ("answered", "refused") or target is None:
                continue
            target.health.on_failure("connect")
            agent.metrics.failover_attempts.labels(key, "connect").inc()

    # ---- response body ---------------------------------------------------------------
    def response_body(self, chunk: bytes, end_of_stream: bool) -> Decision:
        if end_of_stream:
            self.done = True
        out = None
        if self.call is not None:
            out = self.call.response_body(chunk, end_of_stream, self.status or "")
        if out is not None:
            chunk = out
        elif (
            end_of_stream
            and self.status == "200"
            and not self.answer.assembling
            and not self.answer.metered
        ):
            self.answer.count_usage(self.schema.usage_of(self.answer.whole(chunk)))
        replaced = out is not None
        for stage in self.agent.response_stages:  # in the client's schema, before storing
            changed = stage.body(self, chunk, end_of_stream)
            if changed is not None:
                chunk, replaced = changed, True
        self.answer.feed(chunk, end_of_stream)
        if self.trace is not None:
            self.trace.body(chunk, end_of_stream)
        if end_of_stream and self.limit is not None:
            settle_limits(self, release=False)  # usage known, before the client has it all
        if not replaced:
            return CONTINUE
        call = self.call
        if out is not None and call is not None:
            if call.stream_out is None:
                # A whole body: its headers are still held, and follow the new body.
                return Continue(body=chunk, set_headers=call.body_headers())
            return Continue(body=chunk, chunk=True)
        return Continue(body=chunk, chunk=self.body_mode is BodyMode.STREAMED)

    # ---- end of the stream -------------------------------------------------------------
    def close(self) -> None:
        """The ext_proc stream ended: count a request that never got a status as aborted."""
        self.land(None)
        if self.call is not None:
            self.call.abandon()
        if self.status is None:
            self._finish("aborted")
        if self.limit is not None:
            settle_limits(self, release=True)
        if self.agent.limiter is not None:
            record_spend(self)
        if self.target is not None and self.sent_at:
            self.target.health.on_cancel()  # sent, never answered: frees a half-open probe
        if self.agent.observer is not None:
            self.agent.observer.finish(self)
        if self.agent.audit is not None:
            self.agent.audit.request(self)

    def _finish(self, status: str) -> None:
        # Counted when the status is decided, before the client sees it, so metrics
        # scraped right after a response already include it.
        if self._closed:
            return
        self._closed = True
        self.status = status
        m = self.agent.metrics
        endpoint = str(self.endpoint) if self.endpoint else "unknown"
        provider = self.target.provider.name if self.target else "-"
        tenant = self.tenant_label
        m.requests.labels(endpoint, self.model, provider, status, tenant).inc()
        if self.request is not None:
            m.cache_results.labels(endpoint, self.cache_result, tenant).inc()

    # ---- helpers -----------------------------------------------------------------------
    def _respond(
        self,
        status: int,
        body: bytes,
        content_type: str,
        cache: str,
        *,
        stream: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Respond:
        self._finish(str(status))
        self.done = True
        headers = [
            ("content-type", content_type),
            (CACHE_HEADER, cache),
            *extra,
            *self.ratelimit_headers,
        ]
        if self.key is not None and cache != "bypass":
            headers.append((CACHE_KEY_HEADER, self.key))  # for purges
        if stream:
            headers.append(("cache-control", "no-cache"))
        return Respond(status, headers, body)

    def error(self, exc: ApiError) -> Respond:
        log.debug("refused %s with %d: %s", self.path, exc.status, exc.message)
        self.refusal = exc.code or exc.type
        self.land(None)  # waiting identical requests go on by themselves
        body = self.schema.error_body(exc)
        return self._respond(exc.status, body, JSON, "bypass", extra=exc.headers)
