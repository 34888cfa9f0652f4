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
        "env": [{"name": CONFIG_ENV, "value": f"{CONFIG_MOUNT}/{CONFIG_FILE}"}],
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


def injection_template(config: Config, options: InjectionOptions) -> dict[str, Any]:
    """The pod fragment istiod merges into opted-in pods."""
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
