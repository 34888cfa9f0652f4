"""The Istio-like harness itself: bootstrap shape, istiod's patch semantics, Envoy's verdict."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import certifi
import pytest

from tests.mesh_support import (
    HCM,
    apply_envoy_filter,
    cluster_headers_referenced,
    clusters_defined,
    clusters_referenced,
    envoy_validate,
    istio_like_sidecar,
)

Json = dict[str, Any]
ENVOY = Path(sys.executable).parent / "envoy"
T = "type.googleapis.com/"
HOST = "api.example.com"
ROUTER = "envoy.filters.http.router"


def service_entry(host: str = HOST, **spec: Any) -> Json:
    base = {
        "hosts": [host],
        "location": "MESH_EXTERNAL",
        "resolution": "DNS",
        "ports": [{"number": 80, "name": "http-80", "protocol": "HTTP", "targetPort": 443}],
    }
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": host.replace(".", "-"), "namespace": "apps"},
        "spec": {**base, **spec},
    }


def tls_rule(host: str = HOST, tls: Json | None = None, **policy: Any) -> Json:
    level = {"port": {"number": 80}, "tls": tls or {"mode": "SIMPLE", "sni": host}}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "spec": {"host": host, "trafficPolicy": {"portLevelSettings": [level], **policy}},
    }


def envoy_filter(*patches: Json) -> Json:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "t", "namespace": "apps"},
        "spec": {"configPatches": list(patches)},
    }


def patch(apply_to: str, op: str, value: Json | None = None, **match: Any) -> Json:
    body: Json = {"operation": op}
    if value is not None:
        body["value"] = value
    return {"applyTo": apply_to, "match": {"context": "SIDECAR_OUTBOUND", **match}, "patch": body}


def hcm_match(port: int = 80, sub: str | None = None) -> Json:
    flt: Json = {"name": HCM}
    if sub:
        flt["subFilter"] = {"name": sub}
    return {"portNumber": port, "filterChain": {"filter": flt}}


def sidecar(*extra: Json) -> Json:
    entries = [service_entry(), service_entry("other.example.com"), *extra]
    return istio_like_sidecar(entries, [tls_rule()], listen_ports={80: 15080}, admin_port=15000)


def listener(b: Json, name: str = "0.0.0.0_80") -> Json:
    return next(x for x in b["static_resources"]["listeners"] if x["name"] == name)


def hcm(b: Json, name: str = "0.0.0.0_80") -> Json:
    return listener(b, name)["filter_chains"][0]["filters"][0]["typed_config"]


def vhosts(b: Json) -> dict[str, Json]:
    return {v["name"]: v for v in hcm(b)["route_config"]["virtual_hosts"]}


def cluster(b: Json, name: str) -> Json:
    return next(c for c in b["static_resources"]["clusters"] if c["name"] == name)


def filter_names(b: Json) -> list[str]:
    return [f["name"] for f in hcm(b)["http_filters"]]


def ext_proc(name: str = "edge.ext_proc", **extra: Any) -> Json:
    return {
        "name": name,
        **extra,
        "typed_config": {
            "@type": T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "edge_agent"}},
        },
    }


# ---------------------------------------------------------------- the bootstrap's shape


def test_sidecar_names_and_shapes_follow_istio() -> None:
    b = sidecar()
    lis = listener(b)
    assert lis["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15080}
    assert lis["traffic_direction"] == "OUTBOUND"
    assert hcm(b)["stat_prefix"] == "outbound_0.0.0.0_80"
    rc = hcm(b)["route_config"]
    assert rc["name"] == "80" and rc["ignore_port_in_host_matching"] is True
    # Sorted service vhosts, then the catch-all; current Istio lists no host:port domains.
    assert [v["name"] for v in rc["virtual_hosts"]] == [
        "api.example.com:80",
        "other.example.com:80",
        "allow_any",
    ]
    assert vhosts(b)["api.example.com:80"]["domains"] == [HOST]
    route = vhosts(b)["api.example.com:80"]["routes"][0]
    assert route["name"] == "default" and route["route"]["cluster"] == f"outbound|80||{HOST}"
    assert vhosts(b)["allow_any"]["routes"][0]["route"]["cluster"] == "PassthroughCluster"
    assert filter_names(b) == [
        "envoy.filters.http.grpc_stats",
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        ROUTER,
    ]
    assert cluster(b, "PassthroughCluster")["type"] == "ORIGINAL_DST"
    assert clusters_referenced(b) <= clusters_defined(b)
    assert {"BlackHoleCluster", "PassthroughCluster"} <= clusters_defined(b)


def test_destination_rule_tls_originates_to_the_target_port() -> None:
    c = cluster(sidecar(), f"outbound|80||{HOST}")
    assert c["type"] == "STRICT_DNS"
    address = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": HOST, "port_value": 443}
    ctx = c["transport_socket"]["typed_config"]
    assert ctx["sni"] == HOST
    assert ctx["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "filename": certifi.where()
    }
    # No rule for the other host: plain HTTP to its target port.
    assert "transport_socket" not in cluster(sidecar(), "outbound|80||other.example.com")


def test_static_entry_without_sni_gets_istios_auto_sni() -> None:
    se = service_entry(
        "model.internal",
        resolution="STATIC",
        addresses=["10.1.2.3"],
        endpoints=[{"address": "10.1.2.3", "ports": {"http-80": 8443}}],
    )
    b = istio_like_sidecar(
        [se],
        [tls_rule("model.internal", {"mode": "SIMPLE"})],
        listen_ports={80: 15080},
        admin_port=15000,
    )
    c = cluster(b, "outbound|80||model.internal")
    assert c["type"] == "STATIC"
    port = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert port["socket_address"]["port_value"] == 8443  # endpoint ports beat targetPort
    assert "sni" not in c["transport_socket"]["typed_config"]
    options = c["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["upstream_http_protocol_options"] == {
        "auto_sni": True,
        "auto_san_validation": True,
    }
    assert vhosts(b)["model.internal:80"]["domains"] == ["model.internal", "10.1.2.3"]


def test_connection_pool_is_mapped() -> None:
    pool = {
        "tcp": {
            "maxConnections": 7,
            "connectTimeout": "2s",
            "tcpKeepalive": {"time": "1m", "interval": "10s", "probes": 3},
        },
        "http": {"http1MaxPendingRequests": 5, "maxRequestsPerConnection": 9, "idleTimeout": "30s"},
    }
    b = istio_like_sidecar(
        [service_entry()], [tls_rule(connectionPool=pool)], listen_ports={80: 1}, admin_port=2
    )
    c = cluster(b, f"outbound|80||{HOST}")
    limits = c["circuit_breakers"]["thresholds"][0]
    assert (limits["max_connections"], limits["max_pending_requests"]) == (7, 5)
    assert c["connect_timeout"] == "2s"
    assert c["upstream_connection_options"]["tcp_keepalive"] == {
        "keepalive_probes": 3,
        "keepalive_time": 60,
        "keepalive_interval": 10,
    }
    common = c["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]["common_http_protocol_options"]
    assert common == {"idle_timeout": "30s", "max_requests_per_connection": 9}


# ---------------------------------------------------------------- HTTP filters


def test_insert_before_router_keeps_disabled_and_insert_first_ignores_subfilter() -> None:
    ef = envoy_filter(
        patch(
            "HTTP_FILTER", "INSERT_BEFORE", ext_proc(disabled=True), listener=hcm_match(sub=ROUTER)
        ),
        # INSERT_FIRST prepends whatever subFilter says (istiod never reads it there).
        patch(
            "HTTP_FILTER",
            "INSERT_FIRST",
            ext_proc("first"),
            listener=hcm_match(sub="no.such.filter"),
        ),
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND", require_match=True)
    assert filter_names(b)[0] == "first"
    assert filter_names(b)[-2:] == ["edge.ext_proc", ROUTER]
    assert hcm(b)["http_filters"][-2]["disabled"] is True


def test_missing_reference_or_other_port_changes_nothing() -> None:
    for match in (hcm_match(sub="no.such.filter"), hcm_match(port=8080, sub=ROUTER)):
        ef = envoy_filter(patch("HTTP_FILTER", "INSERT_BEFORE", ext_proc(), listener=match))
        base = sidecar()
        assert apply_envoy_filter(base, ef, context="SIDECAR_OUTBOUND") == base
        with pytest.raises(ValueError, match="changed nothing"):
            apply_envoy_filter(base, ef, context="SIDECAR_OUTBOUND", require_match=True)


def test_http_filter_merge_same_type_merges_other_type_or_extra_fields_fail() -> None:
    add = patch("HTTP_FILTER", "INSERT_BEFORE", ext_proc(), listener=hcm_match(sub=ROUTER))
    merge = patch(
        "HTTP_FILTER",
        "MERGE",
        {
            "typed_config": {
                "@type": T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                "failure_mode_allow": True,
            }
        },
        listener=hcm_match(sub="edge.ext_proc"),
    )
    b = apply_envoy_filter(sidecar(), envoy_filter(add, merge), context="SIDECAR_OUTBOUND")
    config = hcm(b)["http_filters"][-2]["typed_config"]
    assert config["failure_mode_allow"] is True and "grpc_service" in config
    wrong = copy.deepcopy(merge)
    wrong["patch"]["value"]["typed_config"]["@type"] = T + "envoy.config.route.v3.FilterConfig"
    with pytest.raises(ValueError, match="cannot merge different types"):
        apply_envoy_filter(sidecar(), envoy_filter(add, wrong), context="SIDECAR_OUTBOUND")
    ignored = copy.deepcopy(merge)
    ignored["patch"]["value"]["disabled"] = True
    with pytest.raises(ValueError, match="istiod ignores"):
        apply_envoy_filter(sidecar(), envoy_filter(ignored), context="SIDECAR_OUTBOUND")


def test_network_filter_merge_appends_lists_and_keeps_the_rest() -> None:
    mutation = {
        "name": "strip",
        "typed_config": {
            "@type": T + "envoy.extensions.http.early_header_mutation.header_mutation.v3"
            ".HeaderMutation",
            "mutations": [{"remove": "x-route"}],
        },
    }
    ef = envoy_filter(
        patch(
            "NETWORK_FILTER",
            "MERGE",
            {
                "name": HCM,
                "typed_config": {
                    "@type": T + "envoy.extensions.filters.network.http_connection_manager.v3"
                    ".HttpConnectionManager",
                    "earlyHeaderMutationExtensions": [
                        mutation
                    ],  # camelCase, as Istio users write it
                    "normalize_path": False,
                },
            },
            listener=hcm_match(),
        )
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND", require_match=True)
    assert hcm(b)["early_header_mutation_extensions"] == [mutation]
    assert hcm(b)["normalize_path"] is True  # a zero value never overwrites
    assert hcm(b)["route_config"]["name"] == "80" and filter_names(b)[-1] == ROUTER


# ---------------------------------------------------------------- routes


def route_names(b: Json, vhost: str) -> list[str]:
    return [r.get("name", "") for r in vhosts(b)[vhost]["routes"]]


def test_http_route_insert_first_without_vhost_hits_every_vhost() -> None:
    route = {"name": "mine", "match": {"prefix": "/v1"}, "direct_response": {"status": 200}}
    ef = envoy_filter(
        patch("HTTP_ROUTE", "INSERT_FIRST", route, routeConfiguration={"portNumber": 80})
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND")
    assert {name: route_names(b, name)[0] for name in vhosts(b)} == {
        "api.example.com:80": "mine",
        "other.example.com:80": "mine",
        "allow_any": "mine",
    }


def test_http_route_ops_with_vhost_and_route_references() -> None:
    rc = {"portNumber": 80, "vhost": {"name": "api.example.com:80"}}
    ef = envoy_filter(
        patch(
            "HTTP_ROUTE",
            "INSERT_FIRST",
            {"name": "b", "match": {"prefix": "/b"}, "direct_response": {"status": 200}},
            routeConfiguration=rc,
        ),
        patch(
            "HTTP_ROUTE",
            "INSERT_FIRST",
            {"name": "a", "match": {"prefix": "/a"}, "direct_response": {"status": 200}},
            routeConfiguration=rc,
        ),
        patch(
            "HTTP_ROUTE",
            "INSERT_AFTER",
            {"name": "c", "match": {"prefix": "/c"}, "direct_response": {"status": 200}},
            routeConfiguration={**rc, "vhost": {**rc["vhost"], "route": {"name": "a"}}},
        ),
        patch(
            "HTTP_ROUTE",
            "MERGE",
            {"route": {"timeout": "30s"}},
            routeConfiguration={**rc, "vhost": {**rc["vhost"], "route": {"name": "default"}}},
        ),
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND", require_match=True)
    # Each INSERT_FIRST prepends: the last one listed ends up first.
    assert route_names(b, "api.example.com:80") == ["a", "c", "b", "default"]
    assert vhosts(b)["api.example.com:80"]["routes"][-1]["route"]["timeout"] == "30s"
    assert route_names(b, "other.example.com:80") == ["default"]


def test_vhost_merge_replaces_typed_per_filter_config_per_key() -> None:
    enable = {"@type": T + "envoy.config.route.v3.FilterConfig"}
    optional = {"@type": T + "envoy.config.route.v3.FilterConfig", "is_optional": True}
    rc = {"portNumber": 80, "vhost": {"name": "api.example.com:80"}}
    ef = envoy_filter(
        patch(
            "VIRTUAL_HOST",
            "MERGE",
            {"typed_per_filter_config": {"x": optional}},
            routeConfiguration=rc,
        ),
        patch(
            "VIRTUAL_HOST",
            "MERGE",
            {
                "typed_per_filter_config": {"x": enable, "y": enable},
                "include_attempt_count_in_response": True,
            },
            routeConfiguration=rc,
        ),
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND", require_match=True)
    vh = vhosts(b)["api.example.com:80"]
    assert vh["typed_per_filter_config"] == {"x": enable, "y": enable}
    assert vh["include_attempt_count_in_response"] is True


def test_vhost_add_and_remove() -> None:
    new = {"name": "new", "domains": ["new.example.com"], "routes": []}
    ef = envoy_filter(
        patch("VIRTUAL_HOST", "REMOVE", routeConfiguration={"vhost": {"name": "allow_any"}}),
        patch("VIRTUAL_HOST", "ADD", new, routeConfiguration={"name": "80"}),
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND", require_match=True)
    assert list(vhosts(b)) == ["api.example.com:80", "other.example.com:80", "new"]


def test_route_configuration_port_for_sidecar_and_gateway() -> None:
    ef = envoy_filter(
        patch(
            "ROUTE_CONFIGURATION",
            "MERGE",
            {"most_specific_header_mutations_wins": True},
            routeConfiguration={"portNumber": 8080},
        )
    )
    gw_ef = copy.deepcopy(ef)
    gw_ef["spec"]["configPatches"][0]["match"]["context"] = "GATEWAY"
    gw = istio_like_sidecar(
        [service_entry()],
        [],
        listen_ports={8080: 18080},
        admin_port=1,
        context="GATEWAY",
        server_ports={8080: 80},
    )
    assert hcm(gw, "0.0.0.0_8080")["route_config"]["name"] == "http.8080"
    assert [v["name"] for v in hcm(gw, "0.0.0.0_8080")["route_config"]["virtual_hosts"]] == [
        "api.example.com:80"
    ]
    # The ingressgateway serves Gateway port 80 on 8080: only 80 matches "http.8080".
    assert apply_envoy_filter(gw, gw_ef, context="GATEWAY") == gw
    gw_ef["spec"]["configPatches"][0]["match"]["routeConfiguration"]["portNumber"] = 80
    rc = hcm(apply_envoy_filter(gw, gw_ef, context="GATEWAY"), "0.0.0.0_8080")["route_config"]
    assert rc["most_specific_header_mutations_wins"] is True
    # A GATEWAY patch does nothing to a sidecar, and the other way round.
    assert apply_envoy_filter(sidecar(), gw_ef, context="SIDECAR_OUTBOUND") == sidecar()
    assert apply_envoy_filter(gw, ef, context="GATEWAY") == gw


# ---------------------------------------------------------------- clusters


def test_cluster_add_merge_remove() -> None:
    added = {"name": "edge_agent", "type": "STATIC", "connect_timeout": "1s"}
    ef = envoy_filter(
        patch("CLUSTER", "ADD", added),
        patch(
            "CLUSTER",
            "MERGE",
            {"connect_timeout": "3s"},
            cluster={"service": HOST, "portNumber": 80},
        ),
        patch("CLUSTER", "MERGE", {"connect_timeout": "9s"}, cluster={"name": "edge_agent"}),
        patch("CLUSTER", "REMOVE", cluster={"name": "BlackHoleCluster"}),
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND")
    assert cluster(b, f"outbound|80||{HOST}")["connect_timeout"] == "3s"
    assert cluster(b, "edge_agent") == added  # ADDed clusters are not merged by istiod
    assert "BlackHoleCluster" not in clusters_defined(b)


def test_cluster_transport_socket_merge() -> None:
    socket = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "changed.example.com",
        },
    }
    ef = envoy_filter(
        patch("CLUSTER", "MERGE", {"transport_socket": socket}, cluster={"service": HOST})
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND")
    ctx = cluster(b, f"outbound|80||{HOST}")["transport_socket"]["typed_config"]
    assert ctx["sni"] == "changed.example.com" and "common_tls_context" in ctx
    ef["spec"]["configPatches"][0]["patch"]["value"]["connect_timeout"] = "1s"
    with pytest.raises(ValueError, match="istiod drops"):
        apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND")


# ---------------------------------------------------------------- merge rules, loud failures


def test_merge_clears_oneof_siblings_and_replaces_anys() -> None:
    rc = {"portNumber": 80, "vhost": {"name": "api.example.com:80", "route": {"name": "default"}}}
    ef = envoy_filter(
        patch(
            "HTTP_ROUTE",
            "MERGE",
            {
                "match": {"path": "/exact"},
                "route": {"cluster_header": "x-cluster", "retry_policy": {"num_retries": 0}},
            },
            routeConfiguration=rc,
        )
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND")
    route = vhosts(b)["api.example.com:80"]["routes"][0]
    assert route["match"] == {"path": "/exact"}
    assert "cluster" not in route["route"] and route["route"]["cluster_header"] == "x-cluster"
    assert route["route"]["retry_policy"]["num_retries"] == 2  # zero is no override
    assert cluster_headers_referenced(b) == {"x-cluster"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (patch("FILTER_CHAIN", "MERGE", {"name": "x"}), "FILTER_CHAIN"),
        (patch("HTTP_FILTER", "SPLICE", {"name": "x"}), "SPLICE"),
        (patch("ROUTE_CONFIGURATION", "ADD", {"name": "x"}), "not applied by istiod"),
        (
            patch("NETWORK_FILTER", "MERGE", {"name": "x"}, listener=hcm_match(sub=ROUTER)),
            "subFilter",
        ),
        (patch("HTTP_FILTER", "REMOVE", listener={"portnumber": 80}), "unknown match field"),
        (patch("HTTP_ROUTE", "MERGE", {"name": "x"}, cluster={"name": "x"}), "cannot use"),
        (patch("CLUSTER", "ADD"), "missing patch value"),
        (
            {**patch("CLUSTER", "ADD", {"name": "x"}), "match": {"proxy": {"proxyVersion": "^1"}}},
            "proxy_version",
        ),
    ],
)
def test_what_istio_would_reject_or_ignore_fails_loudly(bad: Json, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_envoy_filter(sidecar(), envoy_filter(bad), context="SIDECAR_OUTBOUND")


def test_inputs_are_not_mutated_and_inbound_patches_do_not_apply() -> None:
    base = sidecar()
    snapshot = copy.deepcopy(base)
    inbound = patch("HTTP_FILTER", "INSERT_FIRST", ext_proc())
    inbound["match"]["context"] = "SIDECAR_INBOUND"
    ef = envoy_filter(inbound, patch("CLUSTER", "ADD", {"name": "x", "type": "STATIC"}))
    ef_snapshot = copy.deepcopy(ef)
    out = apply_envoy_filter(base, ef, context="SIDECAR_OUTBOUND", require_match=True)
    assert base == snapshot and ef == ef_snapshot
    assert "x" in clusters_defined(out) and filter_names(out) == filter_names(base)


def test_clusters_referenced_finds_routes_and_grpc_services_anywhere() -> None:
    upstream_filter = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": T + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}},
        },
    }
    weighted = {
        "name": "w",
        "match": {"prefix": "/w"},
        "route": {
            "weighted_clusters": {
                "clusters": [{"name": "w1", "weight": 1}, {"name": "w2", "weight": 1}]
            }
        },
    }
    ef = envoy_filter(
        patch(
            "CLUSTER",
            "MERGE",
            {
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "http_filters": [upstream_filter],
                    }
                }
            },
            cluster={"service": HOST},
        ),
        patch("HTTP_FILTER", "INSERT_BEFORE", ext_proc(), listener=hcm_match(sub=ROUTER)),
        patch("HTTP_ROUTE", "INSERT_FIRST", weighted, routeConfiguration={"name": "80"}),
    )
    b = apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND")
    assert clusters_referenced(b) - clusters_defined(b) == {"authz", "edge_agent", "w1", "w2"}


# ---------------------------------------------------------------- Envoy's verdict


def project_like_filter(context: str, vhost: str | None) -> Json:
    """The shape the project generates: an ext_proc cluster, the filter before the router
    (disabled on sidecars, enabled per vhost), an HCM merge and routes in the vhost."""
    grpc = {
        "name": "edge_agent",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "edge_agent",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": 50051}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    port = 80 if context == "SIDECAR_OUTBOUND" else 8080
    rc: Json = {"portNumber": 80}
    vhost_value: Json = {"include_attempt_count_in_response": True}
    if vhost:
        rc["vhost"] = {"name": vhost}
        # Enables the disabled filter; Envoy refuses a FilterConfig without `config`.
        vhost_value["typed_per_filter_config"] = {
            "edge.ext_proc": {"@type": T + "envoy.config.route.v3.FilterConfig", "config": {}}
        }
    route = {
        "name": "edge.routed",
        "match": {
            "prefix": "/",
            "headers": [{"name": "x-edge-route", "string_match": {"exact": "a"}}],
        },
        "route": {"cluster": f"outbound|80||{HOST}", "timeout": "300s"},
    }
    patches = [
        patch("CLUSTER", "ADD", grpc),
        patch(
            "NETWORK_FILTER",
            "MERGE",
            {
                "name": HCM,
                "typed_config": {
                    "@type": T + "envoy.extensions.filters.network.http_connection_manager.v3"
                    ".HttpConnectionManager",
                    "early_header_mutation_extensions": [
                        {
                            "name": "strip",
                            "typed_config": {
                                "@type": T
                                + "envoy.extensions.http.early_header_mutation.header_mutation.v3"
                                ".HeaderMutation",
                                "mutations": [{"remove": "x-edge-route"}],
                            },
                        }
                    ],
                },
            },
            listener=hcm_match(port),
        ),
        patch(
            "HTTP_FILTER",
            "INSERT_BEFORE",
            ext_proc(disabled=True) if vhost else ext_proc(),
            listener=hcm_match(port, ROUTER),
        ),
        patch("VIRTUAL_HOST", "MERGE", vhost_value, routeConfiguration=rc),
        patch("HTTP_ROUTE", "INSERT_FIRST", route, routeConfiguration=rc),
    ]
    for p in patches:
        p["match"]["context"] = context
    return envoy_filter(*patches)


@pytest.mark.skipif(not ENVOY.exists(), reason="no envoy binary in the virtualenv")
@pytest.mark.parametrize("context", ["SIDECAR_OUTBOUND", "GATEWAY"])
def test_envoy_accepts_the_patched_bootstrap(context: str, tmp_path: Path) -> None:
    if context == "GATEWAY":
        base = istio_like_sidecar(
            [service_entry()],
            [tls_rule()],
            listen_ports={8080: 18080},
            admin_port=15000,
            context=context,
            server_ports={8080: 80},
        )
        ef = project_like_filter(context, None)
    else:
        base = sidecar()
        ef = project_like_filter(context, "api.example.com:80")
    b = apply_envoy_filter(base, ef, context=context, require_match=True)
    assert clusters_referenced(b) <= clusters_defined(b)
    result = envoy_validate(b, tmp_path, ENVOY)
    assert result.returncode == 0, result.stderr + result.stdout


def _empty_filter_config() -> Json:
    ef = project_like_filter("SIDECAR_OUTBOUND", "api.example.com:80")
    per_filter = ef["spec"]["configPatches"][3]["patch"]["value"]["typed_per_filter_config"]
    per_filter["edge.ext_proc"].pop("config")
    return ef


@pytest.mark.skipif(not ENVOY.exists(), reason="no envoy binary in the virtualenv")
@pytest.mark.parametrize(
    ("ef", "message"),
    [
        # ADD appends after the router: istiod pushes it, Envoy refuses it.
        (
            envoy_filter(
                patch("HTTP_FILTER", "ADD", ext_proc(), listener=hcm_match()),
                patch(
                    "CLUSTER",
                    "ADD",
                    {"name": "edge_agent", "type": "STATIC", "connect_timeout": "1s"},
                ),
            ),
            "router",
        ),
        (_empty_filter_config(), "Empty route/virtual host per filter configuration"),
    ],
)
def test_envoy_rejects_what_istiod_would_push(ef: Json, message: str, tmp_path: Path) -> None:
    result = envoy_validate(
        apply_envoy_filter(sidecar(), ef, context="SIDECAR_OUTBOUND"), tmp_path, ENVOY
    )
    assert result.returncode != 0 and message in (result.stderr + result.stdout)
