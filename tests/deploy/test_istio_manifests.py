"""The Istio objects: up to date with their source, valid against Istio's CRDs, and made
of the very objects the standalone bootstrap holds."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import certifi
import pytest
import yaml

from edge_agent.config import load_config, parse_config
from edge_agent.envoy import bootstrap, mesh
from tests.deploy import kube

CONFIG = load_config(kube.ROOT / "istio/config.yaml")

# Shapes the sample does not have: an address-only upstream, an in-cluster Service,
# fail-open, a custom routing header.
OTHER = parse_config(
    {
        "listen": {"grpc": "127.0.0.1:50052", "admin": "0.0.0.0:9191"},
        "envoy": {"failure_mode": "open", "routing_header": "x-llm-route"},
        "providers": [
            {"name": "vllm", "type": "openai_compatible", "base_url": "http://10.0.0.7:8000"},
            {
                "name": "ollama.local",
                "type": "openai_compatible",
                "base_url": "http://ollama.models.svc.cluster.local:11434",
            },
            {
                "name": "groq",
                "type": "groq",
                "base_url": "https://api.groq.com/openai",
                "api_key_env": "GROQ_API_KEY",
            },
        ],
        "models": [
            {"name": "llama", "targets": ["vllm/llama", "ollama.local/llama", "groq/llama"]}
        ],
    }
)


def _objects(config: Any, mode: mesh.MeshMode) -> list[dict[str, Any]]:
    return mesh.manifests(config, mesh.MeshOptions(mode=mode))


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "tools/generate_manifests.py", "--check"],
        cwd=kube.ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", ["istio/sidecar.yaml", "istio/gateway.yaml"])
def test_shipped_manifests_validate_against_istio_crds(path: str) -> None:
    objects = list(yaml.safe_load_all((kube.ROOT / path).read_text()))
    assert objects
    for obj in objects:
        assert kube.istio_errors(obj) == [], obj["metadata"]["name"]


@pytest.mark.parametrize("mode", ["sidecar", "gateway"])
def test_other_shapes_validate(mode: mesh.MeshMode) -> None:
    for obj in _objects(OTHER, mode):
        assert kube.istio_errors(obj) == [], obj["metadata"]["name"]


def test_the_crd_check_can_fail() -> None:
    obj = _objects(CONFIG, "sidecar")[0]
    obj["spec"]["ports"].append(dict(obj["spec"]["ports"][0]))  # a duplicate port
    obj["spec"]["resolutoin"] = "DNS"
    problems = kube.istio_errors(obj)
    assert any("resolutoin" in p for p in problems)
    assert any("port number cannot be duplicated" in p for p in problems)


def test_service_entries_register_hosts_for_plain_http_with_tls_origination() -> None:
    objs = _objects(CONFIG, "sidecar")
    entries = {o["spec"]["hosts"][0]: o["spec"] for o in objs if o["kind"] == "ServiceEntry"}
    assert entries["api.openai.com"]["ports"] == [
        {"number": 80, "name": "http-80", "protocol": "HTTP", "targetPort": 443}
    ]
    rules = {o["spec"]["host"]: o["spec"] for o in objs if o["kind"] == "DestinationRule"}
    assert rules["api.anthropic.com"]["trafficPolicy"]["portLevelSettings"] == [
        {
            "port": {"number": 80},
            "tls": {
                "mode": "SIMPLE",
                "sni": "api.anthropic.com",
                "subjectAltNames": ["api.anthropic.com"],
            },
        }
    ]


def test_other_shapes_get_the_right_entries() -> None:
    objs = _objects(OTHER, "sidecar")
    entries = [o["spec"] for o in objs if o["kind"] == "ServiceEntry"]
    # The in-cluster Service needs none; the address gets a name, STATIC, no TLS.
    by_host = {e["hosts"][0]: e for e in entries}
    assert set(by_host) == {"10-0-0-7.llm-edge-agent.internal", "api.groq.com"}
    ip = by_host["10-0-0-7.llm-edge-agent.internal"]
    assert ip["resolution"] == "STATIC" and ip["endpoints"] == [{"address": "10.0.0.7"}]
    assert [o["spec"]["host"] for o in objs if o["kind"] == "DestinationRule"] == ["api.groq.com"]


def _patches(config: Any, mode: mesh.MeshMode, apply_to: str) -> list[dict[str, Any]]:
    flt = next(o for o in _objects(config, mode) if o["kind"] == "EnvoyFilter")
    return [p for p in flt["spec"]["configPatches"] if p["applyTo"] == apply_to]


@pytest.mark.parametrize("config", [CONFIG, OTHER], ids=["sample", "other"])
@pytest.mark.parametrize("mode", ["sidecar", "gateway"])
def test_patches_carry_the_bootstraps_objects(config: Any, mode: mesh.MeshMode) -> None:
    standalone = bootstrap.build_bootstrap(config, mesh.ALL_CREDENTIALS)
    clusters = {c["name"]: c for c in standalone["static_resources"]["clusters"]}
    # The mesh names the proxy image's CA bundle where the bootstrap names this venv's.
    text = json.dumps([p["patch"]["value"] for p in _patches(config, mode, "CLUSTER")])
    assert certifi.where() not in text
    text = text.replace(json.dumps(mesh.PROXY_CA_FILE), json.dumps(certifi.where()))
    added = json.loads(text)
    assert {p["patch"]["operation"] for p in _patches(config, mode, "CLUSTER")} == {"ADD"}
    for cluster in added:
        name = cluster["name"].removeprefix(mesh.PROVIDER_CLUSTER_PREFIX)
        expected = (
            mesh._renamed(clusters[name], cluster["name"])
            if name != cluster["name"]
            else clusters[name]
        )
        assert cluster == expected
    options = mesh.MeshOptions(mode=mode)
    # Services of the cluster go through Istio's own cluster for them (mutual TLS).
    in_cluster = {p.name for p in config.providers if mesh.mesh_host(p, options).service_fqdn}
    names = {c["name"].removeprefix(mesh.PROVIDER_CLUSTER_PREFIX) for c in added}
    assert names == set(clusters) - in_cluster

    hcm = standalone["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = hcm["typed_config"]["http_filters"]
    for patch in _patches(config, mode, "HTTP_FILTER"):
        value = dict(patch["patch"]["value"])
        assert value.pop("name") == mesh.FILTER_NAME
        assert value.pop("disabled", False) is (mode == "sidecar")
        # (The standalone bootstrap's is disabled too, and turned on in its virtual host.)
        assert value == {k: v for k, v in filters[0].items() if k not in ("name", "disabled")}
        assert patch["patch"]["operation"] == "INSERT_BEFORE"
    for patch in _patches(config, mode, "NETWORK_FILTER"):
        early = patch["patch"]["value"]["typed_config"]["early_header_mutation_extensions"]
        assert early == hcm["typed_config"]["early_header_mutation_extensions"]
        # The gateway cuts slow clients off as the standalone gateway does; a sidecar's
        # listener (all of its app's traffic) keeps Istio's settings.
        timeouts = ("request_headers_timeout", "request_timeout", "stream_idle_timeout")
        merged = {k: patch["patch"]["value"]["typed_config"].get(k) for k in timeouts}
        if mode == "gateway":
            assert merged == {k: hcm["typed_config"][k] for k in timeouts}
        else:
            assert merged == dict.fromkeys(timeouts)

    vhost = hcm["typed_config"]["route_config"]["virtual_hosts"][0]
    routes = [r for r in vhost["routes"]]
    inserted = [p["patch"]["value"] for p in _patches(config, mode, "HTTP_ROUTE")]
    per_vhost = len(mesh.mesh_routes(config, options))
    first_vhost = list(reversed(inserted[:per_vhost]))  # INSERT_FIRST, in reverse
    names = {p.name for p in config.providers}
    routed = [
        r
        for r in routes
        if r.get("route", {}).get("cluster") in names and r["match"].get("headers")
    ]
    chains = [
        r
        for r in routes
        if "cluster" in r.get("route", {}) and r["match"].get("headers") and r not in routed
    ]
    assert [
        {k: v for k, v in r.items() if k != "name"} for r in first_vhost[: len(chains)]
    ] == chains
    for r, p, own in zip(first_vhost[len(chains) :], config.providers, routed, strict=True):
        # The bootstrap's own route for the provider (its timeout included), renamed.
        assert own["route"]["cluster"] == p.name
        expected_route = {**own["route"], "cluster": mesh.PROVIDER_CLUSTER_PREFIX + p.name}
        if p.name in in_cluster:
            host = mesh.mesh_host(p, options)
            del expected_route["auto_host_rewrite"]
            expected_route["cluster"] = f"outbound|{host.port}||{host.service_fqdn}"
            expected_route["host_rewrite_literal"] = p.authority
        assert r["route"] == expected_route
        assert r["match"]["headers"] == [
            {"name": config.envoy.routing_header, "string_match": {"exact": p.name}}
        ]


def test_sidecar_patches_target_each_provider_virtual_host() -> None:
    vhosts = {
        p["match"]["routeConfiguration"]["vhost"]["name"]
        for p in _patches(CONFIG, "sidecar", "VIRTUAL_HOST")
    }
    assert vhosts == {"api.openai.com:80", "api.anthropic.com:80"}
    ports = {
        p["match"]["listener"]["portNumber"] for p in _patches(OTHER, "sidecar", "HTTP_FILTER")
    }
    assert ports == {80, 8000, 11434}


def test_generated_files_hold_no_local_paths() -> None:
    for path in [
        *(kube.ROOT / "istio").glob("*.yaml"),
        kube.ROOT / "charts/edge-agent/ci/sidecar.yaml",
    ]:
        text = path.read_text()
        assert str(kube.ROOT) not in text and "site-packages" not in text, path


def test_tls_origination_checks_the_providers_name() -> None:
    rules = [o for o in _objects(CONFIG, "sidecar") if o["kind"] == "DestinationRule"]
    for rule in rules:
        [setting] = rule["spec"]["trafficPolicy"]["portLevelSettings"]
        assert setting["tls"]["subjectAltNames"] == [rule["spec"]["host"]]


def test_in_cluster_services_are_addressed_by_their_full_name() -> None:
    config = parse_config(
        {
            "providers": [
                {
                    "name": "vllm",
                    "type": "openai_compatible",
                    "base_url": "http://vllm.ml.svc:8000",
                },
                {
                    "name": "vllm-full",
                    "type": "openai_compatible",
                    "base_url": "http://vllm.ml.svc.cluster.local:8000",
                },
                {"name": "tgi", "type": "openai_compatible", "base_url": "http://tgi:8080"},
            ],
            "models": [{"name": "m", "targets": ["vllm/m", "tgi/m"]}],
        }
    )
    options = mesh.MeshOptions(namespace="apps")
    objects = mesh.manifests(config, options)
    assert [o["kind"] for o in objects] == ["EnvoyFilter"]  # no ServiceEntry, no TLS origination
    patches = objects[0]["spec"]["configPatches"]
    vhosts = [
        p["match"]["routeConfiguration"]["vhost"]["name"]
        for p in patches
        if p["applyTo"] == "VIRTUAL_HOST"
    ]
    # One virtual host per Service, however it is spelt; a bare name is in the namespace.
    assert sorted(vhosts) == ["tgi.apps.svc.cluster.local:8080", "vllm.ml.svc.cluster.local:8000"]
    routes = {
        p["patch"]["value"]["name"]: p["patch"]["value"]
        for p in patches
        if p["applyTo"] == "HTTP_ROUTE"
    }
    assert (
        routes["llm-edge-agent.vllm"]["route"]["cluster"]
        == "outbound|8000||vllm.ml.svc.cluster.local"
    )
    assert routes["llm-edge-agent.tgi"]["route"]["host_rewrite_literal"] == "tgi:8080"
    added = {p["patch"]["value"]["name"] for p in patches if p["applyTo"] == "CLUSTER"}
    assert not any(name.startswith(mesh.PROVIDER_CLUSTER_PREFIX) for name in added)


def test_in_cluster_tls_providers_are_refused() -> None:
    config = parse_config(
        {
            "providers": [
                {"name": "tgi", "type": "openai_compatible", "base_url": "https://tgi.ml.svc:8443"}
            ],
            "models": [{"name": "m", "targets": ["tgi/m"]}],
        }
    )
    with pytest.raises(mesh.MeshConfigError, match="use http:// for in-cluster providers"):
        mesh.manifests(config, mesh.MeshOptions())


def test_gateway_hosts_scope_the_filter() -> None:
    options = mesh.MeshOptions(mode="gateway", gateway_hosts=("llm.example.com",))
    flt = mesh.envoy_filter(CONFIG, options)
    patches = flt["spec"]["configPatches"]
    [http_filter] = [p for p in patches if p["applyTo"] == "HTTP_FILTER"]
    assert http_filter["patch"]["value"]["disabled"] is True
    matches = {
        json.dumps(p["match"]["routeConfiguration"], sort_keys=True)
        for p in patches
        if p["applyTo"] in ("VIRTUAL_HOST", "HTTP_ROUTE")
    }
    assert matches == {
        json.dumps({"name": "http.8080", "vhost": {"name": "llm.example.com:80"}}, sort_keys=True)
    }
    assert kube.istio_errors(flt) == []


def test_helm_values_round_trip_to_the_same_config() -> None:
    values = mesh.helm_values(CONFIG, mesh.MeshOptions())
    config = dict(values["mesh"]["config"])
    config["listen"] = {
        "grpc": f"127.0.0.1:{values['mesh']['ports']['grpc']}",
        "admin": f"0.0.0.0:{values['mesh']['ports']['admin']}",
    }
    assert parse_config(yaml.safe_load(yaml.safe_dump(config))).model_dump() == CONFIG.model_dump()


def test_long_host_names_give_distinct_valid_object_names() -> None:
    # Hosts that differ only past the 63rd character of the object name.
    long = "a-very-long-internal-model-gateway-name-for-testing-purposes"
    config = parse_config(
        {
            "providers": [
                {
                    "name": n,
                    "type": "openai_compatible",
                    "base_url": f"https://{long}-{n}.example.com",
                }
                for n in ("one", "two")
            ],
            "models": [{"name": "m", "targets": ["one/m"]}],
        }
    )
    objects = mesh.manifests(config, mesh.MeshOptions())
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(names)) == len(names)
    for obj in objects:
        assert kube.istio_errors(obj) == [], obj["metadata"]["name"]
        assert len(obj["metadata"]["name"]) <= 63
