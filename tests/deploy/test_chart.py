"""charts/edge-agent: lint, render, validate every object, and agree with the generator.

helm comes from the pinned PyPI wheel (tools/install_helm.py, run by make install)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config import parse_config
from edge_agent.envoy import mesh
from tests.deploy import kube

CHART = kube.ROOT / "charts/edge-agent"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
HELM = Path(sys.executable).parent / "helm"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make install` (tools/install_helm.py puts it there)")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)


def render(values: Path | None = None, *extra: str) -> list[dict[str, Any]]:
    args = ["template", "llm", str(CHART), "--namespace", "llm"]
    if values is not None:
        args += ["-f", str(values)]
    result = helm(*args, *extra)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def agent_config(objects: list[dict[str, Any]]) -> Any:
    [cm] = by_kind(objects, "ConfigMap")
    return parse_config(yaml.safe_load(cm["data"]["config.yaml"]))


def test_ci_values_exist_for_both_modes() -> None:
    modes = {yaml.safe_load(p.read_text()).get("mode", "gateway") for p in CI_VALUES}
    assert modes == {"gateway", "sidecar"}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_strict_with_defaults() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_every_rendered_object_validates(values: Path) -> None:
    objects = render(values)
    assert objects
    for obj in objects:
        assert kube.errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


def test_a_broken_service_monitor_is_caught() -> None:
    [monitor] = by_kind(render(CHART / "ci/gateway-full.yaml"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["prot"] = "http-admin"
    assert any("prot" in e for e in kube.errors(monitor))


class _StrictLoader(yaml.SafeLoader):
    """Refuses a mapping with a key twice (yaml.v3-based tools, e.g. kustomize, do)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        twice = {k for k in keys if keys.count(k) > 1}
        assert not twice, f"duplicate keys {twice} at line {node.start_mark.line + 1}"
        return super().construct_mapping(node, deep=deep)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_yaml_has_no_duplicate_keys(values: Path) -> None:
    result = helm("template", "llm", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stderr
    assert list(yaml.load_all(result.stdout, Loader=_StrictLoader))


def test_narrowing_the_selector_keeps_the_agent_label(tmp_path: Path) -> None:
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(yaml.safe_dump({"sidecar": {"workloadSelector": {"app": "chat"}}}))
    objects = render(CHART / "ci/sidecar.yaml", "-f", str(narrow))
    [flt] = by_kind(objects, "EnvoyFilter")
    assert flt["spec"]["workloadSelector"]["labels"] == {
        "llm-edge-agent.io/agent": "true",
        "app": "chat",
    }


def test_schema_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "tools/chart_schema.py", "--check"],
        cwd=kube.ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_runs_the_config_it_renders() -> None:
    objects = render(CHART / "ci/gateway-full.yaml")
    config = agent_config(objects)
    [deploy] = by_kind(objects, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:1] == ["run"]
    admin = config.listen.addr("admin")[1]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["port"] in (admin, "http-admin")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.listen.addr("envoy")[1]
    assert config.listen.envoy.startswith("0.0.0.0:")  # reachable through the Service
    assert config.listen.grpc.startswith("127.0.0.1:")  # the agent stays inside the pod
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] and ctx["runAsNonRoot"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", mesh.CONFIG_MOUNT} <= mounts
    kinds = {o["kind"] for o in objects}
    assert {
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
        "Service",
    } <= kinds
    assert not kinds & {"EnvoyFilter", "ServiceEntry", "DestinationRule"}


def test_sidecar_objects_agree_with_the_generator() -> None:
    objects = render(CHART / "ci/sidecar.yaml")
    config = agent_config(objects)
    assert not by_kind(objects, "Deployment")  # istiod injects the agent
    expected = mesh.manifests(config, mesh.MeshOptions(mode="sidecar", namespace="llm"))
    rendered = [o for o in objects if o["kind"] != "ConfigMap"]

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return (o["kind"], o["metadata"]["name"])

    assert sorted(map(key, rendered)) == sorted(map(key, expected))
    got = {key(o): o for o in rendered}
    for obj in expected:
        mine = got[key(obj)]
        assert mine["apiVersion"] == obj["apiVersion"]
        assert mine["metadata"]["namespace"] == "llm"
        assert mine["spec"] == obj["spec"], key(obj)


BAD_VALUES = [
    ({"mode": "foo"}, "mode"),
    ({"ports": {"http": "x"}}, "ports"),
    ({"replicas": 2}, "replicas"),
    ({"workers": 0}, "workers"),
    ({"config": {"listen": {"grpc": "127.0.0.1:1"}}}, "listen"),
    # Kubernetes objects passed through are checked too (the API server would drop these).
    ({"securityContext": {"readOnlyRootFileSystem": True}}, "readOnlyRootFileSystem"),
    (
        {"extraEnv": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "keey": "k"}}}]},
        "keey",
    ),
    ({"image": {"digest": "latest"}}, "digest"),
    (
        {
            "config": {
                "providers": [
                    {
                        "name": "openai",
                        "type": "openai",
                        "base_url": "https://api.openai.com",
                        "api_key_env": "OPENAI_API_KEY",
                        "modles": [],
                    }
                ]
            }
        },
        "modles",
    ),
]


