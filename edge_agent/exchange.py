"""One HTTP request's life, sans-IO: phase events in, decisions out.

`server.py` turns ext_proc messages into calls on an `Exchange` and its decisions back
into ext_proc responses. Every decision about a request is made here, in phase order:

  request headers  → classify the endpoint; answer /v1/models; refuse early (404/405/413)
  request body     → validate; cache lookup (hit → answer); pick the target; rewrite
  response headers → cache-status header; decide whether to capture the body
  response body    → capture (buffered JSON or assembled SSE) and store when complete
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from edge_agent.api import anthropic, errors, translate
from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint, ParsedRequest, is_complete_response, parse_request
from edge_agent.api.sse import StreamAssembler, replay_stream
from edge_agent.attempt_log import ATTEMPT_COUNT_HEADER, ATTEMPT_KEY_HEADER
from edge_agent.cache.coalesce import Flight
from edge_agent.cache.keys import (
    CachePolicy,
    cache_key,
    cache_policy,
    request_variant,
    semantic_scope,
)
from edge_agent.leg import (
    MODEL_HEADER,
    PROVIDER_HEADER,
    ProviderLeg,
    report_outcome,
    tokens_of,
    usage_of,
)
from edge_agent.providers.base import CLIENT_ONLY_HEADERS, PROVIDER_ONLY_HEADERS
from edge_agent.routing.router import needs_of

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.cache.records import SharedEntry
    from edge_agent.cache.semantic import LookupResult, SemanticHit
    from edge_agent.routing.router import Target

log = logging.getLogger("edge_agent.exchange")

CACHE_HEADER = "x-edge-agent-cache"
SCORE_HEADER = "x-edge-agent-cache-score"
CACHE_KEY_HEADER = "x-edge-agent-cache-key"  # names an answer for DELETE /admin/cache?key=
# Set by the upstream filter when it counted the answer's usage itself (stripped here).
METERED_HEADER = "x-edge-agent-metered"
# Client routing overrides (config routing.client_overrides).
PIN_HEADER = "x-edge-agent-pin"
EXCLUDE_HEADER = "x-edge-agent-exclude"
JSON = "application/json"
EVENT_STREAM = "text/event-stream"


class BodyMode(enum.Enum):
    NONE = "none"
    BUFFERED = "buffered"
    STREAMED = "streamed"


@dataclass(slots=True)
class Continue:
    """Let the message through, with these changes."""

    set_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None  # replacement body; content-length is set with it
    chunk: bool = False  # `body` replaces one chunk of a streamed body: no content-length
    clear_route_cache: bool = False
    response_body_mode: BodyMode | None = None  # ask Envoy for the response body this way


@dataclass(frozen=True, slots=True)
class SemanticLookup:
    """Ask the server to embed `text` and search `partition`, then call semantic_result."""

    partition: str
    text: str


@dataclass(slots=True)
class Respond:
    """Answer the client now; the provider is never contacted."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class SharedLookup:
    """Ask the server to look `key` up in the shared tier, then call shared_result."""

    key: str


@dataclass(frozen=True, slots=True)
class SharedLease:
    """Ask the server for the cross-process lease on `key`, then call lease_result."""

    key: str
    ttl_s: float


@dataclass(frozen=True, slots=True)
class SharedWait:
    """Ask the server to wait (up to `timeout_s`) for another process's answer to `key`,
    then call shared_waited."""

    key: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class WaitFor:
    """Ask the server to wait (up to `timeout_s`) for an identical request in flight, then
    call `coalesced` with its stored answer (or None)."""

    flight: Flight
    timeout_s: float


Decision = Continue | Respond
# What request_body (and the calls continuing it) may ask of the server before deciding.
Step = SemanticLookup | SharedLookup | SharedLease | SharedWait | WaitFor
_CONTINUE = Continue()  # shared: decisions are never mutated after being returned
_TOO_DEEP = errors.invalid_request(
    "Request body nests JSON too deeply (more than 254 levels); flatten it.", code="too_deep"
)
_PARTIAL_BODY = ApiError(
    500,
    "The gateway is misconfigured: the edge agent needs whole request bodies (ext_proc "
    "request_body_mode BUFFERED). Tell the gateway's operator.",
    type="api_error",
    code="edge_agent_misconfigured",
)


