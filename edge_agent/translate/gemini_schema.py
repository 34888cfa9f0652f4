"""OpenAI tool and response JSON Schemas → Gemini's Schema (a subset of OpenAPI 3.0):
what it cannot express is refused naming the path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_agent.api.errors import ApiError
from edge_agent.translate.common import untranslatable


def _refuse(field: str, why: str = "") -> ApiError:
    return untranslatable(field, "OpenAI", "Gemini", why)


# Gemini's Schema: a subset of OpenAPI 3.0 (https://ai.google.dev/api/caching#Schema).
_SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)


_SCHEMA_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})


_FORMATS = {
    "string": {"enum", "date-time"},
    "number": {"float", "double"},
    "integer": {"int32", "int64"},
}


def _schema(node: Any, path: str, defs: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """A JSON schema in Gemini's Schema subset, or a 400 naming the first construct it lacks."""
    if not isinstance(node, dict):
        raise _refuse(path, "expected a schema object")
    if "$ref" in node:
        ref = node["$ref"]
        name = ref.removeprefix("#/$defs/").removeprefix("#/definitions/")
        if not isinstance(ref, str) or name == ref or name not in defs:
            raise _refuse(f"{path}.$ref", "only local references into $defs are inlined")
        if name in seen:
            raise _refuse(f"{path}.$ref", "Gemini schemas cannot be recursive")
        # Siblings of $ref (a description, say) refine the referenced schema.
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _schema(merged, path, defs, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        where = f"{path}.{key}"
        if key in ("$defs", "definitions", "$schema", "strict"):
            continue  # consumed by $ref, or annotations with no effect on the output
        if key == "additionalProperties":
            if value is not False:
                raise _refuse(where, "Gemini objects have only their declared properties")
            continue  # false is what Gemini does anyway
        if key not in _SCHEMA_KEYS:
            raise _refuse(where, "not in Gemini's schema subset")
        if key == "type":
            types = value if isinstance(value, list) else [value]
            if not types or any(t not in _SCHEMA_TYPES for t in types):
                raise _refuse(where, "expected a JSON schema type")
            real = [t for t in types if t != "null"]
            if len(real) > 1:
                raise _refuse(where, "use anyOf for values of several types")
            if len(real) < len(types):
                out["nullable"] = True
            out["type"] = real[0] if real else "null"
        elif key == "properties":
            if not isinstance(value, dict):
                raise _refuse(where, "expected an object")
            out[key] = {k: _schema(v, f"{where}.{k}", defs, seen) for k, v in value.items()}
        elif key == "items":
            out[key] = _schema(value, where, defs, seen)
        elif key == "anyOf":
            if not isinstance(value, list):
                raise _refuse(where, "expected a list")
            out[key] = [_schema(v, f"{where}[{j}]", defs, seen) for j, v in enumerate(value)]
        elif key == "enum":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _refuse(where, "Gemini enums hold strings only")
            out[key] = value
        else:
            out[key] = value
    fmt = out.get("format")
    if fmt is not None and fmt not in _FORMATS.get(out.get("type", ""), ()):
        raise _refuse(f"{path}.format", f"Gemini does not support format {fmt!r} here")
    return out


def root_schema(schema: Any, path: str) -> Any:
    defs = (schema.get("$defs") or schema.get("definitions")) if isinstance(schema, dict) else None
    return _schema(schema, path, defs if isinstance(defs, dict) else {})