@pytest.mark.parametrize(("values", "named"), BAD_VALUES, ids=[n for _, n in BAD_VALUES])
def test_bad_values_are_rejected_by_the_schema(
    values: dict[str, Any], named: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    for command in (["lint", "--strict"], ["template", "llm"]):
        result = helm(*command, str(CHART), "-f", str(path))
        assert result.returncode != 0, f"{command} accepted {values}"
        out = result.stdout + result.stderr
        assert "values don't meet the specifications of the schema" in out, out
        assert named in out, out


def test_sidecar_mode_runs_the_config_its_objects_came_from(tmp_path: Path) -> None:
    # A `config` beside the generated values cannot change what the injected agents run.
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"config": {"log_level": "debug"}}))
    objects = render(CHART / "ci/sidecar.yaml", "-f", str(extra))
    generated = yaml.safe_load((CHART / "ci/sidecar.yaml").read_text())["mesh"]
    config = agent_config(objects)
    assert config.log_level == generated["config"].get("log_level", "info")
    assert config.listen.addr("grpc")[1] == generated["ports"]["grpc"]
    bad = tmp_path / "keys.yaml"
    bad.write_text(yaml.safe_dump({"providerKeys": {"existingSecret": "x"}}))
    result = helm(
        "template", "llm", str(CHART), "-f", str(CHART / "ci/sidecar.yaml"), "-f", str(bad)
    )
    assert result.returncode != 0 and "injection template" in result.stderr


def test_the_gateway_requires_callers_to_authenticate_by_default() -> None:
    assert agent_config(render()).auth.required is True


def test_sidecar_mode_without_generated_values_says_how_to_make_them() -> None:
    result = helm("template", "llm", str(CHART), "--set", "mode=sidecar")
    assert result.returncode != 0
    assert "edge-agent mesh --config" in result.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_notes_render(values: Path, tmp_path: Path) -> None:
    # `helm install` needs a cluster to show NOTES.txt; render it through a wrapper.
    chart = tmp_path / "edge-agent"
    shutil.copytree(CHART, chart)
    (chart / "templates/NOTES.txt").rename(chart / "notes.txt")
    (chart / "templates/notes.yaml").write_text(
        'notes: |\n{{ tpl (.Files.Get "notes.txt") . | indent 2 }}\n'
    )
    result = helm(
        "template", "llm", str(chart), "-f", str(values), "--show-only", "templates/notes.yaml"
    )
    assert result.returncode == 0, result.stderr
    notes = yaml.safe_load(result.stdout)["notes"]
    if yaml.safe_load(values.read_text()).get("mode") == "sidecar":
        assert "inject.istio.io/templates: sidecar,llm-edge-agent" in notes
        assert "edge-agent injection-template" in notes
    else:
        assert "port-forward" in notes and "/v1/chat/completions" in notes
        config = yaml.safe_load(values.read_text()).get("config", {})
        if config.get("auth", {"required": True}).get("required", False):
            # The default: callers need a key, and the notes say how to make the first.
            assert "edge-agent keys create --tenant default" in notes
            assert "edge-agent keys hash" in notes and "Bearer $KEY" in notes
        else:
            assert "WARNING: auth.required is false" in notes
    if values.stem == "gateway-full":
        # Every secret the config names goes into the Secret the notes show how to make.
        for var in ("OPENAI_API_KEY", "REDIS_PASSWORD", "EDGE_AGENT_ADMIN_TOKEN", "CI_JWT_SECRET"):
            assert f"--from-literal={var}=" in notes, var
