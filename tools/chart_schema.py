"""Write (or, with --check, verify) the `config` part of the chart's values.schema.json.

charts/edge-agent/values.schema.json is written by hand except `properties.config`, which
is the agent's own config model (edge_agent.config.Config) as JSON Schema, minus `listen`
(the chart writes it from `ports`, so a `listen` key in `config` is an error), with
pydantic's `$defs` at the schema root where its `#/$defs/...` references resolve. The
chart's own definitions are named `chart.*` and kept; every other definition is
pydantic's and is replaced.

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


def render(current: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(current)
    model, defs = config_schema()
    old = schema["properties"]["config"]
    config: dict[str, Any] = {"description": old["description"]} if "description" in old else {}
    config.update({k: v for k, v in model.items() if k != "description"})
    schema["properties"]["config"] = config
    chart_defs = {k: v for k, v in schema.get("$defs", {}).items() if k.startswith(CHART_DEFS)}
    schema["$defs"] = {**chart_defs, **defs}
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
