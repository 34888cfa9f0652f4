"""Typed configuration: one YAML file, validated, with errors that name the key path.

Secrets are never in the file: a provider names the environment variable that holds
its key (`api_key_env`). The standalone Envoy bootstrap is generated from this same
object, so the agent and Envoy can never disagree about cluster names or ports.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from edge_agent.audit.settings import AuditConfig
from edge_agent.guardrails.settings import GuardrailsConfig
from edge_agent.identity.settings import FETCH_TIMEOUT_S, AuthConfig, Tenant, check_tenants
from edge_agent.limits.settings import LimitsConfig
from edge_agent.providers import registry
from edge_agent.providers.headers import CLIENT_ONLY_HEADERS
from edge_agent.providers.kind import EnvVarName, read_secret
from edge_agent.telemetry.settings import AccessLogConfig, TelemetryConfig

CONFIG_ENV = "EDGE_AGENT_CONFIG"
# Set by the standalone gateway for its agent processes: Envoy's readiness URL, so the
# agent's /readyz (a pod's readiness probe) also waits for Envoy.
ENVOY_READY_ENV = "EDGE_AGENT_ENVOY_READY_URL"


_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$")


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _host_port(value: str, where: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"expected 'host:port' for {where}, got {value!r}")
    return host.strip("[]"), int(port)


class Listen(_Strict):
    envoy: str = "127.0.0.1:8080"
    grpc: str = "127.0.0.1:50051"
    admin: str = "127.0.0.1:9090"
    # Port 0: any free port (`edge-agent run` prints the one Envoy bound), so gateways
    # on one host never collide. Nothing else dials it: only a fixed port needs choosing.
    envoy_admin: str = "127.0.0.1:0"

    @staticmethod
    def _split(which: str, value: str, where: str) -> tuple[str, int]:
        # Only Envoy's admin may ask for port 0 (any free port): the others are dialled.
        host, _, port = value.rpartition(":")
        if which == "envoy_admin" and port == "0" and host:
            return host.strip("[]"), 0
        return _host_port(value, where)

    @staticmethod
    def _ip_literal(host: str, v: str) -> str:
        # Envoy binds and connects to these: it needs IP literals, not host names.
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"expected an IP address and port such as '127.0.0.1:8080' or "
                f"'0.0.0.0:8080', got {v!r}"
            ) from None
        return v

    @field_validator("envoy", "grpc")
    @classmethod
    def _check_ip(cls, v: str) -> str:
        return cls._ip_literal(_host_port(v, "a listen address")[0], v)

    @field_validator("envoy_admin")
    @classmethod
    def _check_envoy_admin(cls, v: str) -> str:
        return cls._ip_literal(cls._split("envoy_admin", v, "a listen address")[0], v)

    @field_validator("admin")
    @classmethod
    def _check(cls, v: str) -> str:
        _host_port(v, "a listen address")
        return v

    def addr(self, which: Literal["envoy", "grpc", "admin", "envoy_admin"]) -> tuple[str, int]:
        return self._split(which, getattr(self, which), which)


CAPABILITIES = ("tools", "vision", "json")
STRATEGIES = ("round_robin", "weighted", "priority", "least_latency", "lowest_cost")


class ProviderModel(_Strict):
    name: Annotated[str, Field(min_length=1)]
    # Prices in USD per million tokens; 0 means unknown (the cost metrics say so).
    input_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    output_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    # Declared capabilities are the only ones the router assumes; None = not filtered.
    capabilities: list[Literal["tools", "vision", "json"]] | None = None
    context_window: Annotated[int, Field(ge=1)] | None = None

    @property
    def priced(self) -> bool:
        return self.input_per_mtok > 0 or self.output_per_mtok > 0

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


# The keys only some provider types take (azure_openai's api_version, bedrock's region
# and aws_*_env, ...), each declared by its type in providers/: optional, flat on the entry.
_TYPE_FIELDS = registry.config_fields()


class _ProviderKeys(_Strict):
    # What every provider type takes; `Provider` (below) adds each type's own keys.
    name: str
    type: str
    base_url: str
    api_key_env: EnvVarName | None = None
    models: list[ProviderModel] = Field(default_factory=list)
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                "provider names are also Envoy cluster names: use 1-64 lower-case letters, "
                f"digits, '-', '_' or '.', got {v!r}"
            )
        if v.startswith("edge_agent"):
            raise ValueError(f"the prefix 'edge_agent' is reserved for internal clusters: {v!r}")
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v in registry.NAMES:
            return v
        if v in registry.PLANNED:
            raise ValueError(
                f"provider type {v!r} is not implemented in this version yet; use one of "
                f"{', '.join(registry.NAMES)} (any OpenAI-compatible API works "
                "with 'openai_compatible')"
            )
        raise ValueError(
            f"unknown provider type {v!r}; expected one of "
            f"{', '.join(registry.NAMES + registry.PLANNED)}"
        )

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {v!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"base_url must not carry a query or fragment: {v!r}")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {v!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _type_keys(self) -> _ProviderKeys:
        # A type's own keys are refused on the other types; the type checks its keys.
        kind = registry.provider_type(self.type)
        for key in _TYPE_FIELDS:
            if key not in kind.fields and getattr(self, key) is not None:
                owners = " or ".join(registry.owners(key))
                raise ValueError(f"{key}: only {owners} providers take one ({self.type!r})")
        kind.check(self)
        return self

    @model_validator(mode="after")
    def _unique_models(self) -> _ProviderKeys:
        seen: set[str] = set()
        for i, m in enumerate(self.models):
            if m.name in seen:
                raise ValueError(f"models[{i}].name: duplicate model {m.name!r}")
            seen.add(m.name)
        return self

    # Derived facts about the upstream, used by the router and the bootstrap generator.
    @property
    def tls(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def authority(self) -> str:
        parts = urlsplit(self.base_url)
        default = 443 if parts.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def base_path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")

    def model(self, name: str) -> ProviderModel | None:
        return next((m for m in self.models if m.name == name), None)


# One model for every provider type: the common keys, every type's own keys, then
# connect_timeout_s (last, where it always was: the chart's generated schema keeps the order).
Provider = create_model(
    "Provider",
    __base__=_ProviderKeys,
    __module__=__name__,
    **_TYPE_FIELDS,
    connect_timeout_s=(Annotated[float, Field(gt=0, le=60)], 5.0),
)


class TargetSpec(_Strict):
    """One place a client-facing model may go: `provider/model`, with a weight."""

    target: str
    weight: Annotated[float, Field(ge=0)] = 1.0

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        provider, sep, model = v.partition("/")
        if not sep or not provider or not model:
            raise ValueError(f"expected 'provider/model', got {v!r}")
        return v

    @property
    def provider(self) -> str:
        return self.target.partition("/")[0]

    @property
    def model(self) -> str:
        return self.target.partition("/")[2]


_SHORTHAND = 'Shorthand for {target: "provider/model", weight: 1}.'


class ModelRoute(_Strict):
    name: Annotated[str, Field(min_length=1)]
    targets: Annotated[list[TargetSpec], Field(min_length=1)]
    strategy: Literal["round_robin", "weighted", "priority", "least_latency", "lowest_cost"] = (
        "round_robin"
    )
    # With several targets, a failed attempt (connect error, timeout, 5xx, 429) is retried
    # on the next target inside the same request (docs/failover.md).
    failover: bool = True

    # The schema (the chart's values.schema.json is built from it) shows the shorthand too.
    @field_validator(
        "targets",
        mode="before",
        json_schema_input_type=Annotated[
            list[TargetSpec | Annotated[str, Field(pattern=r"^[^/]+/.+$", description=_SHORTHAND)]],
            Field(min_length=1),
        ],
    )
    @classmethod
    def _targets(cls, v: Any) -> Any:
        # "provider/model" is shorthand for {target: "provider/model", weight: 1}.
        if isinstance(v, list):
            return [{"target": t} if isinstance(t, str) else t for t in v]
        return v


def failover_chains(
    config: Config, environ: Mapping[str, str] | None = None
) -> dict[str, list[TargetSpec]]:
    """Envoy cluster name → targets in attempt order, for every model that fails over.

    One chain per (model, first target): the router's strategy picks the first target per
    request, the chain then tries the others in their configured order. Targets whose
    provider is disabled (its credential is missing) are left out: an attempt on one
    could only be refused, and Envoy does not retry past a refusal. The bootstrap and the
    router both derive the chains from here, with the same environment, so they agree.
    """
    env = os.environ if environ is None else environ
    usable = {p.name for p in config.providers if read_credential(p, env)[1] is None}
    chains: dict[str, list[TargetSpec]] = {}
    for mi, route in enumerate(config.models):
        specs = [(ti, t) for ti, t in enumerate(route.targets) if t.provider in usable]
        if not route.failover or len(specs) < 2:
            continue
        for ti, first in specs:
            rest = [t for j, t in specs if j != ti]
            chains[f"edge_agent_chain_{mi}_{ti}"] = [first, *rest]
    return chains


class ExactCache(_Strict):
    enabled: bool = True
    max_entries: Annotated[int, Field(ge=1)] = 100_000
    ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    # Bound the memory a single cached answer may take (large embeddings batches)...
    max_entry_bytes: Annotated[int, Field(ge=1024)] = 1 << 20
    # ...and all of them together: entries are evicted oldest-first past this.
    max_bytes: Annotated[int, Field(ge=1024)] = 256 << 20


class OpenAIEmbedderConfig(_Strict):
    """Any OpenAI-compatible /v1/embeddings endpoint (the production choice)."""

    base_url: str  # as given to the OpenAI SDK, e.g. https://api.openai.com/v1
    model: Annotated[str, Field(min_length=1)]
    dimensions: Annotated[int, Field(ge=2, le=8192)]
    api_key_env: EnvVarName | None = None
    # Must stay well below envoy.message_timeout_ms: Envoy waits for the lookup.
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5

    _url = field_validator("base_url")(Provider._url.__func__)  # type: ignore[attr-defined]


class SemanticCache(_Strict):
    enabled: bool = True
    # serve: answer from similar questions. shadow: only measure what would have hit.
    # Shadow by default: no configuration reaches the project's bar for serving (precision
    # >= 0.99 at recall >= 0.6 on bench/semantic_nearmiss_pairs.jsonl; measured in
    # docs/semantic-cache.md), and a wrong cached answer is worse than none.
    mode: Literal["serve", "shadow"] = "shadow"
    # Cosine threshold; None = the verifier's tuned default (see docs/semantic-cache.md).
    threshold: Annotated[float, Field(gt=0, le=1)] | None = None
    # Guards beyond cosine (numbers, entities, negation, direction...). Off = cosine only.
    verify: bool = True
    embedder: Literal["local", "openai"] = "local"
    openai: OpenAIEmbedderConfig | None = None
    max_entries: Annotated[int, Field(ge=1)] = 100_000
    # Answer bytes the tier may keep alive (bodies are shared with the exact tier, but
    # a semantic entry keeps its answer even after the exact tier evicted it).
    max_bytes: Annotated[int, Field(ge=1024)] = 256 << 20
    ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    # Multi-turn chats: the last user turn is embedded; earlier turns either partition
    # the index (a hit needs the same history) or are ignored.
    history: Literal["partition", "ignore"] = "partition"
    # Per partition: exact (flat) search up to this many entries, HNSW above (flat
    # search costs ~1.3 ms at 10k entries here, HNSW ~1 ms at 100k).
    hnsw_above: Annotated[int, Field(ge=1000)] = 5_000
    # Longer questions are left to the exact tier: the embedder reads only the first 256
    # tokens, and two long prompts that differ after that would look identical.
    max_text_chars: Annotated[int, Field(ge=16, le=4000)] = 800
    # Budget for embedding + search. Past it the request goes on without the semantic
    # tier: under a burst, queued embeddings must not run into Envoy's message timeout.
    lookup_timeout_ms: Annotated[int, Field(ge=10, le=30_000)] = 250
    # Load shedding (docs/semantic-cache.md): a lookup is skipped, counted as 'shed',
    # when this many are in flight in the process (the embedder cannot keep up) ...
    max_pending: Annotated[int, Field(ge=1, le=10_000)] = 2
    # ... or when the lookups' CPU (embedding, verifier, search) would pass this share
    # of one core per process; null: no CPU cap.
    max_cpu_share: Annotated[float, Field(gt=0, le=256)] | None = 0.25

    @model_validator(mode="after")
    def _embedder(self) -> SemanticCache:
        if self.embedder == "openai" and self.openai is None:
            raise ValueError(
                "openai: required when embedder is 'openai' (base_url, model, dimensions)"
            )
        return self


class RedisCache(_Strict):
    """The shared tier and the sync bus between replicas and workers (issue: Redis)."""

    # redis://[user:password@]host:port/db, rediss:// for TLS, unix:///path.sock;
    # null = no shared tier (each process keeps its own caches).
    url: str | None = None
    # The variable holding Redis's password (AUTH), so the password stays in a Secret and
    # out of the config; a password inside `url` works too.
    password_env: EnvVarName | None = None
    cluster: bool = False  # Redis Cluster: url names any node
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "edge-agent"
    # Per command: Redis trouble must never add more than this to a request.
    timeout_ms: Annotated[int, Field(ge=1, le=5000)] = 50
    stream_maxlen: Annotated[int, Field(ge=100)] = 100_000  # sync events kept (approx.)
    warm_max_entries: Annotated[int, Field(ge=0)] = 100_000  # loaded at start
    failure_threshold: Annotated[int, Field(ge=1)] = 3  # consecutive errors → breaker open
    open_s: Annotated[float, Field(gt=0, le=300)] = 5.0  # breaker open this long

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {v!r}")
        return v


class Coalesce(_Strict):
    """Identical cacheable misses in flight wait for the first instead of asking again."""

    enabled: bool = True
    max_wait_s: Annotated[float, Field(gt=0, le=600)] = 30.0  # then fall through upstream


class CacheConfig(_Strict):
    exact: ExactCache = Field(default_factory=ExactCache)
    semantic: SemanticCache = Field(default_factory=SemanticCache)
    redis: RedisCache = Field(default_factory=RedisCache)
    coalesce: Coalesce = Field(default_factory=Coalesce)
    # Sampling with temperature > 0 asks for varied answers; serving them from cache
    # changes the semantics, so it is opt-in.
    allow_nonzero_temperature: bool = False
    # Forwarded request headers whose value changes a provider's answer, beyond the
    # built-in anthropic-beta and openai-beta: each becomes part of the cache key.
    vary_headers: list[str] = Field(default_factory=list)

    @field_validator("vary_headers")
    @classmethod
    def _vary_headers(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            low = name.strip().lower()
            if not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]+", low):
                raise ValueError(f"expected an HTTP header name, got {name!r}")
            if low in CLIENT_ONLY_HEADERS:
                raise ValueError(
                    f"{low!r} is never forwarded to providers (the gateway sets its own), "
                    "so it cannot change an answer; remove it from cache.vary_headers"
                )
            if low not in out:
                out.append(low)
        return out


class EnvoyConfig(_Strict):
    """How Envoy talks to the agent (the standalone bootstrap, and the Istio manifests later)."""

    # closed: agent unreachable -> Envoy answers `status_on_error`.
    # open: agent unreachable -> the request passes through unmodified to `fail_open_provider`.
    failure_mode: Literal["closed", "open"] = "closed"
    status_on_error: Annotated[int, Field(ge=400, le=599)] = 503
    fail_open_provider: str | None = None
    message_timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 1000
    max_request_bytes: Annotated[int, Field(ge=1024, le=256 << 20)] = 8 << 20
    max_response_bytes: Annotated[int, Field(ge=1024, le=256 << 20)] = 16 << 20
    routing_header: str = "x-edge-agent-cluster"
    max_connections: Annotated[int, Field(ge=1)] = 10_000
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = "warning"
    # Envoy worker threads; None = Envoy's default (one per core it may use).
    concurrency: Annotated[int, Field(ge=1, le=256)] | None = None
    # Slow or silent clients must not hold connections (docs/operations.md): the headers
    # must arrive within request_headers_timeout_s of their first byte, the whole request
    # (body, and the agent's work on it) within request_timeout_s; a connection with no
    # request in flight closes after idle_timeout_s; a request whose stream moves no byte
    # either way for stream_idle_timeout_s is reset.
    request_headers_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    request_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    idle_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    stream_idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300.0
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig)

    @field_validator("routing_header")
    @classmethod
    def _routing_header(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", v):
            raise ValueError(
                f"expected a lower-case header name such as 'x-llm-cluster', got {v!r}"
            )
        if v in _RESERVED_HEADERS or v.startswith("x-envoy-"):
            raise ValueError(f"{v!r} is used by HTTP, Envoy or the agent; pick another name")
        return v


_RESERVED_HEADERS = frozenset(
    {
        "host",
        "authorization",
        "api-key",
        "x-api-key",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "cookie",
        "x-edge-agent-cache",
    }
)


class DemoUpstream(_Strict):
    """A local fake OpenAI server for trying the gateway offline. Never for production."""

    enabled: bool = False
    listen: str = "127.0.0.1:8091"

    @field_validator("listen")
    @classmethod
    def _check(cls, v: str) -> str:
        _host_port(v, "demo_upstream.listen")
        return v


class RoutingConfig(_Strict):
    # Let clients pin a request to one target (x-edge-agent-pin: provider or provider/model)
    # or keep it off some providers (x-edge-agent-exclude: a,b). Off by default: which
    # provider sees a prompt (and is paid for it) is the operator's call.
    client_overrides: bool = False


class AdminConfig(_Strict):
    """Who may change state through the admin port (DELETE /admin/cache purges every
    replica). Reading (/metrics, /healthz, /readyz, /admin/routing) stays open."""

    # A variable holding a bearer token; unset: changes only from loopback.
    token_env: EnvVarName | None = None


_STAGE_REF = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class PipelineConfig(_Strict):
    """Your own request stages in the pipeline's slots, as "package.module:function"
    (docs/architecture.md). The agent imports them at start; an import that fails stops
    it with the slot and the reason."""

    identity: list[Annotated[str, Field(pattern=_STAGE_REF)]] = Field(default_factory=list)
    policy: list[Annotated[str, Field(pattern=_STAGE_REF)]] = Field(default_factory=list)
    guardrails: list[Annotated[str, Field(pattern=_STAGE_REF)]] = Field(default_factory=list)
    # Response stages: objects with headers() and body() (docs/architecture.md), run on the
    # answer in the client's schema, before it is metered and stored.
    response: list[Annotated[str, Field(pattern=_STAGE_REF)]] = Field(default_factory=list)


class Config(_Strict):
    listen: Listen = Field(default_factory=Listen)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    providers: Annotated[list[Provider], Field(min_length=1)]
    models: Annotated[list[ModelRoute], Field(min_length=1)]
    cache: CacheConfig = Field(default_factory=CacheConfig)
    envoy: EnvoyConfig = Field(default_factory=EnvoyConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    # Who is calling, and what each tenant may do (docs/security.md).
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tenants: list[Tenant] = Field(default_factory=list)
    # How limits estimate a request's tokens (the limits are per tenant and key).
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # Personal data kept from providers, denied prompts (docs/compliance.md).
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    # One hash-chained record per request and admin change (docs/compliance.md).
    audit: AuditConfig = Field(default_factory=AuditConfig)
    # Agent processes sharing the gRPC port (SO_REUSEPORT); `--workers` overrides.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    demo_upstream: DemoUpstream = Field(default_factory=DemoUpstream)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # json: one JSON object per line (the container image and the chart use it);
    # EDGE_AGENT_LOG_FORMAT and --log-format override it.
    log_format: Literal["text", "json"] = "text"
    # Traces (OpenTelemetry, OTLP) and the per-request log line (docs/observability.md).
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @property
    def longest_wait_s(self) -> float:
        """The longest the agent may hold a request past Envoy's message timeout (it asks
        Envoy to wait): for an identical request in flight, or for a JWT issuer's keys.
        Envoy's bound (max_message_timeout) and the request timeout must allow it."""
        return max(self.cache.coalesce.max_wait_s, FETCH_TIMEOUT_S if self.auth.jwt else 0.0)

    @model_validator(mode="after")
    def _cross_refs(self) -> Config:
        errors: list[tuple[str, str]] = []
        by_name: dict[str, Provider] = {}
        for i, p in enumerate(self.providers):
            if p.name in by_name:
                errors.append((f"providers[{i}].name", f"duplicate provider name {p.name!r}"))
            by_name[p.name] = p
        seen_models: set[str] = set()
        for i, m in enumerate(self.models):
            if m.name in seen_models:
                errors.append((f"models[{i}].name", f"duplicate model {m.name!r}"))
            seen_models.add(m.name)
            for j, spec in enumerate(m.targets):
                pname, pmodel = spec.provider, spec.model
                provider = by_name.get(pname)
                where = f"models[{i}].targets[{j}]"
                if provider is None:
                    errors.append(
                        (where, f"unknown provider {pname!r}; defined: {', '.join(by_name)}")
                    )
                elif provider.models and provider.model(pmodel) is None:
                    known = ", ".join(pm.name for pm in provider.models)
                    errors.append(
                        (
                            where,
                            f"provider {pname!r} does not list model {pmodel!r}; it lists: {known}",
                        )
                    )
        agent_wait_s = self.longest_wait_s + self.envoy.message_timeout_ms / 1000
        if self.envoy.request_timeout_s <= agent_wait_s + 2:
            errors.append(
                (
                    "envoy.request_timeout_s",
                    f"{self.envoy.request_timeout_s} s would cut requests the agent holds "
                    f"for up to {agent_wait_s:g} s (waiting for an identical request in "
                    f"flight, cache.coalesce.max_wait_s, or for a JWT issuer's keys, plus "
                    f"envoy.message_timeout_ms); raise it above {agent_wait_s + 2:g} s or "
                    f"lower cache.coalesce.max_wait_s",
                )
            )
        sem = self.cache.semantic
        if sem.enabled and sem.lookup_timeout_ms > self.envoy.message_timeout_ms * 0.8:
            errors.append(
                (
                    "cache.semantic.lookup_timeout_ms",
                    f"{sem.lookup_timeout_ms} ms leaves no room inside Envoy's message timeout "
                    f"(envoy.message_timeout_ms = {self.envoy.message_timeout_ms}); keep it "
                    "under 80% of that, or raise the message timeout",
                )
            )
        if sem.enabled and sem.openai is not None and sem.embedder == "openai":
            budget_s = self.envoy.message_timeout_ms / 1000
            if sem.openai.timeout_s > budget_s * 0.8:
                errors.append(
                    (
                        "cache.semantic.openai.timeout_s",
                        f"{sem.openai.timeout_s} s leaves no room inside Envoy's message "
                        f"timeout (envoy.message_timeout_ms = {self.envoy.message_timeout_ms});"
                        " keep it under 80% of that, or raise the message timeout",
                    )
                )
        checker = self.guardrails.external
        if checker is not None and checker.timeout_ms > self.envoy.message_timeout_ms * 0.8:
            errors.append(
                (
                    "guardrails.external.timeout_ms",
                    f"{checker.timeout_ms} ms leaves no room inside Envoy's message timeout "
                    f"(envoy.message_timeout_ms = {self.envoy.message_timeout_ms}); keep it "
                    "under 80% of that, or raise the message timeout",
                )
            )
        errors += check_tenants(self.auth, self.tenants, seen_models)
        if self.envoy.failure_mode == "open" and (self.auth.active or self.tenants):
            errors.append(
                (
                    "envoy.failure_mode",
                    "'open' sends requests past the agent when it is down or slow, so past "
                    "its authentication and tenant checks; use 'closed' with auth or tenants",
                )
            )
        fop = self.envoy.fail_open_provider
        if fop is not None and fop not in by_name:
            errors.append(("envoy.fail_open_provider", f"unknown provider {fop!r}"))
        addrs = {
            "listen.envoy": self.listen.envoy,
            "listen.grpc": self.listen.grpc,
            "listen.admin": self.listen.admin,
            "listen.envoy_admin": self.listen.envoy_admin,
        }
        if self.demo_upstream.enabled:
            addrs["demo_upstream.listen"] = self.demo_upstream.listen
        seen_addr: dict[str, str] = {}
        for key, addr in addrs.items():
            port = addr.rpartition(":")[2]
            if port != "0" and port in seen_addr:
                errors.append((key, f"port {port} is also used by {seen_addr[port]}"))
            seen_addr[port] = key
        if errors:
            raise _CrossRefError(errors)
        return self

    def provider(self, name: str) -> Provider:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def fail_open_target(self) -> Provider:
        name = self.envoy.fail_open_provider
        return self.provider(name) if name else self.providers[0]


