"""Istio-like Envoy bootstraps, and EnvoyFilter patches applied to them the way istiod does.

There is no Kubernetes and no istiod here, so `istio_like_sidecar` builds a static bootstrap
shaped like what istiod pushes to a proxy, and `apply_envoy_filter` re-implements istiod's
patching on plain dicts. Facts from istio/istio: pilot/pkg/networking/core/envoyfilter/
{listener,rc,cluster}_patch.go (operations, matching, order), pkg/proto/merge/merge.go
(merge rules), pilot/pkg/model/envoyfilter.go (INSERT_* -> ADD), pkg/config/validation/
envoyfilter (webhook checks), pilot/pkg/networking/core/{httproute,listener}.go and
core/route (names, HTTP filter order, default route), pilot/pkg/model/gateway.go (gateway
route names and port map).

What it approximates, knowingly:
- Static, not xDS: clusters are STATIC / STRICT_DNS / LOGICAL_DNS / ORIGINAL_DST with inline
  endpoints (Istio uses EDS for STATIC ServiceEntries), the route configuration is inline in
  the HCM (Istio uses RDS; route patches are applied first, as to the RDS output).
- Listeners bind 127.0.0.1:<listen_ports[P]> instead of receiving iptables-redirected
  traffic through virtualOutbound (Istio: bind_to_port false); the logical port P is kept in
  the listener's metadata and `listener.portNumber` matches it. No inbound side, no
  virtualOutbound / virtualInbound listeners, no TCP/TLS-passthrough listeners (HTTP ports
  only), no mTLS (ISTIO_MUTUAL and credentialName raise), no telemetry: Istio's own filters
  (istio.metadata_exchange, istio.alpn, istio.stats) are not in upstream Envoy and are left
  out of the otherwise Istio-ordered HTTP filter chain.
- DestinationRule: tls, connectionPool (thresholds, connect timeout, keepalive, per-connection
  limits, idle timeout, HTTP/2 upgrade) and loadBalancer.simple are mapped; outlierDetection,
  consistent hashing, subsets, warmup and the rest are ignored.
- Merges follow Istio's proto merge on JSON: scalars replace, messages merge, lists append,
  maps (typed_per_filter_config, typed_extension_protocol_options, filter_metadata...) replace
  per key, an Any replaces, a oneof member clears its siblings (a fixed table of common
  oneofs), and a zero scalar (0, false, "") only fills an absent field. Without schemas it
  cannot tell enum zero values, `optional` scalars, or Struct fields outside those maps.
- One EnvoyFilter per call: callers apply several in Istio's order (root namespace first,
  then priority, then creation time). workloadSelector / targetRefs are not evaluated.
ValueError is raised for what the webhook rejects, what istiod ignores or drops (ADD on a
route configuration, extra fields in a filter MERGE, a MERGE across Any types...) and what is
not modelled. A patch that matches nothing is silent, as in istiod, unless require_match=True.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi

Json = dict[str, Any]

HCM = "envoy.filters.network.http_connection_manager"
_T = "type.googleapis.com/"
HCM_TYPE = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
META = "edge_agent.test"  # our own metadata key: the logical port, the gateway port map
_HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC", "GRPC-WEB"}
_H2_PROTOCOLS = {"HTTP2", "GRPC"}
_MAX = 4294967295
_CONTEXTS = {"SIDECAR_OUTBOUND", "GATEWAY"}
_LB = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
}


# ---------------------------------------------------------------------- the bootstrap


def _typed(name: str, type_name: str, **fields: Any) -> Json:
    return {"name": name, "typed_config": {"@type": _T + type_name, **fields}}


def _sock(address: str, port: int) -> Json:
    return {"socket_address": {"address": address, "port_value": port}}


def _http_filters() -> list[Json]:
    # Istio's order minus its own (non-upstream) filters; router last.
    return [
        _typed(
            "envoy.filters.http.grpc_stats",
            "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            emit_filter_state=True,
            stats_for_all_methods=False,
        ),
        _typed("envoy.filters.http.fault", "envoy.extensions.filters.http.fault.v3.HTTPFault"),
        _typed("envoy.filters.http.cors", "envoy.extensions.filters.http.cors.v3.Cors"),
        _typed("envoy.filters.http.router", "envoy.extensions.filters.http.router.v3.Router"),
    ]


def _default_route(cluster: str, operation: str) -> Json:
    retry = {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [
            _typed(
                "envoy.retry_host_predicates.previous_hosts",
                "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
            )
        ],
        "host_selection_retry_max_attempts": 5,
    }
    action = {"cluster": cluster, "timeout": "0s", "max_grpc_timeout": "0s", "retry_policy": retry}
    return {
        "name": "default",
        "match": {"prefix": "/"},
        "decorator": {"operation": operation},
        "route": action,
    }


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    if not m:
        raise ValueError(f"unsupported duration {duration!r}")
    return int(float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]])


def _policy(rule: Json | None, port: int) -> Json:
    """The DestinationRule's traffic policy for a port: port-level categories override."""
    policy = dict((rule or {}).get("spec", {}).get("trafficPolicy") or {})
    for level in policy.pop("portLevelSettings", []):
        if level.get("port", {}).get("number") == port:
            policy.update({k: v for k, v in level.items() if k != "port"})
    return policy


