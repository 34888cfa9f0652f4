"""The config for who is calling: `auth` (how callers prove it) and `tenants` (what each
may do). Validated like the rest of the config (edge_agent.config takes these models)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.guardrails.settings import GuardrailsConfig
from edge_agent.limits.settings import Budget, Limits

# Tenant names appear in metrics labels, Redis keys and cache namespaces: keep them plain.
TENANT_NAME = r"^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$"
DEFAULT_TENANT = "default"  # callers without credentials when auth.required is false
# Metric labels of their own: no tenant may take these names.
# Metric label for tenants that are not in the config (a JWT may name any tenant):
# labels stay bounded whatever callers send. No tenant may be called so.
OTHER_TENANT = "other"
RESERVED_TENANTS = frozenset({OTHER_TENANT})
_ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The pod's namespace and service account, set by the injection template from the
# downward API: in sidecar mode, the workload beside the agent is the caller.
WORKLOAD_ENV = {
    "EDGE_AGENT_POD_NAMESPACE": "metadata.namespace",
    "EDGE_AGENT_POD_SERVICE_ACCOUNT": "spec.serviceAccountName",
}


def pod_workload(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(namespace, service account) of the pod when the injection template set them:
    the agent runs as a sidecar, beside the app, sharing its loopback."""
    namespace, account = (environ.get(name, "").strip() for name in WORKLOAD_ENV)
    return (namespace, account) if namespace and account else None


