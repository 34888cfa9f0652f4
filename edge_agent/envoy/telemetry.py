"""Envoy's side of observability: its JSON access log (with what the agent decided, from
ext_proc dynamic metadata) and its OpenTelemetry tracer (so Envoy's span and the agent's
spans form one trace). Used by the standalone bootstrap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import certifi

from edge_agent.config import Config
from edge_agent.telemetry.settings import METADATA_NAMESPACE, ResolvedTracing

_TYPE = "type.googleapis.com/"
OTLP_CLUSTER = "edge_agent_otlp"

# What the agent decided (telemetry/observe.py: outcome), by access-log field.
_AGENT_FIELDS = (
    "path",
    "model",
    "provider",
    "target_model",
    "cache",
    "tenant",
    "key",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "saved_usd",
    "refusal",
    "pii",
    "trace_id",
)


def access_log_format() -> dict[str, str]:
    """One JSON object per request. The path is the client's, as the agent read it (the
    agent rewrites :path for providers, and a provider's query may carry a key): the
    upstream request line is never logged. No request or response header that may hold a
    credential is."""
    envoy_fields = {
        "time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        "protocol": "%PROTOCOL%",
        "status": "%RESPONSE_CODE%",
        "response_flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "duration_ms": "%DURATION%",
        "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        # Client-sent: bounded.
        "user_agent": "%REQ(USER-AGENT):256%",
        "request_id": "%REQ(X-REQUEST-ID):256%",
    }
    agent = {name: f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{name})%" for name in _AGENT_FIELDS}
    return {**envoy_fields, **agent}


def access_logs(config: Config, only_agent: bool = False) -> list[dict[str, Any]]:
    """The HTTP connection manager's access_log list (empty when not configured).
    `only_agent`: log only the requests the agent handled (a mesh proxy's listener also
    carries the app's other traffic, which its own access log covers)."""
    log = config.envoy.access_log
    if not log.enabled:
        return []
    body = {"json_format": access_log_format()}
    if log.path in ("/dev/stdout", "/dev/stderr"):
        which = "stdout" if log.path == "/dev/stdout" else "stderr"
        logger = {
            "name": f"envoy.access_loggers.{which}",
            "typed_config": {
                "@type": _TYPE
                + f"envoy.extensions.access_loggers.stream.v3.{which.capitalize()}AccessLog",
                "log_format": body,
            },
        }
    else:
        logger = {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": log.path,
                "log_format": body,
            },
        }
    if only_agent:
        logger["filter"] = {
            "metadata_filter": {
                "matcher": {
                    "filter": METADATA_NAMESPACE,
                    "path": [{"key": "cache"}],
                    "value": {"present_match": True},
                },
                "match_if_key_not_found": False,
            }
        }
    return [logger]


def metadata_options(config: Config) -> dict[str, Any]:
    """The ext_proc filter's fields that let the agent write its access-log metadata."""
    if not config.envoy.access_log.enabled:
        return {}
    return {"metadata_options": {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}}}


def _resolved(config: Config, environ: Mapping[str, str]) -> ResolvedTracing | None:
    tracing = config.telemetry.tracing
    return tracing.resolved(environ) if tracing.enabled else None


def tracing(config: Config, environ: Mapping[str, str]) -> dict[str, Any]:
    """The connection manager's `tracing` (Envoy's OpenTelemetry tracer): {} when off."""
    resolved = _resolved(config, environ)
    if resolved is None:
        return {}
    provider: dict[str, Any] = {
        "@type": _TYPE + "envoy.config.trace.v3.OpenTelemetryConfig",
        "service_name": f"{resolved.service_name}-envoy",
    }
    if resolved.protocol == "grpc":
        provider["grpc_service"] = {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "2s"}
    else:
        provider["http_service"] = {
            "http_uri": {"uri": resolved.endpoint, "cluster": OTLP_CLUSTER, "timeout": "2s"}
        }
    return {
        "tracing": {
            "random_sampling": {"value": config.telemetry.tracing.sample_ratio * 100},
            # A client's x-client-trace-id does not force a trace (Envoy's default would
            # let any caller make every one of its requests traced).
            "client_sampling": {"value": 0},
            "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": provider},
        }
    }


def otlp_clusters(config: Config, environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The collector Envoy's tracer exports to ([] when tracing is off)."""
    resolved = _resolved(config, environ)
    if resolved is None:
        return []
    host = resolved.host
    try:
        import ipaddress

        ipaddress.ip_address(host)
        discovery = "STATIC"
    except ValueError:
        discovery = "STRICT_DNS"
    cluster: dict[str, Any] = {
        "name": OTLP_CLUSTER,
        "type": discovery,
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": OTLP_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": host, "port_value": resolved.port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if resolved.protocol == "grpc":
        options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        cluster["typed_extension_protocol_options"] = {
            options: {
                "@type": _TYPE + options,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if resolved.tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {
                    "alpn_protocols": ["h2" if resolved.protocol == "grpc" else "http/1.1"],
                    "validation_context": {
                        "trusted_ca": {"filename": certifi.where()},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": host}}
                        ],
                    },
                },
            },
        }
    return [cluster]