def _tls_socket(tls: Json, h2: bool, http_options: Json) -> Json | None:
    mode = tls.get("mode", "DISABLE")
    if mode == "DISABLE":
        return None
    if mode == "ISTIO_MUTUAL" or tls.get("credentialName"):
        raise ValueError(f"DestinationRule tls {tls}: needs istio-agent SDS, not modelled")
    common: Json = {}
    if not tls.get("insecureSkipVerify"):
        ca = tls.get("caCertificates") or certifi.where()
        validation: Json = {"trusted_ca": {"filename": ca}}
        if tls.get("subjectAltNames"):
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": s}} for s in tls["subjectAltNames"]
            ]
        common["validation_context"] = validation
    if mode == "MUTUAL":
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": tls["clientCertificate"]},
                "private_key": {"filename": tls["privateKey"]},
            }
        ]
    if h2:
        common["alpn_protocols"] = ["h2"]
    ctx: Json = {
        "@type": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    }
    if tls.get("sni"):
        ctx["sni"] = tls["sni"]
    else:  # Istio: SNI (and SAN check) from the request's Host
        upstream = http_options.setdefault("upstream_http_protocol_options", {})
        upstream["auto_sni"] = True
        if not tls.get("subjectAltNames") and not tls.get("insecureSkipVerify"):
            upstream["auto_san_validation"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def _endpoint_port(endpoint: Json, port: Json) -> int:
    named = endpoint.get("ports", {}).get(port.get("name"))  # endpoint ports win
    return int(named or port.get("targetPort") or port["number"])


def _cluster(se: Json, host: str, port: Json, rule: Json | None) -> Json:
    spec = se["spec"]
    name = f"outbound|{port['number']}||{host}"
    policy = _policy(rule, port["number"])
    pool = policy.get("connectionPool", {})
    http, tcp = pool.get("http", {}), pool.get("tcp", {})
    h2 = (
        port.get("protocol", "").upper() in _H2_PROTOCOLS
        or http.get("h2UpgradePolicy") == "UPGRADE"
    )
    cluster: Json = {
        "name": name,
        "connect_timeout": tcp.get("connectTimeout", "10s"),
        "lb_policy": _LB.get(policy.get("loadBalancer", {}).get("simple", ""), "LEAST_REQUEST"),
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": tcp.get("maxConnections", _MAX),
                    "max_pending_requests": http.get("http1MaxPendingRequests", _MAX),
                    "max_requests": http.get("http2MaxRequests", _MAX),
                    "max_retries": http.get("maxRetries", _MAX),
                    "track_remaining": True,
                }
            ]
        },
        "metadata": {
            "filter_metadata": {
                "istio": {
                    "services": [
                        {
                            "host": host,
                            "name": host,
                            "namespace": se.get("metadata", {}).get("namespace", "default"),
                        }
                    ]
                }
            }
        },
    }
    common: Json = {}
    for src, dst in (
        ("idleTimeout", "idle_timeout"),
        ("maxRequestsPerConnection", "max_requests_per_connection"),
    ):
        if src in http:
            common[dst] = http[src]
    if "maxConnectionDuration" in tcp:
        common["max_connection_duration"] = tcp["maxConnectionDuration"]
    http_options: Json = {"@type": _T + _HTTP_OPTIONS}
    if common:
        http_options["common_http_protocol_options"] = common
    h2_options = {}
    if "maxConcurrentStreams" in http:
        h2_options["max_concurrent_streams"] = http["maxConcurrentStreams"]
    if http.get("useClientProtocol"):
        http_options["use_downstream_protocol_config"] = {
            "http_protocol_options": {},
            "http2_protocol_options": h2_options,
        }
    else:
        http_options["explicit_http_config"] = (
            {"http2_protocol_options": h2_options} if h2 else {"http_protocol_options": {}}
        )
    if "tcpKeepalive" in tcp:
        ka = tcp["tcpKeepalive"]
        keepalive = {"keepalive_probes": ka["probes"]} if "probes" in ka else {}
        for src, dst in (("time", "keepalive_time"), ("interval", "keepalive_interval")):
            if src in ka:
                keepalive[dst] = _seconds(ka[src])
        cluster["upstream_connection_options"] = {"tcp_keepalive": keepalive}
    socket = _tls_socket(policy.get("tls", {}), h2, http_options)
    if socket:
        cluster["transport_socket"] = socket
    cluster["typed_extension_protocol_options"] = {_HTTP_OPTIONS: http_options}

    resolution = spec.get("resolution", "NONE")
    if resolution == "NONE":
        cluster.update(type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED")
        return cluster
    if resolution not in {"DNS", "DNS_ROUND_ROBIN", "STATIC"}:
        raise ValueError(f"ServiceEntry resolution {resolution!r}")
    endpoints = spec.get("endpoints") or [{"address": host}]
    if resolution == "STATIC" and not spec.get("endpoints"):
        raise ValueError(f"STATIC ServiceEntry {host} without endpoints")
    cluster["type"] = {"DNS": "STRICT_DNS", "DNS_ROUND_ROBIN": "LOGICAL_DNS"}.get(
        resolution, "STATIC"
    )
    if resolution != "STATIC":
        cluster.update(dns_lookup_family="V4_ONLY", dns_refresh_rate="60s", respect_dns_ttl=True)
    lb_endpoints = [
        {"endpoint": {"address": _sock(ep["address"], _endpoint_port(ep, port))}}
        for ep in endpoints
    ]
    cluster["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": lb_endpoints}],
    }
    return cluster