class _CrossRefError(ValueError):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{k}: {m}" for k, m in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Every problem found in a config, each with its key path."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  - {i}" for i in issues)
        super().__init__(f"invalid config {source}:\n{lines}")


_SUBPATH_RE = re.compile(r"(\[\d+\]|[a-z_]+(\[\d+\])?)(\.[a-z_]+(\[\d+\])?)*")


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _issues_from_validation(exc: ValidationError) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for err in exc.errors(include_url=False):
        path = _loc_to_path(err["loc"])
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossRefError):
            issues.extend(ConfigIssue(f"{path}.{p}" if path else p, m) for p, m in ctx_error.errors)
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the config reference in docs/)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        # A validator may prefix its own sub-path ("models[1].name: ...").
        head, sep, rest = msg.partition(": ")
        if sep and _SUBPATH_RE.fullmatch(head):
            joiner = "" if head.startswith("[") or not path else "."
            path, msg = f"{path}{joiner}{head}", rest
        issues.append(ConfigIssue(path, msg))
    return issues


def parse_config(data: Any, source: str = "<config>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(
            source, [ConfigIssue("", f"the top level must be a mapping, got {type(data).__name__}")]
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _issues_from_validation(exc)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config from `path`, or from $EDGE_AGENT_CONFIG."""
    chosen = path or os.environ.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError(
            "(none)", [ConfigIssue("", f"no config given: pass --config FILE or set {CONFIG_ENV}")]
        )
    source = str(chosen)
    try:
        text = Path(chosen).read_text(encoding="utf-8")
    except OSError as exc:
        issue = ConfigIssue("", f"cannot read the file: {exc.strerror}")
        raise ConfigError(source, [issue]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigIssue("", f"not valid YAML: {where}{problem}")]) from None
    return parse_config(data, source)


def read_credential(
    provider: Provider, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """(key, problem): the provider's key from the environment, or why it is unusable.

    Surrounding whitespace is dropped (file-mounted secrets often end in a newline);
    anything else Envoy would refuse in a header value disables the provider loudly.
    Without `api_key_env`, the provider's type says whether its own credential variables
    are usable (bedrock's SigV4 ones).
    """
    var = provider.api_key_env
    if var is None:
        return None, registry.provider_type(provider.type).credential_problem(provider, environ)
    return read_secret(environ, var, "key")


def credential_problems(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{provider name: why its credential is unusable} for every disabled provider."""
    env = os.environ if environ is None else environ
    problems = {}
    for p in config.providers:
        _, problem = read_credential(p, env)
        if problem:
            problems[p.name] = problem
    return problems
