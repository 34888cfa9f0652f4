"""The per-pod injection template: merged into a sample pod as istiod would merge it,
the pod validates strictly and carries the agent with probes and its config."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from edge_agent.config import load_config
from edge_agent.envoy.injection import CONTAINER_NAME, ISTIO_PORTS, TEMPLATE_NAME, port_problems
from edge_agent.envoy.mesh import AGENT_LABEL, CONFIG_MOUNT
from tests.deploy import kube

CONFIG = load_config(kube.ROOT / "istio/config.yaml")

APP_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "chat-app",
        "namespace": "default",
        "labels": {"app": "chat-app"},
        "annotations": {"inject.istio.io/templates": f"sidecar,{TEMPLATE_NAME}"},
    },
    "spec": {
        "containers": [
            {
                "name": "app",
                "image": "example.com/chat-app:1.0",
                "env": [{"name": "OPENAI_BASE_URL", "value": "http://api.openai.com/v1"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    },
}


def _merge_named(base: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Strategic merge of lists keyed by name (containers, volumes), as istiod applies it.
    out = {item["name"]: item for item in base}
    for item in extra:
        out[item["name"]] = {**out.get(item["name"], {}), **item}
    return list(out.values())


def inject(pod: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    meta = template.get("metadata", {})
    for field in ("labels", "annotations"):
        if meta.get(field):
            pod["metadata"].setdefault(field, {}).update(meta[field])
    for field in ("containers", "volumes", "initContainers"):
        if template.get("spec", {}).get(field):
            pod["spec"][field] = _merge_named(pod["spec"].get(field, []), template["spec"][field])
    return pod


def shipped_template() -> dict[str, Any]:
    values = yaml.safe_load((kube.ROOT / "istio/istiod-values.yaml").read_text())
    text = values["sidecarInjectorWebhook"]["templates"][TEMPLATE_NAME]
    # istiod renders templates with Go's text/template: plain YAML passes unchanged.
    assert "{{" not in text, "the template would need istiod's template functions"
    return yaml.safe_load(text)


def test_injected_pod_validates_strictly() -> None:
    pod = inject(APP_POD, shipped_template())
    assert kube.core_errors(pod) == []
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", CONTAINER_NAME]
    assert pod["metadata"]["labels"][AGENT_LABEL] == "true"


def test_agent_container_has_probes_config_and_hardening() -> None:
    pod = inject(APP_POD, shipped_template())
    agent = next(c for c in pod["spec"]["containers"] if c["name"] == CONTAINER_NAME)
    admin_port = CONFIG.listen.addr("admin")[1]
    assert agent["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": admin_port,
        "scheme": "HTTP",
    }
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["args"] == ["serve", "--config", f"{CONFIG_MOUNT}/config.yaml"]
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts[CONFIG_MOUNT]]["configMap"]["name"] == "llm-edge-agent-config"
    assert "emptyDir" in volumes[mounts["/tmp"]]  # the root filesystem is read-only
    ctx = agent["securityContext"]
    assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"]
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    # The app's own container and volume are untouched.
    assert pod["spec"]["containers"][0] == APP_POD["spec"]["containers"][0]
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_a_broken_injection_is_caught() -> None:
    # The check itself must be able to fail: a probe port given as an object.
    template = shipped_template()
    template["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"n": 1}
    assert kube.core_errors(inject(APP_POD, template))


def test_ports_that_clash_with_the_istio_proxy_are_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load((kube.ROOT / "istio/config.yaml").read_text())
    raw["listen"] = {"grpc": "0.0.0.0:15020", "admin": "0.0.0.0:9090"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "injection-template", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "15020" in result.stderr and "127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert port_problems(CONFIG) == []  # the sample's ports are fine


def test_no_clash_with_what_the_istio_sidecar_template_adds() -> None:
    # Names and ports the standard sidecar template gives the pod.
    istio_volumes = {
        "workload-socket",
        "credential-socket",
        "workload-certs",
        "istio-envoy",
        "istio-data",
        "istio-podinfo",
        "istio-token",
        "istiod-ca-cert",
    }
    template = shipped_template()
    [agent] = template["spec"]["containers"]
    assert agent["name"] != "istio-proxy"
    assert not {v["name"] for v in template["spec"]["volumes"]} & istio_volumes
    assert not {p["containerPort"] for p in agent["ports"]} & ISTIO_PORTS
