"""Stages: who is calling (on the request's headers, before its body is read) and what
that caller's tenant may use (on the parsed body).

Credentials, in order: a key or JWT the caller sends (`Authorization: Bearer …` or
`x-api-key`), claims Istio verified and forwarded, the mesh identity (XFCC); none of
these and `auth.required: false`: the default tenant. Messages never echo what was sent.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.api.errors import ApiError
from edge_agent.identity.jwt import NeedKeys, Refused
from edge_agent.identity.keys import KEY_PREFIX, MAX_KEY_CHARS, hash_key
from edge_agent.identity.settings import FETCH_TIMEOUT_S
from edge_agent.identity.tenants import ANONYMOUS, Caller
from edge_agent.identity.xfcc import peer_spiffe_id
from edge_agent.pipeline.effects import Effect

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.extproc.exchange import Exchange
    from edge_agent.identity.state import Identity

XFCC_HEADER = "x-forwarded-client-cert"
# What a caller's credentials look like to the SDKs: openai sends Authorization,
# anthropic sends x-api-key.
_HOW = (
    "send a key as 'Authorization: Bearer <key>' (OpenAI SDKs) or 'x-api-key: <key>' "
    "(Anthropic SDKs), or a JWT from a trusted issuer as a bearer token"
)


def unauthenticated(why: str) -> ApiError:
    return ApiError(
        401,
        f"Authentication failed: {why}.",
        type="authentication_error",
        code="invalid_api_key",
        headers=(("www-authenticate", 'Bearer realm="edge-agent"'),),
    )


def model_forbidden(model: str, tenant: str) -> ApiError:
    return ApiError(
        403,
        f"The model {model!r} is not available to tenant {tenant!r}; GET /v1/models "
        "lists the models it may use.",
        type="permission_error",
        code="model_not_allowed",
    )


@dataclass(frozen=True, slots=True)
class RefreshSigningKeys(Effect):
    """Fetch `issuer`'s JWKS again (a token named a key this process does not have).
    The fetch may outlast Envoy's message timeout: `wait_s` makes Envoy wait for it."""

    issuer: str
    wait_s: float = FETCH_TIMEOUT_S

    async def perform(self, agent: Agent) -> Any:
        assert agent.identity is not None
        await agent.identity.refresh_jwks(self.issuer)


def _presented(headers: Any, required: bool) -> str | None:
    """The credential the caller sent, if any (a bearer token first)."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if required:
            raise unauthenticated("the Authorization header is not 'Bearer <credential>'")
    key = headers.get("x-api-key")
    if key is not None and key.strip():
        return key.strip()
    return None


def _looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2 and value.startswith("eyJ")


def identify(ex: Exchange) -> Generator[Effect, Any, None]:
    """Sets `ex.caller`, or refuses with a 401 in the client's schema."""
    identity = ex.agent.identity
    assert identity is not None
    headers = ex.req_headers
    credential = _presented(headers, identity.auth.required)
    ours = identity.auth.required or (credential or "").startswith(KEY_PREFIX)
    jwt_like = credential is not None and _looks_like_jwt(credential)
    if credential is not None and len(credential) > MAX_KEY_CHARS and not jwt_like:
        if ours:
            raise unauthenticated("the credential is too long to be a key of this gateway")
        credential = None  # not ours: as if none was sent (auth.required is false)
    if credential is not None:
        if jwt_like and identity.verifier is not None:
            ex.caller = yield from _from_jwt(identity, credential)
            return
        caller = _from_key(identity, credential)
        if caller is not None:
            ex.caller = caller
            return
        if ours:
            raise unauthenticated("the API key is not valid (unknown, revoked or expired)")
        # Not ours (an SDK's placeholder or a provider's key): the caller is anonymous.
    caller = _from_forwarded_claims(identity, headers) or _from_mesh(identity, headers)
    if caller is not None:
        ex.caller = caller
        return
    if identity.auth.required:
        raise unauthenticated(f"no credentials were sent; {_HOW}")
    ex.caller = ANONYMOUS


def _from_key(identity: Identity, credential: str) -> Caller | None:
    if not identity.auth.api_keys:
        return None
    record = identity.ring.find(hash_key(credential))
    now = identity.wall_clock()
    if record is None or record.expired(now):
        return None
    if record.tenant not in identity.tenants and record.tenant != ANONYMOUS.tenant:
        raise unauthenticated("the API key's tenant is no longer configured on this gateway")
    identity.ring.used(record, now)
    return Caller(record.tenant, "key", key=record)


def _from_jwt(identity: Identity, token: str) -> Generator[Effect, Any, Caller]:
    verifier = identity.verifier
    assert verifier is not None
    result = verifier.check(token, identity.wall_clock())
    if isinstance(result, NeedKeys):
        # This process lacks the issuer's keys, or the token names a newer one: fetch
        # once (the verifier rate-limits this per issuer) and check again.
        yield RefreshSigningKeys(result.issuer)
        result = verifier.check(token, identity.wall_clock())
    if isinstance(result, Refused):
        raise unauthenticated(result.reason)
    if isinstance(result, NeedKeys):
        raise unauthenticated("the token's signing keys cannot be fetched right now")
    return _claimed(identity, result.tenant, result.subject, "jwt")


def _claimed(identity: Identity, tenant: str | None, subject: str | None, via: Any) -> Caller:
    if not tenant:
        raise unauthenticated("the token names no tenant")
    if tenant not in identity.tenants:
        raise unauthenticated("the token's tenant is not configured on this gateway")
    return Caller(tenant, via, subject=subject)


def _from_forwarded_claims(identity: Identity, headers: Any) -> Caller | None:
    cfg = identity.auth.forwarded_claims
    if cfg is None:
        return None
    value = headers.get(cfg.header)
    if value is None:
        return None
    who = identity.forwarded(value)
    if isinstance(who, Refused):
        raise unauthenticated(who.reason)
    return _claimed(identity, who.tenant, who.subject, "forwarded_claims")


def _from_mesh(identity: Identity, headers: Any) -> Caller | None:
    mesh = identity.auth.mesh
    # XFCC only where a sidecar in front verified the peer: never in sidecar mode, where
    # the agent's own pod is the caller and outbound traffic has no verified peer.
    value = headers.get(XFCC_HEADER) if mesh.enabled is True and identity.workload is None else None
    # The peer the sidecar in front verified; in sidecar mode (no inbound mTLS) the
    # caller is the workload beside the agent.
    spiffe = peer_spiffe_id(value) if value is not None else identity.workload
    if spiffe is None:
        return None
    tenant = mesh.tenants.get(spiffe)
    if tenant is None:
        if identity.auth.required:
            raise unauthenticated("the caller's mesh identity is not mapped to a tenant")
        return None
    return Caller(tenant, "mesh", subject=spiffe)


def model_access(ex: Exchange) -> None:
    """403 for a model the caller's tenant may not use."""
    identity = ex.agent.identity
    assert identity is not None and ex.request is not None
    tenant = ex.caller.tenant
    if not identity.tenants.may_use(tenant, ex.request.model):
        raise model_forbidden(ex.request.model, tenant)
