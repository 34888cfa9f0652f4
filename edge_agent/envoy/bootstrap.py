"""Generate the standalone Envoy bootstrap from the agent's config.

One cluster per provider, named after the provider, and one route per provider, chosen by
the provider's name in the routing header the agent sets. Models that fail over get one
"chain" cluster per first target: its targets as endpoints at priorities 0, 1, …, a
retry policy that moves to the next priority, and the agent as an upstream ext_proc
filter that translates and authenticates each attempt (docs/failover.md). Because the
bootstrap is derived from the same Config object the agent runs on, the two cannot
disagree.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

import certifi

from edge_agent.config import Config, Provider, TargetSpec, failover_chains
from edge_agent.envoy import telemetry
from edge_agent.extproc.attempt import STAGE_METADATA, TARGET_ATTRIBUTE

EXT_PROC_CLUSTER = "edge_agent_ext_proc"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TYPE = "type.googleapis.com/"
HCM_TYPE = (
    _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _connect_host(host: str) -> str:
    # The agent may listen on a wildcard; Envoy beside it connects over loopback.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _circuit_breakers(limit: int) -> dict[str, Any]:
    # Envoy's default is 1024 requests in flight per cluster: far below what a gateway
    # with long-lived LLM streams needs. Bound them by the connection limit instead.
    return {
        "thresholds": [
            {
                "max_connections": limit,
                "max_pending_requests": limit,
                "max_requests": limit,
                # Envoy's default allows 3 retries in flight per cluster: during an outage
                # every request must be able to fail over, not just three at a time.
                "max_retries": limit,
            }
        ]
    }


def _tls_socket(provider: Provider, ca_file: str | None = None) -> dict[str, Any]:
    """TLS to the provider, its certificate checked against `ca_file` (default: certifi's
    bundle in this environment; mesh manifests name the proxy image's own)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": provider.host,
            "common_tls_context": {
                "alpn_protocols": ["http/1.1"],
                "validation_context": {
                    "trusted_ca": {"filename": ca_file or certifi.where()},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": provider.host}}
                    ],
                },
            },
        },
    }


def chain_clusters(
    config: Config,
    chains: Mapping[str, list[TargetSpec]],
    buffer_limit: int,
    limit: int,
    ca_file: str | None = None,
) -> list[dict[str, Any]]:
    """The failover chains: one aggregate cluster per chain over one member cluster per
    target, in attempt order.

    Envoy flattens an aggregate's members into priority levels, so the route's retry
    policy walks them in order. Each member ends an attempt at its own provider's
    `timeout_s` (`max_stream_duration`, read from the cluster of the host an attempt
    goes to; a route has only one per-try timeout). The agent filters every attempt:
    upstream filters count on the aggregate only, members' are ignored.
    """
    members: dict[str, str] = {}  # target key → member cluster, shared by all chains
    out: list[dict[str, Any]] = []
    for specs in chains.values():
        for spec in specs:
            if spec.target not in members:
                members[spec.target] = f"edge_agent_target_{len(members)}"
                out.append(
                    target_cluster(
                        config.provider(spec.provider),
                        members[spec.target],
                        spec,
                        buffer_limit,
                        limit,
                        ca_file,
                    )
                )
    for name, specs in chains.items():
        out.append(
            {
                "name": name,
                "circuit_breakers": _circuit_breakers(limit),  # retries count here
                "connect_timeout": _duration(
                    max(config.provider(s.provider).connect_timeout_s for s in specs)
                ),
                "lb_policy": "CLUSTER_PROVIDED",
                "cluster_type": {
                    "name": "envoy.clusters.aggregate",
                    "typed_config": {
                        "@type": _TYPE + "envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                        "clusters": [members[s.target] for s in specs],
                    },
                },
                "typed_extension_protocol_options": {
                    _HTTP_PROTOCOL_OPTIONS: {
                        "@type": _TYPE + _HTTP_PROTOCOL_OPTIONS,
                        "explicit_http_config": {"http_protocol_options": {}},
                        "http_filters": [
                            upstream_ext_proc_filter(config),
                            {
                                "name": "envoy.filters.http.upstream_codec",
                                "typed_config": {
                                    "@type": _TYPE
                                    + "envoy.extensions.filters.http.upstream_codec.v3."
                                    "UpstreamCodec"
                                },
                            },
                        ],
                    }
                },
            }
        )
    return out


