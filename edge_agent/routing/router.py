"""Resolve a client-facing model to a provider target: filter, order, check health.

Per request: targets that cannot serve the request (wrong endpoint, a capability it
needs, a context window too small) are filtered out with a reason; the model's strategy
orders the rest; the first healthy one is taken (circuit breaker, Retry-After cooldown:
`health.py`). When every eligible target is unhealthy the best-ordered one is tried
anyway: a request that might succeed beats a certain 503.

A target whose provider lacks its credential (its `api_key_env` is unset) is skipped:
sending an unauthenticated request upstream would only produce a confusing 401.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent.api import errors
from edge_agent.api.openai import Endpoint, ParsedRequest
from edge_agent.config import Config, ModelRoute, Provider, failover_chains, read_credential
from edge_agent.providers.base import ProviderAdapter
from edge_agent.providers.registry import build_adapter, provider_type
from edge_agent.routing.health import TargetHealth
from edge_agent.routing.strategies import (
    STRATEGIES,
    Candidate,
    Needs,
    Strategy,
    capability_filter,
    estimate_tokens,
)
from edge_agent.translate.common import requested_max_tokens

log = logging.getLogger("edge_agent.routing")

# Chat-style client endpoints translate to any chat provider through the OpenAI pivot.
_CHAT_ENDPOINTS = (Endpoint.CHAT, Endpoint.MESSAGES)


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    adapter: ProviderAdapter
    model: str  # the provider's own model name
    api_key: str | None
    health: TargetHealth
    key: str = ""  # "provider/model"


def serves(adapter: ProviderAdapter, endpoint: Endpoint) -> bool:
    if endpoint in adapter.endpoints:
        return True
    chat = adapter.codec is not None or Endpoint.CHAT in adapter.endpoints
    return chat and endpoint in _CHAT_ENDPOINTS


@dataclass(frozen=True, slots=True)
class Choice:
    """A routing decision: the target, why it was chosen, and whether the request may
    fail over along the model's chain (not when the client pinned or excluded targets)."""

    target: Target
    reason: str
    chain: bool


def needs_of(req: ParsedRequest, body_bytes: int) -> Needs:
    """What a request asks of a target, from its body (prompt size estimated)."""
    body = req.body
    max_out = requested_max_tokens(body)
    fmt = body.get("response_format")
    return Needs(
        tools=bool(body.get("tools")),
        vision=_has_image(body.get("messages")),
        json=isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"),
        prompt_tokens=estimate_tokens(body_bytes),
        max_output_tokens=max_out if type(max_out) is int else None,
        stream=req.stream,
    )


