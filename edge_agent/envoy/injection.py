"""The agent as an Istio custom injection template (per-pod sidecar).

A cluster admin registers the template with istiod (`sidecarInjectorWebhook.templates`);
pods opt in with `inject.istio.io/templates: sidecar,llm-edge-agent`. istiod merges the
template into the pod: the agent container, its config volume, and the label that the
sidecar EnvoyFilter selects (mesh.AGENT_LABEL), so only pods with an agent are patched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from edge_agent.config import CONFIG_ENV, Config
from edge_agent.envoy.mesh import AGENT_LABEL, CONFIG_MOUNT
from edge_agent.identity.settings import WORKLOAD_ENV

TEMPLATE_NAME = "llm-edge-agent"
CONTAINER_NAME = "llm-edge-agent"
CONFIG_FILE = "config.yaml"
RUN_AS = 10001  # the image's user (Dockerfile)


@dataclass(frozen=True)
class InjectionOptions:
    image: str = "ghcr.io/llm-edge-agent/llm-edge-agent:0.1.0"
    config_map: str = "llm-edge-agent-config"
    # Provider keys as environment variables (api_key_env); optional so a pod starts
    # without it and the agent names the missing variable in its 503s.
    secret: str = "llm-edge-agent-keys"
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    cpu_limit: str = "2"
    memory_limit: str = "1Gi"


def agent_container(config: Config, options: InjectionOptions, args: list[str]) -> dict[str, Any]:
    """The agent's container; shared by the injection template and checked against the
    chart's rendering of the same values in tests."""
    _, admin_port = config.listen.addr("admin")
    probe = {"port": admin_port, "scheme": "HTTP"}
    return {
        "name": CONTAINER_NAME,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": [
            {"name": CONFIG_ENV, "value": f"{CONFIG_MOUNT}/{CONFIG_FILE}"},
            # The pod's own mesh identity: in sidecar mode the caller is the app beside
            # the agent (auth.mesh, docs/security.md). Set by Kubernetes, not the app.
            *(
                {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
                for name, path in WORKLOAD_ENV.items()
            ),
        ],
        "envFrom": [{"secretRef": {"name": options.secret, "optional": True}}],
        # The ext_proc port is not listed: the agent serves it on 127.0.0.1 only.
        "ports": [{"name": "http-admin", "containerPort": admin_port, "protocol": "TCP"}],
        # /readyz turns true once the gRPC server serves (and the shared cache is warm).
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **probe},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        # Loading the embedder takes seconds on a cold node.
        "startupProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
            "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "llm-edge-agent-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "llm-edge-agent-tmp", "mountPath": "/tmp"},
        ],
    }


# The Istio proxy's own ports in every injected pod (Envoy admin, outbound/inbound
# capture, HBONE, status, health, DNS, Prometheus): the agent must not take one.
ISTIO_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090})


def port_problems(config: Config) -> list[str]:
    """Why the config's ports cannot work beside an Istio proxy, if they cannot."""
    problems = []
    ports = {"grpc": config.listen.addr("grpc")[1], "admin": config.listen.addr("admin")[1]}
    for which, port in ports.items():
        if port in ISTIO_PORTS:
            problems.append(
                f"listen.{which} uses port {port}, which the Istio proxy in the same pod "
                "uses: pick a port outside 15000-15099"
            )
    grpc_host, _ = config.listen.addr("grpc")
    if grpc_host not in ("127.0.0.1", "::1", "localhost"):
        problems.append(
            f"listen.grpc is on {grpc_host}: in a pod the agent's ext_proc port belongs on "
            "127.0.0.1 (the Istio proxy beside it is its only client)"
        )
    return problems


def injection_template(config: Config, options: InjectionOptions) -> dict[str, Any]:
    """The pod fragment istiod merges into opted-in pods (ValueError: the config's ports
    cannot work beside the Istio proxy)."""
    problems = port_problems(config)
    if problems:
        raise ValueError("; ".join(problems))
    return {
        "metadata": {"labels": {AGENT_LABEL: "true"}},
        "spec": {
            "containers": [
                agent_container(
                    config, options, ["serve", "--config", f"{CONFIG_MOUNT}/{CONFIG_FILE}"]
                )
            ],
            "volumes": [
                {"name": "llm-edge-agent-config", "configMap": {"name": options.config_map}},
                {"name": "llm-edge-agent-tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            ],
        },
    }


def istiod_values(config: Config, options: InjectionOptions) -> dict[str, Any]:
    """The istiod Helm values that register the template (istiod renders templates as Go
    templates; this one holds no template actions, so it is used as written)."""
    text = yaml.safe_dump(injection_template(config, options), sort_keys=False)
    return {"sidecarInjectorWebhook": {"templates": {TEMPLATE_NAME: text}}}