def target_cluster(
    provider: Provider,
    name: str,
    spec: TargetSpec,
    buffer_limit: int,
    limit: int,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """A chain member: the provider's cluster, its host tagged with the target (the
    agent's upstream filter reads it) and every attempt bounded by `timeout_s`."""
    cluster = provider_cluster(provider, buffer_limit, limit, ca_file)
    cluster["name"] = name
    assignment = cluster["load_assignment"]
    assignment["cluster_name"] = name
    [lb_endpoint] = assignment["endpoints"][0]["lb_endpoints"]
    lb_endpoint["metadata"] = {"filter_metadata": {"edge_agent": {"target": spec.target}}}
    cluster["typed_extension_protocol_options"] = {
        _HTTP_PROTOCOL_OPTIONS: {
            "@type": _TYPE + _HTTP_PROTOCOL_OPTIONS,
            "explicit_http_config": {"http_protocol_options": {}},
            "common_http_protocol_options": {"max_stream_duration": _duration(provider.timeout_s)},
        }
    }
    return cluster


def _ext_proc(config: Config, grpc_service: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The agent as an ext_proc filter: what both of its places in Envoy share."""
    env = config.envoy
    return {
        "name": EXT_PROC_FILTER,
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": EXT_PROC_CLUSTER}, **grpc_service},
            "status_on_error": {"code": env.status_on_error},
            "message_timeout": _duration(env.message_timeout_ms / 1000),
            # The agent asks for the response body only when it needs it (cache capture).
            "allow_mode_override": True,
            **fields,
            "processing_mode": {
                "request_header_mode": "SEND",
                # Not BUFFERED_PARTIAL: with it, Envoy 1.40 sometimes picks the route
                # before applying clear_route_cache, and the routing header is ignored.
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SEND",
                "response_body_mode": "NONE",
                "response_trailer_mode": "SKIP",
            },
        },
    }


def upstream_ext_proc_filter(config: Config) -> dict[str, Any]:
    """The agent once per attempt on a chain cluster: translation, credentials, health."""
    return _ext_proc(
        config,
        {"initial_metadata": [{"key": STAGE_METADATA, "value": "upstream"}]},
        # Without the agent an attempt would reach the provider untranslated and
        # without credentials: refuse instead (an upstream filter's refusal is final).
        failure_mode_allow=False,
        request_attributes=[TARGET_ATTRIBUTE],
    )


def provider_cluster(
    provider: Provider, buffer_limit: int, limit: int, ca_file: str | None = None
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": provider.name,
        "circuit_breakers": _circuit_breakers(limit),
        "type": "STATIC" if _is_ip(provider.host) else "STRICT_DNS",
        "connect_timeout": _duration(provider.connect_timeout_s),
        "lb_policy": "ROUND_ROBIN",
        "per_connection_buffer_limit_bytes": buffer_limit,
        "load_assignment": {
            "cluster_name": provider.name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": _socket(provider.host, provider.port),
                                # auto_host_rewrite sends this as Host / :authority.
                                "hostname": provider.authority,
                            }
                        }
                    ]
                }
            ],
        },
    }
    if not _is_ip(provider.host):
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if provider.tls:
        cluster["transport_socket"] = _tls_socket(provider, ca_file)
    return cluster


def _connections_per_thread(workers: int) -> int:
    return 1 if workers <= 1 else min(8 * workers, 256)


def ext_proc_cluster(config: Config) -> dict[str, Any]:
    host, port = config.listen.addr("grpc")
    return {
        "name": EXT_PROC_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        # One gRPC stream per request in flight.
        "circuit_breakers": _circuit_breakers(config.envoy.max_connections),
        "typed_extension_protocol_options": {
            _HTTP_PROTOCOL_OPTIONS: {
                "@type": _TYPE + _HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": EXT_PROC_CLUSTER,
            "endpoints": [
                {
                    # With worker processes sharing the port (SO_REUSEPORT), the kernel
                    # spreads *connections*, and Envoy opens one HTTP/2 connection per
                    # host and thread: all streams then often land on one worker
                    # (measured: 4 runs in 6 with 2 workers). The same address listed K
                    # times is K hosts, K connections: both workers served in every run.
                    "lb_endpoints": [
                        {"endpoint": {"address": _socket(_connect_host(host), port)}}
                        for _ in range(_connections_per_thread(config.workers))
                    ]
                }
            ],
        },
    }


def ext_proc_filter(config: Config) -> dict[str, Any]:
    """The ext_proc HTTP filter; shared by the standalone bootstrap and mesh manifests."""
    env = config.envoy
    return _ext_proc(
        config,
        {},
        failure_mode_allow=env.failure_mode == "open",
        # An effect that holds a request (an identical one in flight, a JWKS fetch) asks
        # Envoy to wait longer for its answer, up to this bound.
        max_message_timeout=_duration(config.longest_wait_s + env.message_timeout_ms / 1000 + 2.0),
        # Lets the agent strip x-envoy-attempt-count (which it reads for failover
        # accounting) from answers; Envoy ignores x-envoy-* mutations otherwise.
        mutation_rules={"allow_envoy": True},
        **telemetry.metadata_options(config),
    )


_NOT_ROUTED = (
    '{"error":{"message":"The edge agent did not choose a provider for this request.",'
    '"type":"api_error","param":null,"code":"not_routed"}}'
)


def _not_for_providers(config: Config) -> list[str]:
    # The routing header is read by the route; the client's address (Envoy adds it at the
    # edge) is nobody's business at the provider.
    return [config.envoy.routing_header, "x-envoy-external-address"]


def provider_route(config: Config, provider: Provider, cluster: str) -> dict[str, Any]:
    """To `cluster` when the agent named `provider` in the routing header; the answer
    must come within that provider's own `timeout_s`."""
    header = config.envoy.routing_header
    return {
        "match": {
            "prefix": "/",
            "headers": [{"name": header, "string_match": {"exact": provider.name}}],
        },
        "route": {
            "cluster": cluster,
            "auto_host_rewrite": True,
            "timeout": _duration(provider.timeout_s),
        },
        "request_headers_to_remove": _not_for_providers(config),
    }


def chain_routes(config: Config, environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One route per failover chain, chosen by the chain's name in the routing header."""
    out = []
    for name, specs in failover_chains(config, environ).items():
        providers = [config.provider(spec.provider) for spec in specs]
        out.append(
            {
                "match": {
                    "prefix": "/",
                    "headers": [
                        {"name": config.envoy.routing_header, "string_match": {"exact": name}}
                    ],
                },
                "route": {
                    "cluster": name,
                    "auto_host_rewrite": True,
                    # Each try ends at its own provider's timeout (its member cluster);
                    # the whole request has room for every try, connecting included, so
                    # a provider that hangs is left for the next one.
                    "timeout": _duration(sum(p.timeout_s + p.connect_timeout_s for p in providers)),
                    "retry_policy": _failover_policy(len(specs)),
                },
                "request_headers_to_remove": _not_for_providers(config),
            }
        )
    return out


def routes(config: Config, environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    if config.envoy.failure_mode == "open":
        # Agent unreachable: pass the request through unchanged to one provider.
        fallback: dict[str, Any] = {
            "match": {"prefix": "/"},
            "route": {
                "cluster": config.fail_open_target.name,
                "auto_host_rewrite": True,
                "timeout": _duration(config.fail_open_target.timeout_s),
            },
            "request_headers_to_remove": _not_for_providers(config),
        }
    else:
        fallback = {
            "match": {"prefix": "/"},
            "direct_response": {"status": 503, "body": {"inline_string": _NOT_ROUTED}},
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": "application/json"}}
            ],
        }
    # One route per provider rather than one `cluster_header` route: each needs its own
    # timeout (a route has one).
    single = [provider_route(config, p, p.name) for p in config.providers]
    return [*chain_routes(config, environ), *single, fallback]


def _failover_policy(targets: int) -> dict[str, Any]:
    return {
        # 429 included: a rate-limited provider hands the request to the next one at once
        # (no rate_limited_retry_back_off: that would wait out the Retry-After instead).
        "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
        "retriable_status_codes": [429],
        # One try per target: past the last priority, previous_priorities starts over.
        "num_retries": targets - 1,
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.retry.priority.previous_priorities.v3."
                "PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": _TYPE + "envoy.extensions.retry.host.previous_hosts.v3."
                    "PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
        "retry_back_off": {"base_interval": "0.010s", "max_interval": "0.050s"},
    }


# Envoy's own error replies (body over the buffer limit, provider unreachable or timing
# out) get the OpenAI error shape too, so SDKs parse them like any other API error.
_UPSTREAM_FAILURE_FLAGS = ["UF", "UH", "UT", "URX", "UC", "UO", "NC", "UPE", "UMSDR", "DF"]


def local_reply_config(config: Config) -> dict[str, Any]:
    limit = config.envoy.max_request_bytes

    def error(message: str, type_: str, code: str) -> dict[str, Any]:
        return {
            "json_format": {
                "error": {"message": message, "type": type_, "param": None, "code": code}
            }
        }

    return {
        "mappers": [
            # The agent unreachable or too slow (fail-closed). Its own immediate
            # responses have other details and keep their bodies.
            _cel_mapper(
                "response.code_details.startsWith('ext_proc_error')",
                error(
                    "The edge agent did not answer (%RESPONSE_CODE_DETAILS%). Retry; if it "
                    "persists, the gateway's operator should check the agent.",
                    "api_error",
                    "edge_agent_unavailable",
                ),
            ),
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {"default_value": 413, "runtime_key": "edge_agent.413"},
                        }
                    }
                },
                "body_format_override": error(
                    f"Request body exceeds the limit of {limit} bytes. Send a smaller request "
                    "(fewer or shorter messages or inputs).",
                    "invalid_request_error",
                    "request_too_large",
                ),
            },
            {
                "filter": {"response_flag_filter": {"flags": _UPSTREAM_FAILURE_FLAGS}},
                "body_format_override": error(
                    "The provider '%UPSTREAM_CLUSTER%' failed: %LOCAL_REPLY_BODY%.",
                    "api_error",
                    "upstream_error",
                ),
            },
            # Everything else Envoy answers itself (headers too large, a bad path, a slow
            # client, an upgrade refused...): the same shape. The agent's own answers
            # (details "edge_agent") and the not-routed direct response keep their bodies.
            _cel_mapper(
                f"response.code < 500 && {_NOT_THE_AGENTS}",
                error(
                    "The gateway refused the request: %LOCAL_REPLY_BODY% "
                    "(%RESPONSE_CODE_DETAILS%).",
                    "invalid_request_error",
                    "gateway_refused",
                ),
            ),
            _cel_mapper(
                f"response.code >= 500 && {_NOT_THE_AGENTS}",
                error(
                    "The gateway failed: %LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%).",
                    "api_error",
                    "gateway_error",
                ),
            ),
        ]
    }


