"""Who called (a `Caller`), and what the config lets each tenant do (`Tenants`). Sans-IO."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from edge_agent.identity.keys import KeyRecord
from edge_agent.identity.settings import DEFAULT_TENANT, OTHER_TENANT, Tenant

Via = Literal["anonymous", "key", "jwt", "forwarded_claims", "mesh"]
# The cache pool of every `cache: shared` tenant. Tenant names are [a-z0-9_.-], so no
# tenant's own namespace can be this.
_SHARED_POOL = "*shared"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    via: Via
    subject: str | None = None  # JWT subject or SPIFFE id
    key: KeyRecord | None = None  # the virtual key used, for its own limits


ANONYMOUS = Caller(DEFAULT_TENANT, "anonymous")
# Before the identity stage has run (and for requests it refused): no tenant yet.
UNIDENTIFIED = Caller("-", "anonymous")


class Tenants:
    """The configured tenants, by name. The default tenant, when not configured, gets the
    defaults: every model, an isolated cache. Callers naming any other tenant are
    refused by the identity stage."""

    def __init__(self, tenants: Iterable[Tenant]) -> None:
        self._by_name = {t.name: t for t in tenants}
        self._allowed = {
            t.name: frozenset(t.models) for t in self._by_name.values() if t.models is not None
        }

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def may_use(self, tenant: str, model: str) -> bool:
        allowed = self._allowed.get(tenant)
        return allowed is None or model in allowed

    def models_of(self, tenant: str) -> frozenset[str] | None:
        """The models `tenant` may use; None: all."""
        return self._allowed.get(tenant)

    def cache_namespace(self, tenant: str) -> str:
        """What the cache keys of `tenant`'s requests start with: its own name, or the
        pool every shared tenant uses. The default tenant keeps the empty namespace that
        keys had before tenants existed, so upgrading keeps the cache warm."""
        settings = self._by_name.get(tenant)
        if settings is not None and settings.cache == "shared":
            return _SHARED_POOL
        return "" if tenant == DEFAULT_TENANT else tenant

    def label(self, tenant: str) -> str:
        """The metrics label: configured tenants and the default; all others as one."""
        known = tenant in self._by_name or tenant in (DEFAULT_TENANT, UNIDENTIFIED.tenant)
        return tenant if known else OTHER_TENANT

    def config_keys(self) -> list[KeyRecord]:
        return [
            KeyRecord(
                f"config:{t.name}:{k.name}",
                k.name,
                t.name,
                k.sha256,
                "config",
                limits=k.limits.model_dump(exclude_none=True) or None,
                budget=k.budget.model_dump(exclude_none=True) or None,
            )
            for t in self._by_name.values()
            for k in t.keys
        ]

    def get(self, name: str) -> Tenant | None:
        return self._by_name.get(name)