class Exchange:
    __slots__ = (
        "_assembler",
        "_attempt_key",
        "_body_bytes",
        "_capture_bytes",
        "_captured",
        "_closed",
        "_flight",
        "_lease",
        "_leg",
        "_metered_upstream",
        "_overrides",
        "_policy",
        "_raw",
        "_scope",
        "_semantic",
        "_sent_at",
        "_shadow_hit",
        "agent",
        "cache_result",
        "chained",
        "client_schema",
        "done",
        "endpoint",
        "key",
        "model",
        "path",
        "query",
        "req_headers",
        "request",
        "status",
        "target",
    )

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.endpoint: Endpoint | None = None
        self.path = ""
        self.query = ""
        self.req_headers: Mapping[str, str] = {}
        self.request: ParsedRequest | None = None
        self.model = "-"  # client-facing model name once known and configured (metric label)
        self.target: Target | None = None
        self.key: str | None = None
        self.cache_result = "bypass"
        self.status: str | None = None
        # True once Envoy needs nothing more from the agent for this request.
        self.done = False
        self._policy: CachePolicy | None = None
        self._scope: tuple[str, str] | None = None  # (partition, text) for the semantic tier
        self._semantic: LookupResult | None = None
        self._shadow_hit: SemanticHit | None = None
        self._sent_at = 0.0
        self._assembler: StreamAssembler | anthropic.MessagesAssembler | None = None
        self._captured: list[bytes] | None = None
        self._capture_bytes = 0
        self._closed = False
        self._flight: Flight | None = None  # leading identical requests in flight
        self._lease = False  # holding the cross-process lease on self.key
        self.client_schema = "openai"
        self._body_bytes = 0
        self._raw = b""  # the client's body, for providers that sign what they are sent
        self._leg: ProviderLeg | None = None  # the provider side, when routed to one target
        self.chained = ""  # the failover chain routed to: attempts are handled upstream
        self._attempt_key = ""  # its AttemptLog entry
        self._metered_upstream = False  # usage already counted by a leg or the upstream filter
        self._overrides: tuple[str | None, frozenset[str]] = (None, frozenset())

    # ---- request headers -------------------------------------------------------------
    def request_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Decision:
        self.req_headers = headers
        method = headers.get(":method", "")
        path, _, self.query = headers.get(":path", "").partition("?")
        self.path = path
        endpoint = self.agent.endpoints.get(path)
        if endpoint is None:
            return self._error(errors.unknown_endpoint(method, path))
        self.endpoint = endpoint
        if endpoint is Endpoint.MESSAGES:
            self.client_schema = "anthropic"
        if endpoint is Endpoint.MODELS:
            if method not in ("GET", "HEAD"):
                return self._error(errors.method_not_allowed(method, path, "GET"))
            return self._respond(200, self.agent.models_body, JSON, "bypass")
        if method != "POST":
            return self._error(errors.method_not_allowed(method, path, "POST"))
        limit = self.agent.config.envoy.max_request_bytes
        length = headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
            return self._error(errors.payload_too_large(int(length), limit))
        if end_of_stream:
            return self._error(
                errors.invalid_request(
                    f"The request to {path} has no body; send a JSON object.", code="missing_body"
                )
            )
        return _CONTINUE

    # ---- request body ----------------------------------------------------------------
    def request_body(self, body: bytes, end_of_stream: bool = True) -> Decision | Step:
        agent = self.agent
        assert self.endpoint is not None, "request_body before request_headers"
        if not end_of_stream:
            # The generated filter config buffers whole bodies; a hand-written one that
            # streams them cannot work with the agent. Say so instead of guessing.
            log.error("received a partial request body: set request_body_mode BUFFERED")
            return self._error(_PARTIAL_BODY)
        try:
            self._body_bytes = len(body)
            self._raw = body
            if self.endpoint is Endpoint.MESSAGES:
                req = self.request = anthropic.parse_request(body)
            else:
                req = self.request = parse_request(self.endpoint, body)
            if not agent.router.knows(req.model):
                raise errors.model_not_found(req.model, agent.router.model_names)
            self.model = req.model
            # Before the cache: a refused override is refused whether or not it would hit.
            self._overrides = self._client_overrides()
            hit = self._lookup(req)
            if hit is not None:
                return hit
            if self._cache_lookup() and agent.shared is not None:
                assert self.key is not None
                return SharedLookup(self.key)  # the server asks Redis
            return self._after_local_miss(req)
        except ApiError as exc:
            return self._error(exc)

    def _cache_lookup(self) -> bool:
        return self.key is not None and self._policy is not None and self._policy.lookup

    def _after_local_miss(self, req: ParsedRequest) -> Decision | Step:
        """No answer in this process (nor in Redis): wait for an identical request in
        flight, here or (with Redis) in another process, or lead and go on."""
        agent = self.agent
        flights = agent.flights
        if flights is not None and self._cache_lookup():
            assert self.key is not None
            local = agent.cache.get(self.key) if agent.cache is not None else None
            if local is not None:
                # Stored while this request waited on Redis: no second provider call.
                reply = self._serve(req, local.body, "hit")
                if reply is not None:
                    return reply
            flight, leader = flights.join(self.key)
            wait_s = agent.config.cache.coalesce.max_wait_s
            if not leader:
                return WaitFor(flight, wait_s)
            self._flight = flight
            if agent.shared is not None:
                return SharedLease(self.key, wait_s)
        return self._after_exact_miss(req)

    def shared_result(self, entry: SharedEntry | None) -> Decision | Step:
        """Continue after the Redis lookup `request_body` asked for."""
        req = self.request
        assert req is not None
        if entry is not None:
            reply = self._serve(req, entry.body, "hit")
            if reply is not None:
                return reply
        try:
            return self._after_local_miss(req)
        except ApiError as exc:
            return self._error(exc)

    def lease_result(self, acquired: bool) -> Decision | Step:
        """The cross-process lease for this key: held (lead), or wait for its holder."""
        req = self.request
        assert req is not None and self.key is not None
        if not acquired:
            return SharedWait(self.key, self.agent.config.cache.coalesce.max_wait_s)
        self._lease = True
        try:
            return self._after_exact_miss(req)
        except ApiError as exc:
            return self._error(exc)

    def shared_waited(self, entry: SharedEntry | None) -> Decision | Step:
        """After waiting for another process's identical request: its answer, or go on."""
        return self.coalesced(entry.body if entry is not None else None)

    def _after_exact_miss(self, req: ParsedRequest) -> Decision | SemanticLookup:
        if self._scope is not None:
            return SemanticLookup(*self._scope)  # the server embeds and searches
        return self._route(req)

    def coalesced(self, body: bytes | None) -> Decision | Step:
        """Continue after waiting for an identical request: its answer, or go on alone."""
        req = self.request
        assert req is not None
        if body is not None:
            reply = self._serve(req, body, "coalesced")
            if reply is not None:
                self.agent.metrics.coalesced.labels("served").inc()
                return reply
        self.agent.metrics.coalesced.labels("fell_through").inc()
        try:
            return self._after_exact_miss(req)
        except ApiError as exc:
            return self._error(exc)

    def _land(self, body: bytes | None) -> None:
        """As a leader: hand the stored answer (or None) to the requests waiting for it."""
        flight, self._flight = self._flight, None
        if flight is not None and self.agent.flights is not None:
            self.agent.flights.land(flight, body)
        if self._lease:
            # Other processes' waiters see the entry (written before the release) or,
            # with no entry, that the lease is gone: they go upstream themselves.
            self._lease = False
            assert self.agent.shared is not None and self.key is not None
            self.agent.shared.release_lease(self.key)

    def semantic_result(self, result: LookupResult) -> Decision:
        """Continue after the semantic lookup that `request_body` asked for."""
        agent = self.agent
        req = self.request
        assert req is not None and self._policy is not None
        self._semantic = result
        m = agent.metrics
        if result.error is not None:
            m.semantic_lookups.labels("timeout" if result.timed_out else "error").inc()
            _warn_throttled(agent.clock(), "semantic lookup skipped: %s", result.error)
        elif not self._policy.lookup:
            # cache-control: no-cache: looked up only for the vector, to store the answer.
            m.semantic_lookups.labels("store_only").inc()
        elif result.hit is None:
            m.semantic_lookups.labels("refused" if result.refused else "miss").inc()
            if result.refused:
                m.semantic_refusals.labels(result.refused).inc()
        elif agent.semantic_mode == "shadow":
            m.semantic_lookups.labels("shadow_hit").inc()
            self._shadow_hit = result.hit
        else:
            reply = self._serve(req, result.hit.entry.body, "semantic-hit")
            if reply is None:
                # Stored, but not replayable as asked: worthless, drop it.
                m.semantic_lookups.labels("unservable").inc()
                assert agent.semantic is not None
                agent.semantic.remove(result.hit.entry.id)
            else:
                m.semantic_lookups.labels("hit").inc()
                m.semantic_score.observe(result.hit.score)
                reply.headers.append((SCORE_HEADER, f"{result.hit.score:.4f}"))
                return reply
        try:
            return self._route(req)
        except ApiError as exc:
            return self._error(exc)

    def _route(self, req: ParsedRequest) -> Continue:
        agent = self.agent
        endpoint = self.endpoint
        assert endpoint is not None
        pin, exclude = self._overrides
        choice = agent.router.pick(
            req.model, endpoint, needs_of(req, self._body_bytes), pin, exclude
        )
        target = self.target = choice.target
        agent.metrics.routing_decisions.labels(self.model, target.key, choice.reason).inc()
        if self._shadow_hit is not None:
            self._count_shadow_savings(self._shadow_hit, target)
        caching = self.key is not None and self._policy is not None and self._policy.store
        chain = agent.router.chain_cluster(req.model, target) if choice.chain else None
        if chain is not None:
            # Failover: Envoy tries the chain's targets in order; the upstream filter
            # (attempt.py) translates and authenticates each attempt. Nothing of the
            # provider's is set here.
            self.chained = chain
            self._attempt_key = agent.attempts.begin(self.path, self.query)
            set_headers = [
                (agent.config.envoy.routing_header, chain),
                (ATTEMPT_KEY_HEADER, self._attempt_key),  # overwrites any client value
            ]
            set_headers.append(("accept-encoding", "identity"))  # any attempt may translate
            new_body = None
        else:
            leg = self._leg = ProviderLeg(agent, target, req, self.model)
            try:
                provider_headers, new_body = leg.request_changes(self.query, self._raw)
            except ApiError:
                target.health.on_cancel()  # never sent: release a half-open probe it took
                raise
            set_headers = [(agent.config.envoy.routing_header, target.provider.name)]
            set_headers += provider_headers
            if caching and not leg.translating:
                # A compressed answer could not be parsed for the cache.
                set_headers.append(("accept-encoding", "identity"))
        injected = {name for name, _ in set_headers}
        self._sent_at = agent.clock()
        return Continue(
            set_headers=set_headers,
            remove_headers=[
                *(h for h in CLIENT_ONLY_HEADERS if h not in injected),
                PIN_HEADER,
                EXCLUDE_HEADER,
            ],
            body=new_body,
            clear_route_cache=True,
        )

    def _client_overrides(self) -> tuple[str | None, frozenset[str]]:
        """The client's pin / exclude headers, when the config lets clients steer."""
        pin = self.req_headers.get(PIN_HEADER, "").strip() or None
        raw = self.req_headers.get(EXCLUDE_HEADER, "")
        exclude = frozenset(p.strip() for p in raw.split(",") if p.strip())
        if (pin or exclude) and not self.agent.config.routing.client_overrides:
            raise errors.invalid_request(
                f"The headers {PIN_HEADER} / {EXCLUDE_HEADER} are not enabled on this "
                "gateway (routing.client_overrides: false); remove them, or ask the "
                "gateway's operator to enable them.",
                code="routing_override_disabled",
            )
        return pin, exclude

    def _lookup(self, req: ParsedRequest) -> Respond | None:
        agent = self.agent
        if agent.cache is None and agent.semantic is None:
            return None
        policy = self._policy = cache_policy(
            req, self.req_headers, allow_nonzero_temperature=agent.allow_nonzero_temperature
        )
        if not (policy.lookup or policy.store):
            return None
        # The query and answer-changing headers are forwarded: they belong in the key.
        variant = request_variant(self.query, self.req_headers, agent.vary_headers)
        try:
            self.key = cache_key("", req, variant)
        except orjson.JSONEncodeError:
            raise _TOO_DEEP from None
        if policy.lookup:
            self.cache_result = "miss"
            entry = agent.cache.get(self.key) if agent.cache is not None else None
            if entry is not None:
                reply = self._serve(req, entry.body, "hit")
                if reply is not None:
                    return reply
                # An entry that cannot be replayed is worthless: drop it and ask upstream.
                log.warning("dropping a cache entry that cannot be replayed as a stream")
                assert agent.cache is not None
                agent.cache.delete(self.key)
        if agent.semantic is not None:
            # Only now, after an exact miss: exact hits never pay for the partition hash.
            try:
                self._scope = semantic_scope(
                    "",
                    req,
                    history=agent.semantic_history,
                    max_chars=agent.semantic_max_chars,
                    variant=variant,
                )
            except orjson.JSONEncodeError:
                raise _TOO_DEEP from None
        return None

    def _serve(self, req: ParsedRequest, stored: bytes, result: str) -> Respond | None:
        """A cached answer as the client asked for it (JSON, or replayed SSE)."""
        reply = self._replay(req, stored, result)
        if reply is not None:
            self._land(stored)  # a leader answered from cache: so are its followers
            tier = {"hit": "exact", "semantic-hit": "semantic"}.get(result, result)
            self._count_saved(stored, tier)
        return reply

    def _count_saved(self, stored: bytes, tier: str) -> None:
        # Priced at the model's first target: the one a miss would normally have used.
        target = self.agent.router.first_target(self.model)
        price = target.provider.model(target.model) if target is not None else None
        usage = tokens_of(usage_of(stored, self.client_schema))
        if price is None or usage is None:
            return
        saved = usage[0] * price.input_per_mtok + usage[1] * price.output_per_mtok
        self.agent.metrics.cost_saved.labels(self.model, tier).inc(saved / 1_000_000)

    def _replay(self, req: ParsedRequest, stored: bytes, result: str) -> Respond | None:
        if req.stream:
            try:
                if req.endpoint is Endpoint.MESSAGES:
                    body = anthropic.replay_stream(orjson.loads(stored))
                else:
                    body = replay_stream(req.endpoint, orjson.loads(stored), req.include_usage)
            except ValueError:
                return None
            self.cache_result = result
            return self._respond(200, body, EVENT_STREAM, result, stream=True)
        self.cache_result = result
        return self._respond(200, stored, JSON, result)

    def _count_shadow_savings(self, hit: SemanticHit, target: Target) -> None:
        # What serving the would-be hit would have saved: its usage at this target's prices.
        price = target.provider.model(target.model)
        usage = tokens_of(usage_of(hit.entry.body, self.client_schema))
        saved = 0.0
        if price is not None and usage is not None:
            saved = (usage[0] * price.input_per_mtok + usage[1] * price.output_per_mtok) / 1_000_000
        self.agent.metrics.semantic_shadow_saved.labels(self.model).inc(saved)

    # ---- response headers ------------------------------------------------------------
    def response_headers(self, headers: Mapping[str, str]) -> Decision:
        agent = self.agent
        status = headers.get(":status", "")
        if self.chained:
            # Attempts measured and judged themselves; name the target that answered
            # before counting the request, and judge the attempts that never could.
            self._judge_silent_attempts(self._adopt_answering_target(headers), headers)
        self._finish(status)
        if self.target is not None and self._sent_at and not self.chained:
            elapsed = agent.clock() - self._sent_at
            agent.metrics.upstream_seconds.labels(self.target.provider.name).observe(elapsed)
            self._report_health(status, headers, elapsed)
        self._sent_at = 0.0
        decision = Continue(
            set_headers=[(CACHE_HEADER, self.cache_result)],
            remove_headers=[*PROVIDER_ONLY_HEADERS, ATTEMPT_COUNT_HEADER],
        )
        if self.key is not None:
            decision.set_headers.append((CACHE_KEY_HEADER, self.key))  # for purges
        target = self.target
        if target is None:
            self.done = True
            return decision
        leg = self._leg
        translating = False
        if leg is not None:
            set_headers, remove, want = leg.response_headers(status, headers)
            decision.set_headers += set_headers
            decision.remove_headers += remove
            if want is not None:
                translating = True
                decision.response_body_mode = BodyMode.STREAMED if want else BodyMode.BUFFERED
        metered_upstream = headers.get(METERED_HEADER) is not None
        if metered_upstream:
            decision.remove_headers.append(METERED_HEADER)
        identity = headers.get("content-encoding", "identity").lower() == "identity"
        if status == "200" and self.key is not None and self._policy and self._policy.store:
            capture = self._capture_mode(headers)
            if decision.response_body_mode is None:
                decision.response_body_mode = capture
        elif (
            status == "200"
            and identity
            and not translating
            and not metered_upstream
            and headers.get("content-type", "").startswith(JSON)
        ):
            # Whole JSON answers are read for their usage (tokens and cost metrics).
            decision.response_body_mode = BodyMode.BUFFERED
        self._metered_upstream = metered_upstream or translating
        if decision.response_body_mode is None and status == "200" and not metered_upstream:
            self._count_usage(None)  # a stream nobody reads: its usage stays unknown
        self.done = decision.response_body_mode is None
        if self._assembler is None and self._captured is None:
            self._land(None)  # nothing will be stored: followers go on their own
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
        states = agent.attempts.finish(self._attempt_key)
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

    def _report_health(self, status: str, headers: Mapping[str, str], elapsed: float) -> None:
        assert self.target is not None
        if self.chained:
            return  # each attempt reports its own outcome (attempt.py)
        streamed = self.request is not None and self.request.stream
        report_outcome(self.target, status, headers, elapsed, streamed)
        self._sent_at = 0.0

    def _include_usage(self) -> bool:
        return self.request is not None and self.request.include_usage

    def _capture_mode(self, headers: Mapping[str, str]) -> BodyMode | None:
        if headers.get("content-encoding", "identity").lower() != "identity":
            self._count_store("encoded")
            return None
        content_type = headers.get("content-type", "")
        if content_type.startswith(EVENT_STREAM):
            if self.endpoint is Endpoint.MESSAGES:
                self._assembler = anthropic.MessagesAssembler()
            elif self.endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
                self._assembler = StreamAssembler(self.endpoint)
            else:
                return None
            return BodyMode.STREAMED
        if not content_type.startswith(JSON):
            return None
        length = headers.get("content-length")
        self._captured = []
        if length is not None and length.isascii() and length.isdigit():
            if int(length) > self.agent.max_entry_bytes:
                self._count_store("too_large")
                self._captured = None
                return None
            return BodyMode.BUFFERED  # one message for the whole body
        return BodyMode.STREAMED  # chunked JSON: collect chunks, give up past the size limit

    # ---- response body ---------------------------------------------------------------
    def response_body(self, chunk: bytes, end_of_stream: bool) -> Decision:
        if end_of_stream:
            self.done = True
        out = None
        if self._leg is not None:
            out = self._leg.response_body(chunk, end_of_stream, self.status or "")
        if out is not None:
            chunk = out
        elif (
            end_of_stream
            and self.status == "200"
            and self._assembler is None
            and not self._metered_upstream
        ):
            whole = b"".join(self._captured) + chunk if self._captured else chunk
            self._count_usage(usage_of(whole, self.client_schema))
        self._capture(chunk, end_of_stream)
        if out is not None:
            leg = self._leg
            assert leg is not None
            if leg.stream_out is None:
                # A whole body: its headers are still held, and follow the new body.
                return Continue(body=out, set_headers=leg.body_headers())
            return Continue(body=out, chunk=True)
        return _CONTINUE

    def _count_usage(self, usage: object) -> None:
        if self.target is None or self._metered_upstream:
            return
        leg = self._leg
        if leg is None:
            assert self.request is not None
            leg = ProviderLeg(self.agent, self.target, self.request, self.model)
        leg.count_usage(usage)

    def _capture(self, chunk: bytes, end_of_stream: bool) -> None:
        if self._assembler is not None:
            self._capture_bytes += len(chunk)
            if self._capture_bytes > self.agent.max_entry_bytes:
                self._assembler = None
                self._count_store("too_large")
                self._count_usage(None)  # no longer read: its usage stays unknown
                self.done = True  # the rest of the stream is of no use: let it flow
            else:
                self._assembler.feed(chunk)
                if end_of_stream:
                    self._store_stream()
        elif self._captured is not None:
            self._capture_bytes += len(chunk)
            if self._capture_bytes > self.agent.max_entry_bytes:
                self._captured = None
                self._count_store("too_large")
                self.done = True
            else:
                self._captured.append(chunk)
                if end_of_stream:
                    self._store_json(b"".join(self._captured))

    def _store_stream(self) -> None:
        assembler, self._assembler = self._assembler, None
        assert assembler is not None
        result = assembler.result()
        if not self._metered_upstream:
            usage = result.get("usage") if result is not None else None
            if self.client_schema == "anthropic" and isinstance(usage, dict):
                usage = translate.openai_usage(usage)
            self._count_usage(usage)
        if result is None:
            self._count_store("incomplete")
            return
        self._put(orjson.dumps(result))

    def _store_json(self, body: bytes) -> None:
        self._captured = None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._count_store("invalid")
            return
        assert self.endpoint is not None
        complete = (
            anthropic.is_complete_message(parsed)
            if self.endpoint is Endpoint.MESSAGES
            else is_complete_response(self.endpoint, parsed)
        )
        if not complete:
            self._count_store("incomplete")
            return
        self._put(body)

    def _put(self, body: bytes) -> None:
        self._land(body)
        agent = self.agent
        assert self.key is not None
        stored = True
        if agent.cache is not None:
            stored = agent.cache.put(self.key, body, model=self.model)
        sem = self._semantic
        shared_vector = None
        if (
            agent.semantic is not None
            and self._scope is not None
            and sem is not None
            and sem.vector is not None
            and sem.signature is not None
            and len(body) <= agent.max_entry_bytes
        ):
            # The vector computed for the lookup is reused: no second embedding.
            agent.semantic.store(
                self._scope[0],
                self._scope[1],
                sem.vector,
                sem.signature,
                body,
                model=self.model,
                key=self.key,
            )
            shared_vector = (agent.semantic.namespace, *self._scope, sem.vector)
        if agent.shared is not None and stored:
            agent.shared.put(
                self.key,
                body,
                model=self.model,
                endpoint=str(self.endpoint),
                semantic=shared_vector,
            )
        self._count_store("stored" if stored else "too_large")

    def _count_store(self, outcome: str) -> None:
        if outcome != "stored":
            self._land(None)
        self.agent.metrics.cache_stores.labels(str(self.endpoint), outcome).inc()

    # ---- end of the stream -------------------------------------------------------------
    def close(self) -> None:
        """The ext_proc stream ended: count a request that never got a status as aborted."""
        self._land(None)
        if self._leg is not None:
            self._leg.abandon()
        if self.status is None:
            self._finish("aborted")
        if self.target is not None and self._sent_at:
            self.target.health.on_cancel()  # sent, never answered: frees a half-open probe

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
        m.requests.labels(endpoint, self.model, provider, status).inc()
        if self.request is not None:
            m.cache_results.labels(endpoint, self.cache_result).inc()

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
        headers = [("content-type", content_type), (CACHE_HEADER, cache), *extra]
        if self.key is not None and cache != "bypass":
            headers.append((CACHE_KEY_HEADER, self.key))  # for purges
        if stream:
            headers.append(("cache-control", "no-cache"))
        return Respond(status, headers, body)

    def _error(self, exc: ApiError) -> Respond:
        log.debug("refused %s with %d: %s", self.path, exc.status, exc.message)
        self._land(None)  # waiting identical requests go on by themselves
        body = anthropic.error_body(exc) if self.client_schema == "anthropic" else exc.body()
        return self._respond(exc.status, body, JSON, "bypass", extra=exc.headers)


_last_warning = [float("-inf")]


def _warn_throttled(now: float, message: str, *args: object) -> None:
    # A dead embedder fails every request's lookup: one log line per 10 s says it,
    # the metric counts every one.
    if now - _last_warning[0] >= 10.0:
        _last_warning[0] = now
        log.warning(message + " (further ones for 10 s only in metrics)", *args)