# The agent's immediate responses (server.py sets these details) and the not-routed route.
_NOT_THE_AGENTS = "!(response.code_details in ['edge_agent', 'direct_response'])"


def _cel_mapper(expression: str, body_format: dict[str, Any]) -> dict[str, Any]:
    return {
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": _TYPE
                    + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": expression,
                },
            }
        },
        "body_format_override": body_format,
    }


def edge_timeouts(config: Config) -> dict[str, Any]:
    """How long a client may take: the HTTP connection manager's part, shared with the
    mesh gateway's patch. LLM answers stream for minutes: the per-route timeouts bound
    them, and the stream idle timeout only cuts a stream that moves nothing."""
    env = config.envoy
    return {
        "stream_idle_timeout": _duration(env.stream_idle_timeout_s),
        # A client sending one header line per second is cut off...
        "request_headers_timeout": _duration(env.request_headers_timeout_s),
        # ...and so is one sending its body a byte per second. Disarmed once the request
        # is on its way to the provider, or the agent answered.
        "request_timeout": _duration(env.request_timeout_s),
    }


def strip_header_extension(header: str) -> dict[str, Any]:
    """Removes `header` from requests before route selection."""
    return {
        "name": "envoy.http.early_header_mutation.header_mutation",
        "typed_config": {
            "@type": _TYPE
            + "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
            "mutations": [{"remove": header}],
        },
    }


