"""The EnvoyFilters spliced into an Istio-like proxy config (tests/mesh_support.py):
accepted by `envoy --mode validate`, every cluster reference resolved, and — for the
sidecar — run: real Envoy + the agent + fake providers carry requests, routed by the
agent to the provider it chose, and the repeat is served from the cache."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config import load_config, parse_config
from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from edge_agent.envoy import mesh
from edge_agent.envoy.process import envoy_binary
from tests import mesh_support
from tests.deploy import kube
from tests.helpers import free_port, http, post_json, started_fakes

SAMPLE = load_config(kube.ROOT / "istio/config.yaml")
KEYS = {"KEY_A": "sk-provider-a", "KEY_B": "sk-provider-b"}


def _objects(config: Any, mode: mesh.MeshMode) -> tuple[list[Any], list[Any], dict[str, Any]]:
    objs = mesh.manifests(config, mesh.MeshOptions(mode=mode))
    entries = [o for o in objs if o["kind"] == "ServiceEntry"]
    rules = [o for o in objs if o["kind"] == "DestinationRule"]
    [flt] = [o for o in objs if o["kind"] == "EnvoyFilter"]
    return entries, rules, flt


def _proxy(config: Any, mode: mesh.MeshMode) -> dict[str, Any]:
    entries, rules, flt = _objects(config, mode)
    if mode == "sidecar":
        ports = {p["number"] for e in entries for p in e["spec"]["ports"]}
        base = mesh_support.istio_like_sidecar(
            entries, rules, listen_ports={p: free_port() for p in ports}, admin_port=free_port()
        )
        return mesh_support.apply_envoy_filter(
            base, flt, context="SIDECAR_OUTBOUND", require_match=True
        )
    # An ingress gateway serving the provider hosts (Gateway server port 80 -> 8080).
    base = mesh_support.istio_like_sidecar(
        entries or _objects(config, "sidecar")[0],
        [],
        listen_ports={8080: free_port()},
        admin_port=free_port(),
        context="GATEWAY",
        server_ports={8080: 80},
    )
    return mesh_support.apply_envoy_filter(base, flt, context="GATEWAY", require_match=True)


@pytest.mark.parametrize("mode", ["sidecar", "gateway"])
def test_spliced_config_validates_and_references_resolve(
    mode: mesh.MeshMode, tmp_path: Path
) -> None:
    proxy = _proxy(SAMPLE, mode)
    missing = mesh_support.clusters_referenced(proxy) - mesh_support.clusters_defined(proxy)
    assert not missing, f"referenced but not defined: {sorted(missing)}"
    result = mesh_support.envoy_validate(proxy, tmp_path, envoy_binary())
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_patch_fails_validation(tmp_path: Path) -> None:
    # The checks must be able to fail: the agent's cluster patch dropped.
    entries, rules, flt = _objects(SAMPLE, "sidecar")
    flt["spec"]["configPatches"] = [
        p
        for p in flt["spec"]["configPatches"]
        if p["patch"]["value"].get("name") != "edge_agent_ext_proc"
    ]
    ports = {p["number"] for e in entries for p in e["spec"]["ports"]}
    base = mesh_support.istio_like_sidecar(
        entries, rules, listen_ports={p: free_port() for p in ports}, admin_port=free_port()
    )
    proxy = mesh_support.apply_envoy_filter(base, flt, context="SIDECAR_OUTBOUND")
    assert "edge_agent_ext_proc" in (
        mesh_support.clusters_referenced(proxy) - mesh_support.clusters_defined(proxy)
    )
    # `envoy --mode validate` accepts this (gRPC clusters are looked up when first used):
    # the reference check is what catches it.
    assert mesh_support.envoy_validate(proxy, tmp_path, envoy_binary()).returncode == 0


# -- a real run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeOpenAI]]:
    threads = {
        "a": FakeOpenAIThread(name="a", api_key=KEYS["KEY_A"]),
        "b": FakeOpenAIThread(name="b", api_key=KEYS["KEY_B"]),
    }
    with started_fakes(threads) as started:
        yield started


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError):
            if http("GET", url, timeout=1).status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout_s} s:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def sidecar(
    fakes: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """An app pod's proxy: the agent injected (`edge-agent serve`) and the sidecar
    EnvoyFilter spliced into an Istio-like sidecar config; both providers reachable as
    ServiceEntries (address-only upstreams here: the fakes listen on 127.0.0.1)."""
    tmp = tmp_path_factory.mktemp("mesh")
    raw = {
        "listen": {"grpc": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"},
        "providers": [
            {
                "name": name,
                "type": "openai",
                "base_url": fakes[name].url,
                "api_key_env": f"KEY_{name.upper()}",
                "models": [{"name": f"{name}-chat"}],
            }
            for name in ("a", "b")
        ],
        "models": [
            {"name": "chat-a", "targets": ["a/a-chat"]},
            {"name": "chat-b", "targets": ["b/b-chat"]},
        ],
        "cache": {"semantic": {"enabled": False}},
        # Appended to the proxy's access logs, for the agent's requests only.
        "envoy": {"access_log": {"enabled": True, "path": str(tmp / "access.log")}},
    }
    config = parse_config(raw)
    entries, rules, flt = _objects(config, "sidecar")
    # An unrelated service of the mesh on the same port as provider a (another address):
    # its traffic shares the listener but must never reach the agent.
    port_a = int(fakes["a"].url.rsplit(":", 1)[1])
    entries.append(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": "other", "namespace": "default"},
            "spec": {
                "hosts": ["other.internal"],
                "addresses": ["127.0.0.2"],
                "ports": [{"number": port_a, "name": "http", "protocol": "HTTP"}],
                "resolution": "STATIC",
                "endpoints": [{"address": "127.0.0.2"}],
            },
        }
    )
    listen = {p["number"]: free_port() for e in entries for p in e["spec"]["ports"]}
    proxy = mesh_support.apply_envoy_filter(
        mesh_support.istio_like_sidecar(
            entries, rules, listen_ports=listen, admin_port=free_port()
        ),
        flt,
        context="SIDECAR_OUTBOUND",
        require_match=True,
    )
    (tmp / "config.yaml").write_text(yaml.safe_dump(raw))
    (tmp / "envoy.json").write_text(json.dumps(proxy))
    env = {**os.environ, **KEYS}
    agent_cmd = [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "serve",
        "--config",
        str(tmp / "config.yaml"),
    ]
    envoy_cmd = [
        envoy_binary(),
        "-c",
        str(tmp / "envoy.json"),
        "-l",
        "warning",
        "--base-id",
        str(free_port()),
    ]
    with (
        _process(agent_cmd, tmp / "agent.log", env) as agent,
        _process(envoy_cmd, tmp / "envoy.log", env) as envoy,
    ):
        _wait(f"http://{raw['listen']['admin']}/readyz", agent, tmp / "agent.log")
        admin = proxy["admin"]["address"]["socket_address"]
        _wait(f"http://127.0.0.1:{admin['port_value']}/ready", envoy, tmp / "envoy.log")
        with started_fakes(
            {"other": FakeOpenAIThread(name="other", host="127.0.0.2", port=port_a)}
        ) as other:
            yield {
                "config": config,
                "listen": listen,
                "entries": entries,
                "fakes": fakes,
                "other": other["other"],
                "port_a": port_a,
                "tmp": tmp,
                "env": env,
                "envoy_admin": f"http://127.0.0.1:{admin['port_value']}",
            }


def _app_request(
    sidecar: dict[str, Any],
    provider: str,
    model: str,
    text: str,
    host: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """What an app in the pod sends to provider `provider`'s host (plain HTTP; iptables
    would hand it to the listener for that port)."""
    fake: FakeOpenAI = sidecar["fakes"][provider]
    port = int(fake.url.rsplit(":", 1)[1])
    if host is None:
        [entry] = [
            e
            for e in sidecar["entries"]
            if e["spec"]["ports"][0]["number"] == port and e["metadata"]["name"] != "other"
        ]
        host = entry["spec"]["hosts"][0]
    body = {"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0}
    return post_json(
        f"http://127.0.0.1:{sidecar['listen'][port]}/v1/chat/completions",
        body,
        # The app's own key, which must never reach a provider.
        {"host": host, "authorization": "Bearer sk-app-key", **(headers or {})},
    )


def _ext_proc_streams(sidecar: dict[str, Any]) -> int:
    stats = http("GET", f"{sidecar['envoy_admin']}/stats?filter=ext_proc.streams_started").body
    return sum(int(line.rsplit(b":", 1)[1]) for line in stats.splitlines() if line.strip())


def test_sidecar_routes_through_the_agent_and_caches(sidecar: dict[str, Any]) -> None:
    fakes = sidecar["fakes"]
    for fake in fakes.values():
        fake.reset()
    text = f"mesh-{os.getpid()}-{time.monotonic_ns()}"
    # Sent to provider a's host, asking for a model the agent routes to provider b.
    first = _app_request(sidecar, "a", "chat-b", text)
    assert first.status == 200, first.body
    assert first.headers["x-edge-agent-cache"] == "miss"
    assert first.headers["x-edge-agent-provider"] == "b"
    assert not fakes["a"].requests
    [seen] = fakes["b"].requests
    assert seen.headers["authorization"] == f"Bearer {KEYS['KEY_B']}"
    assert seen.json()["model"] == "b-chat"
    assert sidecar["config"].envoy.routing_header not in seen.headers

    again = _app_request(sidecar, "a", "chat-b", text)
    assert again.status == 200
    assert again.headers["x-edge-agent-cache"] == "hit"
    assert again.json()["choices"] == first.json()["choices"]
    assert len(fakes["b"].requests) == 1  # the provider saw no new request


def test_sidecar_agent_refuses_bad_input_clearly(sidecar: dict[str, Any]) -> None:
    reply = _app_request(sidecar, "b", "no-such-model", "hello")
    assert reply.status == 404
    assert "no-such-model" in reply.json()["error"]["message"]


def test_other_traffic_on_the_port_bypasses_the_agent(sidecar: dict[str, Any]) -> None:
    other: FakeOpenAI = sidecar["other"]
    other.reset()
    before = _ext_proc_streams(sidecar)
    reply = _app_request(sidecar, "a", "anything", "not for the agent", host="other.internal")
    assert reply.status == 200, reply.body
    assert "x-edge-agent-cache" not in reply.headers
    [seen] = other.requests
    assert seen.headers["authorization"] == "Bearer sk-app-key"  # untouched
    assert _ext_proc_streams(sidecar) == before
    # The agent does see provider traffic on that same listener.
    assert _app_request(sidecar, "a", "chat-a", f"x-{time.monotonic_ns()}").status == 200
    assert _ext_proc_streams(sidecar) > before


def test_the_access_log_has_the_agents_requests_only(sidecar: dict[str, Any]) -> None:
    other = _app_request(sidecar, "a", "anything", "not for the agent", host="other.internal")
    mine = _app_request(sidecar, "a", "chat-a", f"logged-{time.monotonic_ns()}")
    assert other.status == 200 and mine.status == 200
    log = sidecar["tmp"] / "access.log"
    deadline = time.monotonic() + 10  # Envoy flushes access logs about once a second
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if log.exists():
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            if any(line["model"] == "chat-a" and line["cache"] == "miss" for line in lines):
                break
        time.sleep(0.2)
    assert any(line["model"] == "chat-a" and line["provider"] == "a" for line in lines), lines
    # The other service's request shares the listener but is not the agent's: not logged.
    assert all(line["cache"] is not None for line in lines)


def test_a_client_cannot_pick_the_cluster(sidecar: dict[str, Any]) -> None:
    fakes = sidecar["fakes"]
    for fake in fakes.values():
        fake.reset()
    header = sidecar["config"].envoy.routing_header
    reply = _app_request(
        sidecar, "a", "chat-a", f"spoof-{time.monotonic_ns()}", headers={header: "b"}
    )
    assert reply.status == 200, reply.body
    assert reply.headers["x-edge-agent-provider"] == "a"
    assert len(fakes["a"].requests) == 1 and not fakes["b"].requests


@pytest.fixture(scope="module")
def gateway(sidecar: dict[str, Any]) -> Iterator[str]:
    """An Istio ingress gateway with the same agent beside it, the filter scoped to one
    host (--gateway-host); another host on the same listener stays the gateway's."""
    config, port_a = sidecar["config"], sidecar["port_a"]
    options = mesh.MeshOptions(mode="gateway", gateway_hosts=("llm.example.test",))
    [flt] = mesh.manifests(config, options)

    def host(name: str, address: str) -> dict[str, Any]:
        # What a Gateway + VirtualService would give the gateway: a host on server port 80.
        return {
            "metadata": {"name": name},
            "spec": {
                "hosts": [name],
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": port_a}],
                "resolution": "STATIC",
                "endpoints": [{"address": address}],
            },
        }

    listen = free_port()
    proxy = mesh_support.apply_envoy_filter(
        mesh_support.istio_like_sidecar(
            [host("llm.example.test", "127.0.0.1"), host("other.example.test", "127.0.0.2")],
            [],
            listen_ports={8080: listen},
            admin_port=free_port(),
            context="GATEWAY",
            server_ports={8080: 80},
        ),
        flt,
        context="GATEWAY",
        require_match=True,
    )
    tmp: Path = sidecar["tmp"]
    (tmp / "gateway.json").write_text(json.dumps(proxy))
    cmd = [envoy_binary(), "-c", str(tmp / "gateway.json"), "-l", "warning"]
    with _process([*cmd, "--base-id", str(free_port())], tmp / "gateway.log", sidecar["env"]) as gw:
        admin = proxy["admin"]["address"]["socket_address"]["port_value"]
        _wait(f"http://127.0.0.1:{admin}/ready", gw, tmp / "gateway.log")
        yield f"http://127.0.0.1:{listen}"


def test_ingress_gateway_routes_its_llm_host_through_the_agent(
    sidecar: dict[str, Any], gateway: str
) -> None:
    fakes, other = sidecar["fakes"], sidecar["other"]
    for fake in (*fakes.values(), other):
        fake.reset()
    text = f"gw-{time.monotonic_ns()}"
    body = {"model": "chat-b", "messages": [{"role": "user", "content": text}], "temperature": 0}
    url = f"{gateway}/v1/chat/completions"
    first = post_json(url, body, {"host": "llm.example.test"})
    assert first.status == 200, first.body
    assert first.headers["x-edge-agent-provider"] == "b"
    assert fakes["b"].requests[0].headers["authorization"] == f"Bearer {KEYS['KEY_B']}"
    again = post_json(url, body, {"host": "llm.example.test"})
    assert again.headers["x-edge-agent-cache"] == "hit"
    assert len(fakes["b"].requests) == 1
    # The gateway's other host: straight to its backend, the agent not involved.
    passed = post_json(url, body, {"host": "other.example.test", "authorization": "Bearer app"})
    assert passed.status == 200, passed.body
    assert "x-edge-agent-cache" not in passed.headers
    [seen] = other.requests
    assert seen.headers["authorization"] == "Bearer app"
