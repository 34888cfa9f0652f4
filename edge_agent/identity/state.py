"""One process's identity state: the tenants, the keys it accepts, the JWT verifier.

Built from the config (sans-IO); the runtime attaches the adapters that do I/O (the
key store's sync, the JWKS fetcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from edge_agent.identity.jwt import (
    ClaimIdentity,
    JwtIssuer,
    JwtVerifier,
    Refused,
    claims_from_forwarded_payload,
    identity_from_claims,
)
from edge_agent.identity.keys import KeyRing
from edge_agent.identity.settings import AuthConfig, Tenant, pod_workload
from edge_agent.identity.tenants import Tenants

if TYPE_CHECKING:
    from edge_agent.identity.jwks import JwksFetcher

log = logging.getLogger("edge_agent.identity")


class Identity:
    def __init__(
        self,
        auth: AuthConfig,
        tenants: list[Tenant],
        *,
        environ: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth = auth
        self.tenants = Tenants(tenants)
        self.ring = KeyRing(self.tenants.config_keys())
        self.wall_clock = wall_clock
        self.workload = _workload_spiffe_id(auth, environ)
        self.verifier = JwtVerifier(_issuers(auth, environ)) if auth.jwt else None
        # The JWKS adapter (I/O), attached by the runtime (edge_agent.runtime.wiring).
        self.jwks: JwksFetcher | None = None
        self._jwks_task: asyncio.Task[None] | None = None
        self._models_bodies: dict[str, bytes] = {}

    def attach_jwks(self, fetcher: JwksFetcher) -> None:
        self.jwks = fetcher

    async def start(self) -> None:
        """Load the JWT issuers' signing keys and keep them fresh (an IdP that is down
        does not stop the start: its tokens are refused until its keys load)."""
        if self.jwks is not None:
            await self.jwks.warm()
            self._jwks_task = asyncio.ensure_future(self.jwks.run())

    async def close(self) -> None:
        if self._jwks_task is not None:
            self._jwks_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._jwks_task
            self._jwks_task = None
        if self.jwks is not None:
            await self.jwks.close()

    async def refresh_jwks(self, issuer: str) -> None:
        if self.jwks is not None:
            await self.jwks.refresh(issuer)

    def forwarded(self, value: str) -> ClaimIdentity | Refused:
        """Who a forwarded claims header (Istio `outputPayloadToHeader`) names."""
        cfg = self.auth.forwarded_claims
        assert cfg is not None
        claims = claims_from_forwarded_payload(value)
        if claims is None:
            return Refused("malformed", "the forwarded token claims are not readable")
        if cfg.issuers and claims.get("iss") not in cfg.issuers:
            return Refused.because("untrusted_issuer")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if cfg.audiences and not any(a in cfg.audiences for a in audiences):
            return Refused.because("audience")
        return identity_from_claims(
            claims, tenant_claim=cfg.tenant_claim, subject_claim=cfg.subject_claim
        )

    def models_body(self, tenant: str, build: Callable[[frozenset[str] | None], bytes]) -> bytes:
        """`GET /v1/models` for `tenant`: only what it may use (built once per tenant)."""
        body = self._models_bodies.get(tenant)
        if body is None:
            body = self._models_bodies[tenant] = build(self.tenants.models_of(tenant))
        return body


def _workload_spiffe_id(auth: AuthConfig, environ: Mapping[str, str] | None) -> str | None:
    """This pod's SPIFFE id when the injection template told it (sidecar mode)."""
    if auth.mesh.enabled is False:
        return None
    pod = pod_workload(os.environ if environ is None else environ)
    if pod is None:
        return None
    return f"spiffe://{auth.mesh.trust_domain}/ns/{pod[0]}/sa/{pod[1]}"


def _issuers(auth: AuthConfig, environ: Mapping[str, str] | None) -> list[JwtIssuer]:
    """The configured issuers the verifier can use; one whose secret is missing or too
    short is left out, loudly (its tokens are then refused as from an untrusted issuer)."""
    env = os.environ if environ is None else environ
    issuers = []
    for cfg in auth.jwt:
        secret = None
        if cfg.secret_env is not None:
            secret = (env.get(cfg.secret_env) or "").strip().encode() or None
            if secret is None:
                log.error(
                    "auth.jwt issuer %r: its secret variable %s is not set; its tokens are refused",
                    cfg.issuer,
                    cfg.secret_env,
                )
                continue
        try:
            issuers.append(
                JwtIssuer(
                    cfg.issuer,
                    tuple(cfg.audiences),
                    cfg.tenant_claim,
                    cfg.subject_claim,
                    jwks_url=cfg.jwks_url,
                    jwks_file=cfg.jwks_file,
                    secret=secret,
                    leeway_s=cfg.leeway_s,
                    min_refresh_interval_s=cfg.min_refresh_interval_s,
                )
            )
        except ValueError as exc:
            log.error("auth.jwt issuer %r is unusable: %s; its tokens are refused", cfg.issuer, exc)
    return issuers