def _listener(port: int, bind: int, route_config: Json, gateway: bool) -> Json:
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": f"outbound_0.0.0.0_{port}",
        "codec_type": "AUTO",
        "route_config": route_config,
        "http_filters": _http_filters(),
        "use_remote_address": gateway,
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "request_id_extension": {
            "typed_config": {
                "@type": _T + "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "use_request_id_for_trace_sampling": True,
            }
        },
    }
    return {
        "name": f"0.0.0.0_{port}",
        "address": _sock("127.0.0.1", bind),
        "traffic_direction": "OUTBOUND",
        "metadata": {"filter_metadata": {META: {"port": port}}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
    }


def istio_like_sidecar(
    service_entries: list[Json],
    destination_rules: list[Json],
    *,
    listen_ports: Mapping[int, int],
    admin_port: int,
    context: str = "SIDECAR_OUTBOUND",
    server_ports: Mapping[int, int] | None = None,
) -> Json:
    """A static bootstrap shaped like istiod's output for a sidecar's outbound side (or, with
    context GATEWAY, an ingress gateway). `listen_ports` maps each logical HTTP port P to the
    local port its listener binds. GATEWAY only: `server_ports` maps a listener (target) port
    to the Gateway server port it serves (istio-ingressgateway: {8080: 80}); vhosts are named
    after the server port and `routeConfiguration.portNumber` matches it, as in istiod."""
    if context not in _CONTEXTS:
        raise ValueError(f"context {context!r}: only {sorted(_CONTEXTS)} are modelled")
    gateway = context == "GATEWAY"
    rules = {r["spec"]["host"]: r for r in destination_rules}
    clusters: list[Json] = []
    vhosts: dict[int, dict[str, Json]] = {}  # port -> name -> vhost; first name wins
    for se in service_entries:
        spec = se["spec"]
        for port in spec["ports"]:
            for host in spec["hosts"]:
                clusters.append(_cluster(se, host, port, rules.get(host)))
            if port.get("protocol", "").upper() not in _HTTP_PROTOCOLS:
                continue
            p = port["number"]
            for host in spec["hosts"]:
                name = f"outbound|{p}||{host}"
                if gateway:
                    for target, served in (server_ports or {q: q for q in listen_ports}).items():
                        vhosts.setdefault(target, {}).setdefault(
                            f"{host}:{served}",
                            {
                                "name": f"{host}:{served}",
                                "domains": [host, f"{host}:{served}"],
                                "routes": [_default_route(name, f"{host}:{p}/*")],
                            },
                        )
                else:
                    vhosts.setdefault(p, {}).setdefault(
                        f"{host}:{p}",
                        {
                            "name": f"{host}:{p}",
                            "domains": [host, *spec.get("addresses", [])],
                            "routes": [_default_route(name, f"{host}:{p}/*")],
                            "include_request_attempt_count": True,
                        },
                    )
    listeners = []
    for port in sorted(vhosts):
        if port not in listen_ports:
            raise ValueError(f"no local port for logical port {port} in listen_ports")
        hosts = sorted(vhosts[port].values(), key=lambda v: v["name"])
        rc: Json = {
            "name": f"http.{port}" if gateway else str(port),
            "virtual_hosts": hosts,
            "validate_clusters": False,
            "max_direct_response_body_size_bytes": 1048576,
        }
        if not gateway:
            rc["ignore_port_in_host_matching"] = True
            hosts.append(
                {
                    "name": "allow_any",
                    "domains": ["*"],
                    "routes": [
                        {
                            "name": "allow_any",
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": "PassthroughCluster",
                                "timeout": "0s",
                                "max_grpc_timeout": "0s",
                            },
                        }
                    ],
                    "include_request_attempt_count": True,
                }
            )
        listeners.append(_listener(port, listen_ports[port], rc, gateway))
    clusters += [
        {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"},
        {
            "name": "PassthroughCluster",
            "type": "ORIGINAL_DST",
            "connect_timeout": "10s",
            "lb_policy": "CLUSTER_PROVIDED",
            "typed_extension_protocol_options": {
                _HTTP_OPTIONS: {
                    "@type": _T + _HTTP_OPTIONS,
                    "use_downstream_protocol_config": {
                        "http_protocol_options": {},
                        "http2_protocol_options": {},
                    },
                }
            },
        },
    ]
    port_map = {str(t): [s] for t, s in (server_ports or {}).items()}
    kind = "router" if gateway else "sidecar"
    return {
        "node": {
            "id": f"{kind}~127.0.0.1~edge-agent-test.default~default.svc.cluster.local",
            "cluster": "edge-agent-test.default",
            "metadata": {META: {"context": context, "gateway_port_map": port_map}},
        },
        "admin": {"address": _sock("127.0.0.1", admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# ---------------------------------------------------------------------- proto-like merge

# Proto map fields: an entry is replaced per key, never deep-merged.
_MAP_FIELDS = {
    "typed_per_filter_config",
    "typed_extension_protocol_options",
    "filter_metadata",
    "typed_filter_metadata",
    "source_codes",
}
_STRUCT_MAPS = {"filter_metadata"}  # values are Structs: keys inside are data, not fields
_ONEOFS = [
    set(g.split())
    for g in (
        "route redirect direct_response filter_action non_forwarding_action",
        "cluster cluster_header weighted_clusters cluster_specifier_plugin"
        " inline_cluster_specifier_plugin",
        "prefix path safe_regex connect_matcher path_separated_prefix path_match_policy"
        " exact suffix contains custom",
        "exact_match safe_regex_match range_match present_match prefix_match suffix_match"
        " contains_match string_match",
        "rds route_config scoped_routes",
        "type cluster_type",
        "typed_config config_discovery",
        "socket_address pipe envoy_internal_address",
        "port_value named_port",
        "filename inline_bytes inline_string environment_variable",
        "envoy_grpc google_grpc",
        "host_rewrite_literal auto_host_rewrite host_rewrite_header host_rewrite_path_regex",
        "explicit_http_config use_downstream_protocol_config auto_config",
    )
]
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake(value: Any) -> Any:
    """Field names as Envoy's own JSON uses them (protojson accepts both spellings)."""
    if isinstance(value, list):
        return [_snake(v) for v in value]
    if not isinstance(value, dict):
        return value
    if str(value.get("@type", "")).endswith(("TypedStruct", "google.protobuf.Struct")):
        return value  # Struct contents are data
    out: Json = {}
    for key, v in value.items():
        key = key if key == "@type" else _CAMEL.sub(lambda m: "_" + m[1].lower(), key)
        if key in _MAP_FIELDS and isinstance(v, dict):
            out[key] = {k: (x if key in _STRUCT_MAPS else _snake(x)) for k, x in v.items()}
        else:
            out[key] = _snake(v)
    return out


def _merge(dst: Json, src: Json) -> None:
    """Istio's merge.Merge on JSON (see the module docstring for its limits)."""
    for key, value in src.items():
        if value is None:
            continue
        for group in _ONEOFS:
            if key in group:
                for sibling in group - {key}:
                    dst.pop(sibling, None)
        current = dst.get(key)
        if key in _MAP_FIELDS and isinstance(value, dict):
            dst.setdefault(key, {}).update(copy.deepcopy(value))
        elif isinstance(value, list):
            dst[key] = [*(current or []), *copy.deepcopy(value)]
        elif isinstance(value, dict) and "@type" in value:
            if set(value) == {"@type"} and isinstance(current, dict):
                current["@type"] = value["@type"]  # empty Any: no bytes to replace
            else:
                dst[key] = copy.deepcopy(value)
        elif isinstance(value, dict):
            if not isinstance(current, dict) or "@type" in current:
                dst[key] = current = {}
            _merge(current, value)
        elif value in (False, 0, ""):  # proto3 zero: never overwrites, may create
            dst.setdefault(key, value)
        else:
            dst[key] = copy.deepcopy(value)


def _merge_any(dst: Json, src: Json, where: str) -> None:
    """MergeAnyWithAny: same message type merges; istiod fails on different ones."""
    if dst.get("@type") != src.get("@type"):
        raise ValueError(
            f"{where}: MERGE of {src.get('@type')} into {dst.get('@type')}: "
            "istiod cannot merge different types (the patch does not take effect)"
        )
    _merge(dst, {k: v for k, v in src.items() if k != "@type"})


# ---------------------------------------------------------------------- EnvoyFilter patches

_FILTER_OPS = {"ADD", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE", "MERGE", "REMOVE"}
_OPS = {
    "CLUSTER": {"ADD", "MERGE", "REMOVE"},
    "LISTENER": {"ADD", "MERGE", "REMOVE"},
    "NETWORK_FILTER": _FILTER_OPS,
    "HTTP_FILTER": _FILTER_OPS,
    "ROUTE_CONFIGURATION": {"MERGE"},
    "VIRTUAL_HOST": {"ADD", "MERGE", "REMOVE", "REPLACE"},
    "HTTP_ROUTE": {"ADD", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "MERGE", "REMOVE"},
}
_POSITIONAL = {"NETWORK_FILTER", "HTTP_FILTER", "HTTP_ROUTE"}  # istiod: INSERT_* -> ADD elsewhere
_MATCH_KIND = {
    "CLUSTER": "cluster",
    "ROUTE_CONFIGURATION": "routeConfiguration",
    "VIRTUAL_HOST": "routeConfiguration",
    "HTTP_ROUTE": "routeConfiguration",
}
_MATCH_FIELDS: Json = {  # the CRD's match schema: an unknown key would be pruned, not rejected
    "context": None,
    "proxy": {"proxyVersion": None, "metadata": None},
    "cluster": {"name": None, "portNumber": None, "service": None, "subset": None},
    "listener": {
        "name": None,
        "portNumber": None,
        "portName": None,
        "listenerFilter": None,
        "filterChain": {
            "name": None,
            "sni": None,
            "transportProtocol": None,
            "applicationProtocols": None,
            "destinationPort": None,
            "filter": {"name": None, "subFilter": {"name": None}},
        },
    },
    "routeConfiguration": {
        "name": None,
        "portNumber": None,
        "portName": None,
        "gateway": None,
        "vhost": {"name": None, "domainName": None, "route": {"name": None, "action": None}},
    },
}


@dataclass
class _Patch:
    where: str
    apply_to: str
    op: str
    match: Json
    value: Json
    applied: bool = False

    def at(self, *path: str) -> Any:
        node: Any = self.match
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node


def _check_keys(node: Any, schema: Json, where: str) -> None:
    for key, value in node.items():
        if key not in schema:
            raise ValueError(f"{where}: unknown match field {key!r}")
        if isinstance(schema[key], dict) and key != "metadata":
            _check_keys(value, schema[key], f"{where}.{key}")


def _load(envoy_filter: Json, proxy_version: str | None) -> list[_Patch]:
    """The webhook's checks plus istiod's load-time rewrites; raises on anything unmodelled."""
    if (
        envoy_filter.get("kind") != "EnvoyFilter"
        or envoy_filter.get("apiVersion") != "networking.istio.io/v1alpha3"
    ):
        raise ValueError("not a networking.istio.io/v1alpha3 EnvoyFilter")
    patches = []
    for i, cp in enumerate(envoy_filter.get("spec", {}).get("configPatches") or []):
        where = f"configPatches[{i}]"
        apply_to, patch, match = cp.get("applyTo"), cp.get("patch") or {}, cp.get("match") or {}
        op = patch.get("operation")
        if apply_to not in _OPS:
            raise ValueError(f"{where}: applyTo {apply_to!r} is not modelled")
        if op in {"INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST"} and apply_to not in _POSITIONAL:
            op = "ADD"
        if op not in _OPS[apply_to]:
            raise ValueError(
                f"{where}: operation {op!r} on {apply_to} is not applied by istiod or not modelled"
            )
        if op != "REMOVE" and not patch.get("value"):
            raise ValueError(f"{where}: missing patch value")
        _check_keys(match, _MATCH_FIELDS, f"{where}.match")
        kinds = [k for k in ("listener", "routeConfiguration", "cluster") if k in match]
        if len(kinds) > 1 or (kinds and kinds[0] != _MATCH_KIND.get(apply_to, "listener")):
            raise ValueError(f"{where}: {apply_to} cannot use a {kinds} match")
        flt = (match.get("listener") or {}).get("filterChain", {}).get("filter")
        if flt is not None:
            if not flt.get("name"):
                raise ValueError(f"{where}: filter match has no name")
            if "subFilter" in flt and (
                apply_to != "HTTP_FILTER" or flt["name"] != HCM or not flt["subFilter"].get("name")
            ):
                raise ValueError(
                    f"{where}: subFilter needs applyTo HTTP_FILTER, filter {HCM} and a name"
                )
        proxy = match.get("proxy") or {}
        if proxy.get("metadata"):
            raise ValueError(f"{where}: match.proxy.metadata is not modelled")
        if proxy.get("proxyVersion"):
            if proxy_version is None:
                raise ValueError(f"{where}: match.proxy.proxyVersion needs proxy_version=")
            if not re.search(proxy["proxyVersion"], proxy_version):
                continue
        value = _snake(patch.get("value") or {})
        if op == "MERGE" and apply_to in {"HTTP_FILTER", "NETWORK_FILTER"}:
            extra = set(value) - {"name", "typed_config"}
            if extra:
                raise ValueError(
                    f"{where}: a {apply_to} MERGE uses only name and typed_config; "
                    f"istiod ignores {sorted(extra)}"
                )
        dropped = set(value) - {"transport_socket"}
        if op == "MERGE" and apply_to == "CLUSTER" and "transport_socket" in value and dropped:
            raise ValueError(
                f"{where}: a CLUSTER MERGE with transport_socket applies only that; "
                f"istiod drops {sorted(dropped)}"
            )
        patches.append(_Patch(where, apply_to, op, match, value))
    return patches


def _list_op(
    items: list[Json], p: _Patch, ref: Callable[[Json], bool] | None, first_needs_ref: bool = False
) -> bool:
    """ADD / INSERT_* / REPLACE / REMOVE on a filter or route list; `ref` is None when the
    patch names no reference element (then istiod appends, prepends or skips)."""
    new = copy.deepcopy(p.value)
    hit = next((i for i, item in enumerate(items) if ref(item)), None) if ref else None
    if p.op == "ADD" or (p.op == "INSERT_AFTER" and ref is None):
        items.append(new)
    elif p.op == "INSERT_FIRST" or (p.op == "INSERT_BEFORE" and ref is None):
        if first_needs_ref and ref is not None and hit is None:
            return False
        items.insert(0, new)
    elif hit is None:
        return False
    elif p.op == "INSERT_BEFORE":
        items.insert(hit, new)
    elif p.op == "INSERT_AFTER":
        items.insert(hit + 1, new)
    elif p.op == "REPLACE":
        items[hit] = new
    elif p.op == "REMOVE":
        items[:] = [item for item in items if not ref(item)]  # type: ignore[misc]
    return True


def _listener_match(lis: Json, p: _Patch) -> bool:
    m = p.match.get("listener") or {}
    port = lis.get("metadata", {}).get("filter_metadata", {}).get(META, {}).get("port")
    if port is None:  # a listener added by a patch: its socket port is its port
        port = lis.get("address", {}).get("socket_address", {}).get("port_value")
    return (not m.get("name") or m["name"] == lis.get("name")) and (
        not m.get("portNumber") or m["portNumber"] == port
    )


def _chain_match(fc: Json, p: _Patch) -> bool:
    m = p.at("listener", "filterChain") or {}
    fcm = fc.get("filter_chain_match") or {}
    protocols = (m.get("applicationProtocols") or "").split(",")
    return (
        (not m.get("name") or m["name"] == fc.get("name"))
        and (not m.get("sni") or m["sni"] in fcm.get("server_names", []))
        and (
            not m.get("transportProtocol")
            or m["transportProtocol"] == fcm.get("transport_protocol")
        )
        and (
            not m.get("applicationProtocols")
            or all(a in fcm.get("application_protocols", []) for a in protocols)
        )
        and (not m.get("destinationPort") or m["destinationPort"] == fcm.get("destination_port"))
    )


def _filter_ref(p: _Patch) -> Callable[[Json], bool] | None:
    name = p.at("listener", "filterChain", "filter", "name")
    return None if name is None else (lambda f: f.get("name") == name)


def _http_ref(p: _Patch) -> Callable[[Json], bool] | None:
    name = p.at("listener", "filterChain", "filter", "subFilter", "name")
    return None if name is None else (lambda f: f.get("name") == name)


def _patch_http_filters(hcm: Json, todo: list[_Patch]) -> None:
    filters = hcm.setdefault("http_filters", [])
    for p in todo:
        if p.op != "MERGE" and _list_op(filters, p, _http_ref(p)):
            p.applied = True
    for flt in filters:  # merges come after every list operation
        for p in todo:
            ref = _http_ref(p)
            if p.op == "MERGE" and (ref is None or ref(flt)) and "typed_config" in flt:
                if "typed_config" in p.value:
                    _merge_any(flt["typed_config"], p.value["typed_config"], p.where)
                flt["name"] = p.value.get("name") or flt["name"]
                p.applied = True


def _patch_listener(lis: Json, patches: list[_Patch]) -> bool:
    """False when a patch removed the listener."""
    for p in patches:
        if p.apply_to == "LISTENER" and p.op != "ADD" and _listener_match(lis, p):
            p.applied = True
            if p.op == "REMOVE":
                return False
            _merge(lis, p.value)
    chains = [
        *lis.get("filter_chains", []),
        *([lis["default_filter_chain"]] if "default_filter_chain" in lis else []),
    ]
    for fc in chains:
        mine = [p for p in patches if _listener_match(lis, p) and _chain_match(fc, p)]
        filters = fc.setdefault("filters", [])
        for p in mine:
            if (
                p.apply_to == "NETWORK_FILTER"
                and p.op != "MERGE"
                and _list_op(filters, p, _filter_ref(p))
            ):
                p.applied = True
        for flt in filters:
            for p in mine:
                ref = _filter_ref(p)
                if p.apply_to != "NETWORK_FILTER" or p.op != "MERGE" or (ref and not ref(flt)):
                    continue
                if "typed_config" not in flt:
                    continue
                user = p.value.get("typed_config")
                if user and flt["typed_config"].get("@type") == HCM_TYPE:
                    if "rds" in user:
                        raise ValueError(f"{p.where}: an HCM MERGE setting rds is not modelled")
                    if "route_config" in user:  # replaces istiod's rds: the oneof switches
                        flt["typed_config"]["route_config"] = copy.deepcopy(user["route_config"])
                        user = {k: v for k, v in user.items() if k != "route_config"}
                if user:
                    _merge_any(flt["typed_config"], user, p.where)
                flt["name"] = p.value.get("name") or flt["name"]
                p.applied = True
            if flt.get("name") == HCM and flt.get("typed_config", {}).get("@type") == HCM_TYPE:
                _patch_http_filters(
                    flt["typed_config"],
                    [
                        p
                        for p in mine
                        if p.apply_to == "HTTP_FILTER"
                        and (_filter_ref(p) is None or _filter_ref(p)(flt))
                    ],
                )  # type: ignore[misc]
    return True


def _cluster_match(c: Json, p: _Patch) -> bool:
    m = p.match.get("cluster") or {}
    if m.get("name"):
        return m["name"] == c.get("name")
    parts = c.get("name", "").split("|")
    _, port, subset, host = parts if len(parts) == 4 else ("", "0", "", "")
    return (
        (not m.get("subset") or m["subset"] == subset)
        and (not m.get("service") or m["service"] == host)
        and (not m.get("portNumber") or str(m["portNumber"]) == port)
    )


def _merge_cluster(c: Json, p: _Patch) -> None:
    socket = p.value.get("transport_socket")
    if socket is None:
        _merge(c, p.value)
        return
    current = next(
        (
            m["transport_socket"]
            for m in c.get("transport_socket_matches", [])
            if m.get("transport_socket", {}).get("name") == socket.get("name")
        ),
        None,
    )
    if c.get("transport_socket_matches") and current is None:
        return  # istiod drops it: a socket beside socket matches would be invalid
    current = current or c.get("transport_socket")
    if current is None or current.get("name") != socket.get("name"):
        c["transport_socket"] = copy.deepcopy(socket)
    elif current.get("typed_config") and socket.get("typed_config"):
        _merge_any(current["typed_config"], socket["typed_config"], p.where)


def _route_configs(listeners: list[Json]) -> Iterator[Json]:
    for lis in listeners:
        for fc in lis.get("filter_chains", []):
            for flt in fc.get("filters", []):
                rc = flt.get("typed_config", {}).get("route_config")
                if flt.get("name") == HCM and rc is not None:
                    yield rc


def _rc_match(rc: Json, p: _Patch, context: str, port_map: Mapping[str, list[int]]) -> bool:
    m = p.match.get("routeConfiguration") or {}
    name = rc.get("name", "")
    if m.get("name") and m["name"] != name:
        return False
    if context != "GATEWAY":
        return not m.get("portNumber") or (name.isdigit() and int(name) == m["portNumber"])
    parts = name.split(".")
    port = int(parts[1]) if len(parts) in (2, 5) and parts[1].isdigit() else 0
    port_name = parts[2] if name.startswith("https.") and len(parts) == 5 else ""
    gw = f"{parts[4]}/{parts[3]}" if port_name else ""
    if m.get("portName") and m["portName"] != port_name:
        return False
    if m.get("gateway") and m["gateway"] != gw:
        return False
    served = port_map.get(str(port), [port])  # istiod's anyPortMatches
    return not m.get("portNumber") or m["portNumber"] in served


def _vhost_match(vh: Json, p: _Patch) -> bool:
    m = p.at("routeConfiguration", "vhost") or {}
    return (not m.get("name") or m["name"] == vh.get("name")) and (
        not m.get("domainName") or m["domainName"] in vh.get("domains", [])
    )


def _route_ref(p: _Patch) -> Callable[[Json], bool] | None:
    m = p.at("routeConfiguration", "vhost", "route")
    if m is None:
        return None
    kinds = {"ROUTE": "route", "REDIRECT": "redirect", "DIRECT_RESPONSE": "direct_response"}

    def ref(r: Json) -> bool:
        action = m.get("action", "ANY")
        known = [k for k in kinds.values() if k in r]
        return (not m.get("name") or m["name"] == r.get("name")) and (
            action == "ANY" or not known or kinds[action] in r
        )

    return ref


def _patch_route_config(
    rc: Json, patches: list[_Patch], context: str, port_map: Mapping[str, list[int]]
) -> None:
    mine = [
        p
        for p in patches
        if p.apply_to in {"ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"}
        and _rc_match(rc, p, context, port_map)
    ]
    for p in mine:
        if p.apply_to == "ROUTE_CONFIGURATION":
            _merge(rc, p.value)
            p.applied = True
    vhosts = rc.setdefault("virtual_hosts", [])
    removed: set[str] = set()
    for i in range(len(vhosts)):
        gone = False
        for p in mine:
            if p.apply_to == "VIRTUAL_HOST" and p.op != "ADD" and _vhost_match(vhosts[i], p):
                p.applied = True
                if p.op == "REMOVE":
                    removed.add(vhosts[i].get("name", ""))
                    gone = True
                    break
                if p.op == "MERGE":
                    _merge(vhosts[i], p.value)
                else:
                    vhosts[i] = copy.deepcopy(p.value)
        if not gone:
            _patch_routes(
                vhosts[i],
                [p for p in mine if p.apply_to == "HTTP_ROUTE" and _vhost_match(vhosts[i], p)],
            )
    for p in mine:
        if p.apply_to == "VIRTUAL_HOST" and p.op == "ADD":
            vhosts.append(copy.deepcopy(p.value))
            p.applied = True
    rc["virtual_hosts"] = [v for v in vhosts if v.get("name", "") not in removed]


def _patch_routes(vh: Json, todo: list[_Patch]) -> None:
    kept = []
    for route in vh.get("routes", []):
        for p in todo:
            ref = _route_ref(p)
            if p.op in {"MERGE", "REMOVE"} and (ref is None or ref(route)):
                p.applied = True
                if p.op == "REMOVE":
                    break
                _merge(route, p.value)
        else:
            kept.append(route)
    vh["routes"] = kept
    for p in todo:
        if p.op not in {"MERGE", "REMOVE"} and _list_op(kept, p, _route_ref(p), True):
            p.applied = True


def apply_envoy_filter(
    bootstrap: Json,
    envoy_filter: Json,
    *,
    context: str,
    proxy_version: str | None = None,
    require_match: bool = False,
) -> Json:
    """`bootstrap` with the EnvoyFilter's patches applied as istiod applies them for the given
    generation context (SIDECAR_OUTBOUND or GATEWAY). Returns a new dict.

    Raises ValueError for what istiod would reject, ignore or drop, and for what is not
    modelled. `require_match`: also raise when a patch for this context changed nothing (in
    istiod that is legal and silent; in a test it is usually a wrong match)."""
    if context not in _CONTEXTS:
        raise ValueError(f"context {context!r}: only {sorted(_CONTEXTS)} are modelled")
    out = copy.deepcopy(bootstrap)
    patches = [
        p
        for p in _load(envoy_filter, proxy_version)
        if p.match.get("context", "ANY") in {"ANY", context}
    ]
    res = out["static_resources"]
    port_map = out.get("node", {}).get("metadata", {}).get(META, {}).get("gateway_port_map", {})
    for rc in _route_configs(res.get("listeners", [])):  # RDS output first (see docstring)
        _patch_route_config(rc, patches, context, port_map)
    clusters = []
    for c in res.get("clusters", []):
        cps = [p for p in patches if p.apply_to == "CLUSTER" and _cluster_match(c, p)]
        if any(p.op == "REMOVE" for p in cps):
            for p in cps:
                p.applied = p.applied or p.op == "REMOVE"
            continue
        for p in cps:
            if p.op == "MERGE":
                _merge_cluster(c, p)
                p.applied = True
        clusters.append(c)
    listeners = [lis for lis in res.get("listeners", []) if _patch_listener(lis, patches)]
    for p in patches:
        if p.op == "ADD" and p.apply_to in {"CLUSTER", "LISTENER"}:
            (clusters if p.apply_to == "CLUSTER" else listeners).append(copy.deepcopy(p.value))
            p.applied = True
    res["clusters"], res["listeners"] = clusters, listeners
    missed = [f"{p.where} ({p.apply_to} {p.op})" for p in patches if not p.applied]
    if require_match and missed:
        raise ValueError(f"patches that changed nothing: {', '.join(missed)}")
    return out


# ---------------------------------------------------------------------- cross-checks


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def clusters_referenced(bootstrap: Json) -> set[str]:
    """Every fixed cluster name the config points at: routes (cluster, weighted clusters,
    mirrors), tcp_proxy, http services, and gRPC services (ext_proc, ext_authz...) anywhere,
    including upstream HTTP filters in typed_extension_protocol_options."""
    names: set[str] = set()
    for key, value in _walk(bootstrap.get("static_resources", {})):
        if key == "cluster" and isinstance(value, str):
            names.add(value)
        elif key == "envoy_grpc" and isinstance(value, dict):
            names.add(value.get("cluster_name", ""))
        elif key == "weighted_clusters" and isinstance(value, dict):
            names.update(c["name"] for c in value.get("clusters", []))
    return names


def cluster_headers_referenced(bootstrap: Json) -> set[str]:
    """Headers routes take their cluster from (no fixed name to cross-check)."""
    return {v for k, v in _walk(bootstrap.get("static_resources", {})) if k == "cluster_header"}


def clusters_defined(bootstrap: Json) -> set[str]:
    return {c["name"] for c in bootstrap.get("static_resources", {}).get("clusters", [])}


def envoy_validate(
    bootstrap: Json, workdir: Path, envoy: str | Path
) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on the bootstrap (written as JSON into workdir)."""
    path = workdir / "istio-like-bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
