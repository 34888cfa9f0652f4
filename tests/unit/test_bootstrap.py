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


def test_one_cluster_per_provider_named_after_it() -> None:
    bootstrap = build_bootstrap(parse_config(config()))
    found = clusters(bootstrap)
    assert set(found) == {EXT_PROC_CLUSTER, "local", "openai"}
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
