"""The agent's shared state: config, router, cache tiers, metrics, the request
pipeline. Sans-IO: the tiers that need I/O to build are handed in (runtime/wiring.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from edge_agent.api.openai import ENDPOINT_BY_PATH, models_list
from edge_agent.audit.trail import Audit
from edge_agent.cache.coalesce import Flights
from edge_agent.cache.exact import ExactCache
from edge_agent.cache.keys import VARY_HEADERS
from edge_agent.config import Config
from edge_agent.extproc.attempt import Attempt
from edge_agent.extproc.attempt_log import AttemptLog
from edge_agent.extproc.exchange import Exchange
from edge_agent.guardrails.stage import Guardrails
from edge_agent.identity.state import Identity
from edge_agent.identity.tenants import Caller
from edge_agent.limits.limiter import Limiter
from edge_agent.pipeline.extensions import load_response_stages, load_slots
from edge_agent.pipeline.order import header_stages, request_stages
from edge_agent.routing.health import CIRCUIT_STATES
from edge_agent.routing.router import Router
from edge_agent.telemetry.metrics import Metrics
from edge_agent.telemetry.observe import Observer

if TYPE_CHECKING:
    from edge_agent.cache.semantic import SemanticTier
    from edge_agent.cache.shared import SharedCache


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        semantic: SemanticTier | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.router = Router(config, environ, clock)
        self.attempts = AttemptLog()
        self.flights: Flights | None = Flights() if config.cache.coalesce.enabled else None
        self.endpoints = ENDPOINT_BY_PATH
        exact = config.cache.exact
        self.cache: ExactCache | None = (
            ExactCache(
                exact.max_entries,
                exact.ttl_s,
                max_entry_bytes=exact.max_entry_bytes,
                max_bytes=exact.max_bytes,
            )
            if exact.enabled
            else None
        )
        self.max_entry_bytes = exact.max_entry_bytes
        self.allow_nonzero_temperature = config.cache.allow_nonzero_temperature
        self.vary_headers = (*VARY_HEADERS, *config.cache.vary_headers)
        # Who is calling: only when the config asks (no auth, no tenants: no stage).
        auth = config.auth.active or bool(config.tenants)
        self.identity: Identity | None = (
            Identity(config.auth, config.tenants, environ=environ) if auth else None
        )
        # Caller identity headers beyond CLIENT_ONLY_HEADERS: never sent to a provider.
        claims = config.auth.forwarded_claims
        self.identity_headers: tuple[str, ...] = (claims.header,) if claims else ()
        # The request pipeline, with the config's own stages in its slots.
        slots = load_slots(config.pipeline)
        self.header_stages = header_stages(slots, auth=auth)
        # Limits need callers: with identity on, any tenant or key may have some (keys
        # made at run time included). The shared ledger (Redis) comes from the runtime.
        self.limiter: Limiter | None = (
            Limiter(config, self.identity.tenants, self.metrics)
            if self.identity is not None
            else None
        )
        # The audit trail (its sink is I/O: attached by the runtime, runtime/wiring.py).
        self.audit: Audit | None = None
        # The built-in guardrails (deny rules, personal data), compiled once: the global
        # block, and each tenant's own, which replaces it for that tenant's callers.
        self.guardrails: Guardrails | None = (
            Guardrails(config.guardrails) if config.guardrails.active else None
        )
        self.tenant_guardrails: dict[str, Guardrails | None] = {
            t.name: Guardrails(t.guardrails) if t.guardrails.active else None
            for t in config.tenants
            if t.guardrails is not None
        }
        any_guardrails = self.guardrails is not None or any(self.tenant_guardrails.values())
        self.request_stages = request_stages(
            slots, auth=auth, limits=auth, guardrails=any_guardrails
        )
        self.response_stages = load_response_stages(config.pipeline)
        # Each target's circuit, and each tenant's budget, for dashboards and alerts.
        for target in self.router.targets():
            health = target.health
            self.metrics.track(
                self.metrics.target_state.labels(target.key),
                lambda health=health: CIRCUIT_STATES[health.state],
            )
        for tenant in config.tenants:
            for period, usd in (
                ("day", tenant.budget.usd_per_day),
                ("month", tenant.budget.usd_per_month),
            ):
                if usd is not None:
                    self.metrics.budget_usd.labels(tenant.name, period).set(usd)
        # The request log line, traces (attached by the runtime) and Envoy's access-log
        # metadata; None when all are off: then no request pays for them.
        self.observer: Observer | None = Observer(config) if Observer.wanted(config) else None
        # /v1/models never changes while the process runs: build the answer once.
        self._created = int(time.time())
        self.models_body = self._models_list(None)
        if self.cache is not None:
            cache = self.cache
            self.metrics.track(self.metrics.cache_entries, lambda: len(cache))
            self.metrics.track(self.metrics.cache_bytes, lambda: cache.bytes)
        sem = config.cache.semantic
        self.semantic_mode = sem.mode
        self.semantic_history = sem.history
        self.semantic_max_chars = sem.max_text_chars
        # The tiers that need I/O to build (an embedding model, Redis) are built by the
        # runtime (edge_agent.runtime.wiring) and handed in.
        self.semantic: SemanticTier | None = semantic
        if self.semantic is not None:
            tier = self.semantic
            self.metrics.track(self.metrics.semantic_entries, lambda: len(tier))
            self.metrics.track(self.metrics.semantic_bytes, lambda: tier.bytes)
            self.metrics.track(self.metrics.semantic_partitions, tier.partition_count)

        # The shared tier (Redis) between replicas and workers: `attach_shared`.
        self.shared: SharedCache | None = None
        # The Redis client runtime keys, limits and spend share (runtime/wiring.py).
        self.aux_redis: Any = None

    def _models_list(self, only: frozenset[str] | None) -> bytes:
        names = self.router.model_names
        return models_list(
            ((n, self.router.owner(n)) for n in names if only is None or n in only),
            self._created,
        )

    def visible_models(self, caller: Caller) -> list[str]:
        """The client-facing models `caller` may know of (error messages name no others)."""
        names = self.router.model_names
        only = self.identity.tenants.models_of(caller.tenant) if self.identity else None
        return names if only is None else [n for n in names if n in only]

    def models_body_for(self, caller: Caller) -> bytes:
        """`GET /v1/models` as `caller` sees it: its tenant's models only."""
        if self.identity is None:
            return self.models_body
        return self.identity.models_body(caller.tenant, self._models_list)

    def attach_shared(self, shared: SharedCache) -> None:
        self.shared = shared

    def exchange(self) -> Exchange:
        return Exchange(self)

    def attempt(self) -> Attempt:
        return Attempt(self)