def _has_image(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                    return True
    return False


class _Route:
    __slots__ = ("candidates", "name", "owned_by", "strategy", "targets", "unusable")

    def __init__(
        self,
        route: ModelRoute,
        targets: list[Target],
        candidates: list[Candidate],
        unusable: list[str],
    ) -> None:
        self.name = route.name
        self.owned_by = route.targets[0].provider
        self.strategy: Strategy = STRATEGIES[route.strategy]()
        self.targets = {t.key: t for t in targets}
        self.candidates = candidates
        self.unusable = unusable  # human-readable reasons, for the 503 message


class Router:
    def __init__(
        self,
        config: Config,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        adapters = {p.name: build_adapter(p, env) for p in config.providers}
        self._clock = clock
        self._health: dict[str, TargetHealth] = {}  # one per provider/model, shared by routes
        self._routes: dict[str, _Route] = {}
        self._targets: dict[str, Target] = {}  # "provider/model" → target, every usable one
        for route in config.models:
            built = self._routes[route.name] = self._build(route, config, adapters, env)
            self._targets.update(built.targets)
        # (model, first target) → the Envoy cluster that fails over from it.
        self._chains: dict[tuple[str, str], str] = {}
        self._chain_order: dict[str, list[str]] = {}  # cluster → target keys, attempt order
        for cluster, specs in failover_chains(config, env).items():
            mi, _ = map(int, cluster.removeprefix("edge_agent_chain_").split("_"))
            self._chains[(config.models[mi].name, specs[0].target)] = cluster
            self._chain_order[cluster] = [spec.target for spec in specs]

    def _build(
        self,
        route: ModelRoute,
        config: Config,
        adapters: Mapping[str, ProviderAdapter],
        env: Mapping[str, str],
    ) -> _Route:
        targets: list[Target] = []
        candidates: list[Candidate] = []
        unusable: list[str] = []
        for index, spec in enumerate(route.targets):
            provider = config.provider(spec.provider)
            key, problem = read_credential(provider, env)
            if problem:
                unusable.append(f"provider '{spec.provider}' is disabled: {problem}")
                continue
            health = self._health.get(spec.target)
            if health is None:
                health = self._health[spec.target] = TargetHealth(spec.target, clock=self._clock)
            target = Target(provider, adapters[spec.provider], spec.model, key, health, spec.target)
            targets.append(target)
            info = provider.model(spec.model)
            candidates.append(
                Candidate(
                    key=spec.target,
                    index=index,
                    health=health,
                    weight=spec.weight,
                    input_per_mtok=info.input_per_mtok if info else 0.0,
                    output_per_mtok=info.output_per_mtok if info else 0.0,
                    capabilities=frozenset(info.capabilities)
                    if info and info.capabilities is not None
                    else None,
                    context_window=info.context_window if info else None,
                )
            )
        return _Route(route, targets, candidates, unusable)

    @property
    def model_names(self) -> list[str]:
        return list(self._routes)

    def knows(self, model: str) -> bool:
        return model in self._routes

    def pick(
        self,
        model: str,
        endpoint: Endpoint,
        needs: Needs,
        pin: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Choice:
        """The target for one request; raises ApiError when none can serve it.

        `pin` (a provider or provider/model) and `exclude` (providers or provider/models)
        come from the client's headers when the config allows them.
        """
        route = self._routes.get(model)
        if route is None:
            raise errors.model_not_found(model, self._routes)
        if not route.candidates:
            raise errors.service_unavailable(
                f"Model '{model}' has no usable provider: {'; '.join(route.unusable)}.",
                code="no_available_provider",
            )
        rejected: dict[str, str] = {}
        fitting = []
        for cand in route.candidates:
            target = route.targets[cand.key]
            adapter = target.adapter
            names = {cand.key, target.provider.name}
            if pin is not None and pin not in names:
                rejected[cand.key] = f"not the pinned target '{pin}'"
            elif names & exclude:
                rejected[cand.key] = "excluded by the request"
            elif not serves(adapter, endpoint):
                rejected[cand.key] = f"its provider type has no counterpart of {endpoint}"
            elif needs.json and not provider_type(target.provider.type).json_mode:
                rejected[cand.key] = f"JSON mode (response_format) has no {adapter.schema} form"
            else:
                fitting.append(cand)
        kept, more = capability_filter(fitting, needs)
        rejected.update(more)
        if not kept:
            reasons = "; ".join(f"{k}: {why}" for k, why in rejected.items())
            raise errors.invalid_request(
                f"No target of model '{model}' can serve this request ({reasons}).",
                code="no_capable_target",
            )
        ordered = route.strategy.order(kept, needs)
        reason = "pinned" if pin is not None else route.strategy.name
        chosen = next((c for c in ordered if c.health.available()), None)
        if chosen is None:
            chosen, reason = ordered[0], "all_unhealthy"
            log.warning(
                "model %s: every target is unhealthy; trying %s anyway (%s)",
                model,
                chosen.key,
                chosen.health.reason(),
            )
        log.debug(
            "model %s → %s by %s (order %s; rejected %s)",
            model,
            chosen.key,
            route.strategy.name,
            [c.key for c in ordered],
            rejected,
        )
        overridden = pin is not None or bool(exclude)
        return Choice(route.targets[chosen.key], reason, chain=not overridden)

    def chain_cluster(self, model: str, target: Target) -> str | None:
        """The failover cluster that starts with `target`, if the model fails over."""
        return self._chains.get((model, target.key))

    def chain_order(self, cluster: str) -> list[str]:
        return self._chain_order.get(cluster, [])

    def target(self, key: str) -> Target | None:
        """A usable target by its "provider/model" key."""
        return self._targets.get(key)

    def targets(self) -> list[Target]:
        """Every usable target."""
        return list(self._targets.values())

    def owner(self, model: str) -> str:
        """`owned_by` for /v1/models: the provider of the first target."""
        return self._routes[model].owned_by

    def first_target(self, model: str) -> Target | None:
        route = self._routes.get(model)
        if route is None or not route.targets:
            return None
        return next(iter(route.targets.values()))

    def snapshot(self) -> dict[str, Any]:
        """Routing state for the admin API: strategies, targets and their health."""
        return {
            "models": {
                name: {
                    "strategy": route.strategy.name,
                    "targets": [c.key for c in route.candidates],
                    "unusable": route.unusable,
                }
                for name, route in self._routes.items()
            },
            "targets": {key: health.snapshot() for key, health in self._health.items()},
        }
