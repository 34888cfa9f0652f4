"""The generated Envoy bootstrap, checked by the real envoy binary (--mode validate)."""

from __future__ import annotations

import pytest

from edge_agent.config import parse_config
from edge_agent.envoy.bootstrap import EXT_PROC_CLUSTER, build_bootstrap
from edge_agent.envoy.process import validate


def config(**envoy: object) -> dict:
    return {
        "providers": [
            {"name": "local", "type": "openai_compatible", "base_url": "http://127.0.0.1:8000/v1"},
            {
                "name": "openai",
                "type": "openai",
                "base_url": "https://api.openai.com",
                "api_key_env": "OPENAI_API_KEY",
            },
        ],
        "models": [{"name": "m", "targets": ["local/x", "openai/y"]}],
        "envoy": envoy,
    }


def clusters(bootstrap: dict) -> dict[str, dict]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_bootstrap_validates_in_real_envoy(mode: str) -> None:
    bootstrap = build_bootstrap(parse_config(config(failure_mode=mode)))
    ok, output = validate(bootstrap)
    assert ok, output


KEYS = {"OPENAI_API_KEY": "sk-test"}


def test_one_cluster_per_provider_named_after_it() -> None:
    bootstrap = build_bootstrap(parse_config(config()), KEYS)
    found = clusters(bootstrap)
    chains = {"edge_agent_chain_0_0", "edge_agent_chain_0_1"}  # model m fails over
    members = {"edge_agent_target_0", "edge_agent_target_1"}  # its two targets, shared
    assert set(found) == {EXT_PROC_CLUSTER, "local", "openai", *chains, *members}
    assert "transport_socket" not in found["local"]
    tls = found["openai"]["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"
    assert found["openai"]["type"] == "STRICT_DNS"
    assert found["local"]["type"] == "STATIC"


def test_every_cluster_reference_exists() -> None:
    # envoy --mode validate does not check the ext_proc cluster_name: check it here.
    for mode in ("closed", "open"):
        bootstrap = build_bootstrap(parse_config(config(failure_mode=mode)))
        names = set(clusters(bootstrap))
        hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        typed = hcm["typed_config"]
        ext_proc = typed["http_filters"][0]["typed_config"]
        assert ext_proc["grpc_service"]["envoy_grpc"]["cluster_name"] in names
        assert ext_proc["failure_mode_allow"] is (mode == "open")
        for route in typed["route_config"]["virtual_hosts"][0]["routes"]:
            cluster = route.get("route", {}).get("cluster")
            assert cluster is None or cluster in names


def test_failover_chains_try_each_target_once_with_the_agent_on_every_attempt() -> None:
    cfg = config()
    cfg["providers"][0]["timeout_s"] = 3
    cfg["providers"][1]["timeout_s"] = 10
    bootstrap = build_bootstrap(parse_config(cfg), KEYS)
    found = clusters(bootstrap)
    chain = found["edge_agent_chain_0_1"]  # openai first, then local
    assert chain["cluster_type"]["name"] == "envoy.clusters.aggregate"
    members = [found[m] for m in chain["cluster_type"]["typed_config"]["clusters"]]
    # One member per target, in attempt order, each host tagged with its target...
    targets = [
        m["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"]["filter_metadata"][
            "edge_agent"
        ]["target"]
        for m in members
    ]
    assert targets == ["openai/y", "local/x"]
    assert members[0]["transport_socket"]["typed_config"]["sni"] == "api.openai.com"
    assert "transport_socket" not in members[1]
    # ...and every attempt ends at its own provider's timeout.
    protocol = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    durations = [
        m["typed_extension_protocol_options"][protocol]["common_http_protocol_options"][
            "max_stream_duration"
        ]
        for m in members
    ]
    assert durations == ["10.000s", "3.000s"]
    # The other chain shares the members (one connection pool per target).
    other = found["edge_agent_chain_0_0"]["cluster_type"]["typed_config"]["clusters"]
    assert other == list(reversed(chain["cluster_type"]["typed_config"]["clusters"]))
    # The agent filters every attempt: its upstream filter sits on the aggregate.
    options = chain["typed_extension_protocol_options"][protocol]
    ext_proc, codec = options["http_filters"]
    assert codec["name"] == "envoy.filters.http.upstream_codec"  # must be last
    grpc = ext_proc["typed_config"]["grpc_service"]
    assert grpc["envoy_grpc"]["cluster_name"] == EXT_PROC_CLUSTER
    assert grpc["initial_metadata"] == [{"key": "x-edge-agent-stage", "value": "upstream"}]
    routes = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    chain_routes = [r for r in routes if r.get("route", {}).get("cluster", "").startswith("edge")]
    assert [r["route"]["cluster"] for r in chain_routes] == sorted(
        ["edge_agent_chain_0_0", "edge_agent_chain_0_1"]
    )
    # Before the providers' own routes (and the fallback).
    assert routes.index(chain_routes[-1]) < len(routes) - 1 - 2  # two providers
    policy = chain_routes[0]["route"]["retry_policy"]
    assert policy["num_retries"] == 1 and policy["retriable_status_codes"] == [429]
    assert "per_try_timeout" not in policy  # one value for all tries: the members decide
    assert chain_routes[0]["route"]["timeout"] == "23.000s"  # every try, connects included
    assert chain["circuit_breakers"]["thresholds"][0]["max_retries"] > 3
    # A provider's own route: its own timeout, not the largest.
    own = {r["route"]["cluster"]: r["route"]["timeout"] for r in routes if "route" in r}
    assert own["local"] == "3.000s" and own["openai"] == "10.000s"


def test_a_disabled_provider_is_left_out_of_failover_chains() -> None:
    names = set(clusters(build_bootstrap(parse_config(config()), {})))
    assert not any(n.startswith("edge_agent_chain") for n in names)  # one usable target


def test_single_target_and_opted_out_models_get_no_chain() -> None:
    data = config()
    data["models"] = [
        {"name": "one", "targets": ["local/x"]},
        {"name": "two", "targets": ["local/x", "openai/y"], "failover": False},
    ]
    names = set(clusters(build_bootstrap(parse_config(data))))
    assert not any(n.startswith("edge_agent_chain") for n in names)


def test_envoy_may_wait_as_long_as_any_effect_asks() -> None:
    """The servicer asks Envoy to wait past its message timeout for the longest effect:
    an identical request in flight (cache.coalesce.max_wait_s) or a JWKS fetch (5 s).
    With a short coalescing wait and a JWT issuer, Envoy's bound must still allow the
    fetch, or Envoy refuses the extension and the request fails."""
    from edge_agent.envoy.bootstrap import ext_proc_filter
    from edge_agent.identity.settings import FETCH_TIMEOUT_S

    raw = config(message_timeout_ms=500)
    raw["cache"] = {"coalesce": {"max_wait_s": 1}}
    raw["auth"] = {
        "jwt": [{"issuer": "https://idp.example/", "jwks_url": "https://idp.example/jwks"}]
    }
    cfg = parse_config(raw)
    bound = ext_proc_filter(cfg)["typed_config"]["max_message_timeout"]
    # the servicer's extension for the fetch: wait_s + the message budget + 1 s
    assert float(bound.rstrip("s")) >= FETCH_TIMEOUT_S + 0.5 + 1.0
    without_jwt = parse_config({**raw, "auth": {}})
    assert without_jwt.longest_wait_s == 1  # only coalescing holds requests then
