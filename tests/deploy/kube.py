"""Offline checks of Kubernetes and Istio objects (no cluster here).

Core kinds go through kubernetes-validate in strict mode (unknown fields are errors).
Istio kinds go through the CustomResourceDefinitions of the Istio project, found at
../shared/istio/crd-all.gen.yaml (or $EDGE_AGENT_ISTIO_CRDS): the OpenAPI schema as the
API server applies it (unknown fields rejected, as `kubectl apply --validate=strict`
would) and the CEL rules of `x-kubernetes-validations`, evaluated with cel-python.
The prometheus-operator's ServiceMonitor goes through the schema of its generated models
(PyPI cloudcoil-models-prometheus-operator), unknown fields rejected too.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.31"
_CRD_PATHS = (
    ROOT.parent / "shared/istio/crd-all.gen.yaml",
    Path("/work/shared/istio/crd-all.gen.yaml"),
)
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def crd_file() -> Path | None:
    env = os.environ.get("EDGE_AGENT_ISTIO_CRDS")
    candidates = (Path(env),) if env else _CRD_PATHS
    return next((p for p in candidates if p.is_file()), None)


@functools.cache
def istio_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    path = crd_file()
    if path is None:
        pytest.skip(
            "the Istio CRD schemas are not here: put crd-all.gen.yaml from istio/istio "
            "(manifests/charts/base/files/) at ../shared/istio/ or point "
            "EDGE_AGENT_ISTIO_CRDS at it to validate Istio objects"
        )
    out = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
        for version in doc["spec"]["versions"]:
            out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


def _closed(schema: Any) -> Any:
    """The schema with unknown fields rejected where the API server would prune them."""
    if isinstance(schema, dict):
        schema = {k: _closed(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


_CEL = celpy.Environment()


@functools.cache
def _program(rule: str) -> Any:
    return _CEL.program(_CEL.compile(rule))


def _cel_errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            errors.append(f"{path}: {rule.get('message') or rule['rule']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, item in value.items():
            sub = props.get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                errors += _cel_errors(sub, item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def istio_errors(obj: dict[str, Any]) -> list[str]:
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = istio_schemas().get(key)
    if schema is None:
        return [f"no CRD for {key[0]} {key[1]}"]
    schema = copy.deepcopy(schema)
    # apiVersion/kind/metadata are checked by the API server itself, not the CRD.
    props = schema.setdefault("properties", {})
    props["metadata"] = {"type": "object"}
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    validator = jsonschema.Draft7Validator(_closed(schema))
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    errors += _cel_errors(schema, obj, "")
    name = obj.get("metadata", {}).get("name", "")
    if not (_DNS1123.match(name) and len(name) <= 253):
        errors.append(f"metadata.name {name!r} is not a DNS-1123 name")
    return errors


def core_errors(obj: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return [f"{obj.get('kind')} {path}: {exc.message}"]
    return []


ISTIO_GROUPS = ("networking.istio.io/", "security.istio.io/", "telemetry.istio.io/")


@functools.cache
def _service_monitor_validator() -> jsonschema.Draft202012Validator:
    from cloudcoil.models.prometheus_operator import v1

    schema = v1.ServiceMonitor.model_json_schema(by_alias=True)
    return jsonschema.Draft202012Validator(_closed(schema))


def service_monitor_errors(obj: dict[str, Any]) -> list[str]:
    return [
        f"ServiceMonitor {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _service_monitor_validator().iter_errors(obj)
    ]


def errors(obj: dict[str, Any]) -> list[str]:
    if obj.get("apiVersion", "").startswith(ISTIO_GROUPS):
        return istio_errors(obj)
    if (obj.get("apiVersion"), obj.get("kind")) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        return service_monitor_errors(obj)
    return core_errors(obj)
