"""Resolve a client-facing model to a provider target.

A target whose provider lacks its credential (its `api_key_env` is unset) is skipped:
sending an unauthenticated request upstream would only produce a confusing 401.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from edge_agent.api import errors
from edge_agent.config import Config, ModelRoute, Provider, read_credential
from edge_agent.providers.base import ProviderAdapter, build_adapter


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    adapter: ProviderAdapter
    model: str  # the provider's own model name
    api_key: str | None


class _Route:
    __slots__ = ("_cycle", "name", "owned_by", "targets", "unusable")

    def __init__(
        self, name: str, owned_by: str, targets: list[Target], unusable: list[str]
    ) -> None:
        self.name = name
        self.owned_by = owned_by
        self.targets = targets
        self.unusable = unusable  # human-readable reasons, for the 503 message
        self._cycle: Iterator[Target] | None = itertools.cycle(targets) if targets else None

    def next(self) -> Target:
        if self._cycle is None:
            raise errors.service_unavailable(
                f"Model '{self.name}' has no usable provider: {'; '.join(self.unusable)}.",
                code="no_available_provider",
            )
        return next(self._cycle)


class Router:
    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        adapters = {p.name: build_adapter(p) for p in config.providers}
        self._routes: dict[str, _Route] = {}
        for route in config.models:
            self._routes[route.name] = self._build(route, config, adapters, env)

    @staticmethod
    def _build(
        route: ModelRoute,
        config: Config,
        adapters: Mapping[str, ProviderAdapter],
        env: Mapping[str, str],
    ) -> _Route:
        targets: list[Target] = []
        unusable: list[str] = []
        for spec in route.targets:
            pname, _, model = spec.partition("/")
            provider = config.provider(pname)
            key, problem = read_credential(provider, env)
            if problem:
                unusable.append(f"provider '{pname}' is disabled: {problem}")
                continue
            targets.append(Target(provider, adapters[pname], model, key))
        owned_by = route.targets[0].partition("/")[0]
        return _Route(route.name, owned_by, targets, unusable)

    @property
    def model_names(self) -> list[str]:
        return list(self._routes)

    def knows(self, model: str) -> bool:
        return model in self._routes

    def pick(self, model: str) -> Target:
        route = self._routes.get(model)
        if route is None:
            raise errors.model_not_found(model, self._routes)
        return route.next()

    def owner(self, model: str) -> str:
        """`owned_by` for /v1/models: the provider of the first target."""
        return self._routes[model].owned_by