# One JWKS fetch at most: the request waits for it (Envoy is asked to wait that long,
# see Config.longest_wait_s).
FETCH_TIMEOUT_S = 5.0
_CLAIM_PATH = r"^[A-Za-z0-9_:/.-]+$"
_HEADER_NAME = r"^[a-z0-9-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticKey(_Strict):
    """A virtual key written in the config, kept only as its SHA-256 (`edge-agent keys
    hash` prints the line)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w.@:-]+$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    # The key's own limits and budget, on top of its tenant's (docs/limits.md).
    limits: Limits = Field(default_factory=Limits)
    budget: Budget = Field(default_factory=Budget)

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v


class Tenant(_Strict):
    name: Annotated[str, Field(pattern=TENANT_NAME)]
    # Client-facing models it may use; None: all of them.
    models: list[Annotated[str, Field(min_length=1)]] | None = None
    # isolated: its own cache in every tier; shared: one pool with every other "shared"
    # tenant (answers cross between them, never to an isolated tenant).
    cache: Literal["isolated", "shared"] = "isolated"
    keys: list[StaticKey] = Field(default_factory=list)
    # What the whole tenant may do, all its callers together (docs/limits.md).
    limits: Limits = Field(default_factory=Limits)
    budget: Budget = Field(default_factory=Budget)
    # The tenant's own guardrails: replace the global `guardrails` block for its callers.
    guardrails: GuardrailsConfig | None = None


class JwtIssuerConfig(_Strict):
    """An OIDC/JWT issuer whose bearer tokens are accepted."""

    issuer: Annotated[str, Field(min_length=1)]
    jwks_url: str | None = None
    jwks_file: str | None = None
    # HS256 with a shared secret held in this variable (instead of a JWKS).
    secret_env: Annotated[str, Field(pattern=_ENV_VAR)] | None = None
    audiences: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    tenant_claim: Annotated[str, Field(pattern=_CLAIM_PATH)] = "tenant"
    subject_claim: Annotated[str, Field(pattern=_CLAIM_PATH)] = "sub"
    # Clock skew allowed for exp/nbf/iat, and how often an unknown key id may make the
    # agent fetch the JWKS again (tokens with random kids cannot hammer the IdP).
    leeway_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    min_refresh_interval_s: Annotated[float, Field(ge=1, le=3600)] = 30.0

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtIssuerConfig:
        given = [k for k in ("jwks_url", "jwks_file", "secret_env") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of jwks_url, jwks_file or secret_env (HS256), got "
                f"{', '.join(given) or 'none'}"
            )
        return self


class ForwardedClaims(_Strict):
    """Claims of a JWT that Istio's RequestAuthentication already verified and forwards
    (`outputPayloadToHeader`): read them instead of verifying the token again."""

    header: Annotated[str, Field(pattern=_HEADER_NAME)] = "x-jwt-payload"
    tenant_claim: Annotated[str, Field(pattern=_CLAIM_PATH)] = "tenant"
    subject_claim: Annotated[str, Field(pattern=_CLAIM_PATH)] = "sub"
    # Which of the tokens Istio accepted may name a tenant here (empty: any): another
    # RequestAuthentication on the same workload may trust other issuers or audiences.
    issuers: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    audiences: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)


class MeshAuth(_Strict):
    """Istio mutual TLS: the caller's SPIFFE identity from x-forwarded-client-cert, which
    the sidecar sets from the verified client certificate."""

    # true: read XFCC (behind a sidecar or an Istio gateway with STRICT mTLS). Unset: on
    # in sidecar mode only, where the caller is the app in the agent's own pod (the
    # injection template tells the agent who that is); false: off.
    enabled: bool | None = None
    # The mesh's trust domain, for this pod's own SPIFFE id in sidecar mode.
    trust_domain: Annotated[str, Field(pattern=r"^[a-z0-9.-]+$")] = "cluster.local"
    # SPIFFE id → tenant.
    tenants: dict[Annotated[str, Field(pattern=r"^spiffe://\S+$")], str] = Field(
        default_factory=dict
    )


class AuthConfig(_Strict):
    # false: callers without credentials are tenant "default". Credentials that are
    # sent are checked either way: a wrong key is a 401, never a silent "default".
    required: bool = False
    api_keys: bool = True  # virtual keys: `Authorization: Bearer <key>` or `x-api-key`
    jwt: list[JwtIssuerConfig] = Field(default_factory=list)
    forwarded_claims: ForwardedClaims | None = None
    mesh: MeshAuth = Field(default_factory=MeshAuth)

    @property
    def active(self) -> bool:
        """Whether anything here asks the agent to look at credentials."""
        return (
            self.required
            or bool(self.jwt)
            or self.forwarded_claims is not None
            or self.mesh.enabled is True
        )


def check_tenants(
    auth: AuthConfig, tenants: list[Tenant], models: set[str]
) -> list[tuple[str, str]]:
    """Cross-references between `auth`, `tenants` and the configured client models, as
    (key path, problem) pairs."""
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    hashes: dict[str, str] = {}
    for i, t in enumerate(tenants):
        if t.name in names:
            problems.append((f"tenants[{i}].name", f"duplicate tenant {t.name!r}"))
        if t.name in RESERVED_TENANTS:
            problems.append((f"tenants[{i}].name", f"{t.name!r} is reserved (a metrics label)"))
        if t.keys and not auth.api_keys:
            problems.append(
                (f"tenants[{i}].keys", "auth.api_keys is false: these keys would never work")
            )
        names.add(t.name)
        for j, m in enumerate(t.models or ()):
            if m not in models:
                problems.append(
                    (
                        f"tenants[{i}].models[{j}]",
                        f"unknown model {m!r}; configured: {', '.join(sorted(models))}",
                    )
                )
        for j, k in enumerate(t.keys):
            where = f"tenants[{i}].keys[{j}]"
            if k.sha256 in hashes:
                problems.append((where, f"the same key is also {hashes[k.sha256]}"))
            hashes[k.sha256] = where
    known = names | {DEFAULT_TENANT}
    for spiffe, tenant in auth.mesh.tenants.items():
        if tenant not in known:
            problems.append((f"auth.mesh.tenants[{spiffe!r}]", f"unknown tenant {tenant!r}"))
    if auth.required and not (
        names or auth.jwt or auth.forwarded_claims or auth.mesh.enabled or auth.api_keys
    ):
        problems.append(("auth.required", "no way to authenticate is configured"))
    return problems
