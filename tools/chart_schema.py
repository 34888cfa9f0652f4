"""Write (or, with --check, verify) the generated parts of the chart's values.schema.json.

charts/edge-agent/values.schema.json is written by hand except:
- the agent config (`config`, `mesh.config`): the config model (edge_agent.config.Config)
  as JSON Schema, minus `listen` (the chart writes it from the ports, so a `listen` key is
  an error), as `$defs.AgentConfig`, with pydantic's definitions beside it;
- the Kubernetes types the chart passes through (security contexts, affinity,
  tolerations, env, resources, network-policy peers): the strict schemas bundled with
  kubernetes-validate, as `$defs.k8s.*`, so a misspelt field is refused by helm instead
  of being dropped by the API server.
The chart's own definitions are named `chart.*` and kept; the rest is replaced.

    .venv/bin/python tools/chart_schema.py          # rewrite the file
    .venv/bin/python tools/chart_schema.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from edge_agent.config import Config

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "charts/edge-agent/values.schema.json"
CHART_DEFS = "chart."  # prefix of the definitions written by hand
REF_PREFIX = "#/$defs/"
K8S_DEFS = "k8s."
K8S_VERSION = "1.31.0"  # within the chart's kubeVersion range; fields of later ones refused
# Where the chart passes Kubernetes objects through: property path -> definition.
K8S_TYPES: dict[tuple[str, ...], str] = {
    ("podSecurityContext",): "io.k8s.api.core.v1.PodSecurityContext",
    ("securityContext",): "io.k8s.api.core.v1.SecurityContext",
    ("affinity",): "io.k8s.api.core.v1.Affinity",
    ("tolerations", "items"): "io.k8s.api.core.v1.Toleration",
    ("extraEnv", "items"): "io.k8s.api.core.v1.EnvVar",
    ("resources",): "io.k8s.api.core.v1.ResourceRequirements",
    ("imagePullSecrets", "items"): "io.k8s.api.core.v1.LocalObjectReference",
    ("networkPolicy", "ingressFrom", "items"): "io.k8s.api.networking.v1.NetworkPolicyPeer",
    ("networkPolicy", "metricsFrom", "items"): "io.k8s.api.networking.v1.NetworkPolicyPeer",
}


def _refs(node: Any) -> set[str]:
    """Definition names referenced anywhere under `node`."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX) :])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _reachable(roots: set[str], defs: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in defs:
            raise SystemExit(f"chart_schema: unresolved reference {REF_PREFIX}{name}")
        seen.add(name)
        todo.extend(_refs(defs[name]))
    return seen


def config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `config` property's schema, the definitions it references)."""
    model = Config.model_json_schema()
    defs = model.pop("$defs", {})
    clashes = [name for name in defs if name.startswith(CHART_DEFS)]
    if clashes:
        raise SystemExit(f"chart_schema: pydantic definitions clash with the chart's: {clashes}")
    model["properties"].pop("listen")
    if "listen" in model.get("required", []):
        model["required"].remove("listen")
    if model.get("additionalProperties") is not False:
        raise SystemExit("chart_schema: Config no longer forbids unknown keys")
    used = _reachable(_refs(model), defs)
    # In the model's own order: stable output for a stable model.
    return model, {name: body for name, body in defs.items() if name in used}


AGENT_CONFIG = "AgentConfig"


def k8s_definitions() -> dict[str, Any]:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    data = json.loads((base / f"v{K8S_VERSION}-local-strict/_definitions.json").read_text())
    return data["$defs"]


def _k8s_refs(node: Any) -> Any:
    """The bundled schemas' references ('/api/_definitions.json#/$defs/X'), made local."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = REF_PREFIX + K8S_DEFS + value.rsplit("/", 1)[1]
            else:
                out[key] = _k8s_refs(value)
        return out
    if isinstance(node, list):
        return [_k8s_refs(v) for v in node]
    return node


def _node(schema: dict[str, Any], path: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """(the parent object, the key) of a property path (`items` steps into arrays)."""
    node = schema
    for step in path[:-1]:
        node = node[step] if step == "items" else node["properties"][step]
    return (node, path[-1]) if path[-1] == "items" else (node["properties"], path[-1])


def add_k8s_types(schema: dict[str, Any]) -> dict[str, Any]:
    every = k8s_definitions()
    wanted = set(K8S_TYPES.values())
    todo = list(wanted)
    while todo:
        for ref in _refs(_k8s_refs(every[todo.pop()])):
            name = ref.removeprefix(K8S_DEFS)
            if name not in wanted:
                wanted.add(name)
                todo.append(name)
    for path, name in K8S_TYPES.items():
        parent, key = _node(schema, path)
        old = parent.get(key, {})
        parent[key] = {
            **({"description": old["description"]} if "description" in old else {}),
            "$ref": REF_PREFIX + K8S_DEFS + name,
        }
    return {K8S_DEFS + name: _k8s_refs(every[name]) for name in sorted(wanted)}


def render(current: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(current)
    model, defs = config_schema()
    if AGENT_CONFIG in defs:
        raise SystemExit(f"chart_schema: pydantic now has a definition named {AGENT_CONFIG}")
    # `config` (gateway mode) and `mesh.config` (sidecar mode) are both agent configs.
    for holder in (schema["properties"], schema["properties"]["mesh"]["properties"]):
        old = holder["config"]
        holder["config"] = {
            **({"description": old["description"]} if "description" in old else {}),
            "$ref": f"{REF_PREFIX}{AGENT_CONFIG}",
        }
    chart_defs = {k: v for k, v in schema.get("$defs", {}).items() if k.startswith(CHART_DEFS)}
    agent = {k: v for k, v in model.items() if k != "description"}
    k8s = add_k8s_types(schema)
    schema["$defs"] = {**chart_defs, AGENT_CONFIG: agent, **defs, **k8s}
    # Hand-written definitions that the generated ones replaced.
    used = _reachable(_refs(schema["properties"]), schema["$defs"])
    schema["$defs"] = {k: v for k, v in schema["$defs"].items() if k in used}
    dangling = _refs(schema) - set(schema["$defs"])
    if dangling:
        raise SystemExit(f"chart_schema: unresolved references: {sorted(dangling)}")
    return schema


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = SCHEMA.read_text(encoding="utf-8")
    wanted = dump(render(json.loads(text)))
    if text == wanted:
        return 0
    rel = SCHEMA.relative_to(ROOT)
    if args.check:
        diff = difflib.unified_diff(
            text.splitlines(), wanted.splitlines(), str(rel), "generated", lineterm=""
        )
        print(
            f"{rel} is out of date with edge_agent.config.Config:\n"
            + "\n".join(list(diff)[:60])
            + "\n\nRun `make manifests` and commit the result.",
            file=sys.stderr,
        )
        return 1
    SCHEMA.write_text(wanted, encoding="utf-8")
    print(f"wrote {rel}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