def build_bootstrap(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The bootstrap; `environ` (default: the process environment) decides which
    providers are usable in failover chains, as it does for the agent's router."""
    env = config.envoy
    environ = os.environ if environ is None else environ
    envoy_host, envoy_port = config.listen.addr("envoy")
    admin_host, admin_port = config.listen.addr("envoy_admin")
    access_log = telemetry.access_logs(config)
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "edge_agent",
        "codec_type": "AUTO",
        **({"access_log": access_log} if access_log else {}),
        **telemetry.tracing(config, environ),
        **edge_timeouts(config),
        # Envoy's edge best practices (docs/operations.md, "Slow clients and edge
        # settings"). The client is whoever connected: x-envoy-* headers it sends (timeouts,
        # retries) are dropped, and its address is not passed on to providers.
        "use_remote_address": True,
        "skip_xff_append": True,
        # XFCC names the caller only when an Istio sidecar in front (STRICT mTLS) set it;
        # otherwise Envoy's default (SANITIZE) drops whatever a client sent.
        **(
            {"forward_client_cert_details": "ALWAYS_FORWARD_ONLY"}
            if config.auth.mesh.enabled is True
            else {}
        ),
        "common_http_protocol_options": {
            "idle_timeout": _duration(env.idle_timeout_s),
            # Providers may read "_" and "-" alike: no smuggling a header past the agent.
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
        "http2_protocol_options": {
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
        # One spelling per path, so the agent's endpoint table and what Envoy forwards in
        # fail-open mode agree; an encoded "/" has no place in these APIs.
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        # The route reads the routing header: a client must never supply it. Removed
        # before route selection (an ordinary filter would run too late), so requests
        # the agent does not handle (fail-open, timeouts) cannot pick a provider.
        "early_header_mutation_extensions": [strip_header_extension(env.routing_header)],
        "local_reply_config": local_reply_config(config),
        "route_config": {
            "name": "llm",
            "virtual_hosts": [
                {
                    "name": "llm",
                    "domains": ["*"],
                    "routes": routes(config, environ),
                    # x-envoy-attempt-count on answers: the agent learns how far along a
                    # failover chain Envoy went (it strips the header for clients).
                    "include_attempt_count_in_response": True,
                    # The agent's filter is on for every request that reached a route...
                    "typed_per_filter_config": {
                        EXT_PROC_FILTER: {"@type": FILTER_CONFIG, "config": {}}
                    },
                }
            ],
        },
        "http_filters": [
            # ...and off for the rest: Envoy's replies to requests it could not even parse
            # (a bad request line, headers over the limit) would otherwise wait for the
            # agent while Envoy closes the connection, and reach the client as nothing.
            {**ext_proc_filter(config), "disabled": True},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "node": {"id": "edge-agent", "cluster": "edge-agent"},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _TYPE + "envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": env.max_connections,
                    },
                }
            ]
        },
        "admin": {"address": _socket(admin_host, admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "edge_agent_http",
                    "address": _socket(envoy_host, envoy_port),
                    # ext_proc buffers the whole request body: it must fit.
                    "per_connection_buffer_limit_bytes": env.max_request_bytes,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                ext_proc_cluster(config),
                *(
                    provider_cluster(p, env.max_response_bytes, env.max_connections)
                    for p in config.providers
                ),
                *chain_clusters(
                    config,
                    failover_chains(config, environ),
                    env.max_response_bytes,
                    env.max_connections,
                ),
                *telemetry.otlp_clusters(config, environ),
            ],
        },
    }
