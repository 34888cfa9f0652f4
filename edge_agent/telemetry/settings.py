"""The config for traces, request logs and Envoy's access log (docs/observability.md).

Endpoints follow OpenTelemetry's own environment variables where the config leaves them
unset, so a collector configured for every other service (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME)
works here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

Protocol = Literal["grpc", "http/protobuf"]
DEFAULT_SERVICE_NAME = "llm-edge-agent"
#: Dynamic metadata namespace the agent writes for Envoy's access log.
METADATA_NAMESPACE = "edge_agent"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TracingConfig(_Strict):
    enabled: bool = False
    # http(s)://host:port; the OTLP/HTTP path (/v1/traces) is added when absent. Unset:
    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, then the
    # collector's default on this host.
    endpoint: str | None = None
    protocol: Protocol | None = None  # unset: OTEL_EXPORTER_OTLP_PROTOCOL, then grpc
    # Of the traces that start here; a caller's (or Envoy's) sampling decision is kept.
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    service_name: str | None = None  # unset: OTEL_SERVICE_NAME, then llm-edge-agent
    # Prompt and completion text on spans: off unless asked for (the prompt as the
    # client sent it; the completion after the response stages).
    capture_content: bool = False
    # Spans waiting for export; past it they are dropped and counted, never waited for.
    max_queue: Annotated[int, Field(ge=64, le=1_000_000)] = 4096
    export_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected a URL such as 'http://otel-collector:4317', got {v!r}")
        return v.rstrip("/")

    def resolved(self, environ: Mapping[str, str]) -> ResolvedTracing:
        """Endpoint, protocol and service name, with OpenTelemetry's variables as the
        fallback (the config wins: it is the more specific of the two)."""
        protocol = (
            self.protocol
            or environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or (environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
        )
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(
                f"OTLP protocol {protocol!r} is not supported; use grpc or http/protobuf"
            )
        endpoint = self.endpoint
        traces_path_given = False
        if endpoint is None and environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            # The signal-specific variable is used as is (the spec: no path is added).
            endpoint = environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].rstrip("/")
            traces_path_given = True
        if endpoint is None:
            endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") or (
                "http://127.0.0.1:4317" if protocol == "grpc" else "http://127.0.0.1:4318"
            )
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OTLP endpoint {endpoint!r} is not an http(s) URL")
        if (
            protocol == "http/protobuf"
            and not traces_path_given
            and not parts.path.endswith("/v1/traces")
        ):
            endpoint = f"{endpoint}/v1/traces"
        service = self.service_name or environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
        return ResolvedTracing(endpoint, protocol, service)  # type: ignore[arg-type]


class ResolvedTracing:
    __slots__ = ("endpoint", "protocol", "service_name")

    def __init__(self, endpoint: str, protocol: Protocol, service_name: str) -> None:
        self.endpoint = endpoint
        self.protocol = protocol
        self.service_name = service_name

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.endpoint)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def tls(self) -> bool:
        return urlsplit(self.endpoint).scheme == "https"

    @property
    def path(self) -> str:
        return urlsplit(self.endpoint).path or "/"


class TelemetryConfig(_Strict):
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    # One log line per request at info (logger edge_agent.requests): who, what, where it
    # went, tokens, cost, latency, and why it was refused. Never a key or prompt text.
    request_log: bool = True


class AccessLogConfig(_Strict):
    """Envoy's own access log, one JSON line per request, with what the agent decided
    (cache result, provider, tokens, cost, tenant) from ext_proc dynamic metadata."""

    enabled: bool = False
    # A file path, or /dev/stdout or /dev/stderr (Envoy's stdout/stderr loggers).
    path: str = "/dev/stdout"

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"expected an absolute path or /dev/stdout, got {v!r}")
        return v
