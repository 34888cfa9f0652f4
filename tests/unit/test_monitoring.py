"""Monitoring shipped in the chart: the alert rules (promtool check and unit tests), the
Grafana dashboards, the metrics both use against a running agent's /metrics, and the
chart objects that carry them (grafanaDashboards, prometheusRule).

promtool is Debian's (tools/install_promtool.py, run by make install)."""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from edge_agent.cache.redis_tier import _Metrics as RedisMetrics
from edge_agent.telemetry.metrics import Metrics
from tests.deploy import kube
from tests.deploy.test_chart import CHART, by_kind, helm, render
from tests.helpers import free_port, http, listen_block, write_config

ROOT = kube.ROOT
ALERTS = CHART / "files/alerts.yaml"
ALERT_TESTS = ROOT / "tests/monitoring/alerts_test.yaml"
DASHBOARDS = sorted((CHART / "files/dashboards").glob("*.json"))
OBSERVABILITY = ROOT / "docs/observability.md"
PROMTOOL = Path(sys.executable).parent / "promtool"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

METRIC = re.compile(r"\b(?:edge_agent|envoy)_[a-z0-9_]+")
SELECTOR = re.compile(r"\b((?:edge_agent|envoy)_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Labels Prometheus adds to every scraped series (the rules and dashboards keep them).
TARGET_LABELS = {"namespace", "job", "instance", "pod"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(
            f"{PROMTOOL} is missing: run `make install` (tools/install_promtool.py puts it there)"
        )
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, where, PromQL) for every panel target and query variable."""
    out = []
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                out.append((name, f"panel {panel['id']} {target['refId']}", target["expr"]))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                query = var["query"]
                out.append(
                    (name, f"${var['name']}", query["query"] if isinstance(query, dict) else query)
                )
    return out


def rule_queries() -> list[tuple[str, str, str]]:
    return [(ALERTS.name, rule["alert"], rule["expr"]) for rule in alert_rules()]


def as_promql(query: str) -> str:
    """A dashboard query as plain PromQL: Grafana's variables replaced by values."""
    query = query.replace("$__rate_interval", "5m").replace("$__range", "1h")
    query = re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", query)
    match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip(), re.DOTALL)
    return match.group(1) if match else query


# ---- the alert rules ------------------------------------------------------------------
def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a test where they fire"
    assert names - quiet == set(), "alerts without a test where they do not fire"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"
    rule_files = yaml.safe_load(ALERT_TESTS.read_text())["rule_files"]
    assert [(ALERT_TESTS.parent / f).resolve() for f in rule_files] == [ALERTS.resolve()]


def test_every_alert_waits_has_a_severity_and_links_its_runbook() -> None:
    anchors = {
        "#" + line[4:].strip().lower()
        for line in OBSERVABILITY.read_text().splitlines()
        if line.startswith("### ")
    }
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        url = notes["runbook_url"]
        assert url.endswith(f"docs/observability.md#{name.lower()}"), name
        assert f"#{name.lower()}" in anchors, f"docs/observability.md has no ### {name}"


# ---- the dashboards -------------------------------------------------------------------
def test_there_are_dashboards() -> None:
    assert len(DASHBOARDS) >= 2
    titles = [board["title"] for board in dashboards().values()]
    uids = [board["uid"] for board in dashboards().values()]
    assert len(set(titles)) == len(titles) and len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_panels_are_described_and_use_the_datasource_variable(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["schemaVersion"] >= 39
    assert "__inputs" not in board  # provisioned as it is: no import-time inputs
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(board):
        where = f"{path.name} panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("description", "").strip(), f"{where}: no description"
        assert panel.get("datasource") == DATASOURCE, where
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE, where
            assert target["expr"].strip(), where
        if panel["type"] != "row":
            assert panel.get("targets"), f"{where}: no query"
    variables = {var["name"]: var for var in board["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    assert {"model", "provider", "tenant"} <= set(variables)
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]

    # No data source is named anywhere else (a uid from someone's Grafana would break).
    def walk(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if "datasource" in node:
                yield node["datasource"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    builtin = {"type": "grafana", "uid": "-- Grafana --"}  # the dashboard's own annotations
    assert all(ds in (DATASOURCE, builtin) for ds in walk(board))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query:{i}", "expr": as_promql(query)}
        for i, (_, _, query) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the metrics they use -------------------------------------------------------------
@functools.cache
def defined_labels() -> dict[str, frozenset[str]]:
    """Exposed series name → its label names, from the agent's metric definitions."""
    registry = CollectorRegistry()
    metrics = [Metrics(registry), RedisMetrics(registry)]
    found: list[MetricWrapperBase] = []
    for holder in metrics:
        for value in vars(holder).values():
            if isinstance(value, MetricWrapperBase):
                found.append(value)
            elif hasattr(value, "__slots__"):  # Metrics.streams: a gauge and a counter child
                found += [
                    getattr(value, slot)
                    for slot in value.__slots__
                    if isinstance(getattr(value, slot, None), MetricWrapperBase)
                ]
    out: dict[str, frozenset[str]] = {}
    for metric in found:
        labels = frozenset(metric._labelnames)
        if metric._type == "counter":
            out[metric._name + "_total"] = labels
        elif metric._type == "histogram":
            out[metric._name + "_bucket"] = labels | {"le"}
            out[metric._name + "_sum"] = labels
            out[metric._name + "_count"] = labels
        else:
            out[metric._name] = labels
    return out


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a running agent (`edge-agent serve`, as sidecar mode runs it) with
    the shared Redis tier configured (its metrics exist only then; nothing listens on
    its port, which the agent survives) and no request served yet."""
    tmp = tmp_path_factory.mktemp("monitoring")
    config = {
        "listen": listen_block(),
        "providers": [
            {
                "name": "p",
                "type": "openai",
                "base_url": "http://127.0.0.1:9",
                "models": [{"name": "m"}],
            }
        ],
        "models": [{"name": "m", "targets": ["p/m"]}],
        "cache": {
            "semantic": {"enabled": False},
            "redis": {"url": f"redis://127.0.0.1:{free_port()}/0"},
        },
    }
    path = write_config(tmp, config)
    log = tmp / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{config['listen']['admin']}/metrics"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"edge-agent serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                reply = http("GET", url, timeout=1)
            except OSError:
                reply = None
            if reply is not None and reply.status == 200 and b"edge_agent_redis_" in reply.body:
                return reply.body.decode()
            time.sleep(0.1)
        pytest.fail(f"no /metrics in 30 s:\n{log.read_text()}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def exposed_names(text: str) -> set[str]:
    """Series names /metrics can serve: every family's # TYPE line, histograms as their
    _bucket/_sum/_count series, and every sample."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names |= (
                {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
            )
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_families_without_samples_are_still_exposed(scraped: str) -> None:
    # The check below relies on it: a labelled family with no child yet (no request
    # was refused) still has its # HELP and # TYPE lines.
    assert "# TYPE edge_agent_limit_refusals_total counter" in scraped
    assert "# HELP edge_agent_limit_refusals_total " in scraped
    assert "# TYPE edge_agent_ext_proc_phase_seconds histogram" in scraped
    samples = [
        line for line in scraped.splitlines() if line.startswith("edge_agent_limit_refusals")
    ]
    assert samples == []


@pytest.mark.parametrize("source", ["dashboards", "alerts"])
def test_every_metric_used_is_exported_by_the_agent(source: str, scraped: str) -> None:
    queries = dashboard_queries() if source == "dashboards" else rule_queries()
    exposed = exposed_names(scraped)
    assert exposed >= set(defined_labels()), "the definitions and /metrics disagree"
    missing = {
        (where, name)
        for _, where, query in queries
        for name in METRIC.findall(query)
        if name not in exposed
    }
    assert missing == set(), "metrics the agent's /metrics does not serve"


@pytest.mark.parametrize("source", ["dashboards", "alerts"])
def test_every_label_used_is_one_the_metrics_have(source: str) -> None:
    defined = defined_labels()
    problems = []
    queries = dashboard_queries() if source == "dashboards" else rule_queries()
    legends = {}
    for board in dashboards().values():
        for panel in panels(board):
            for target in panel.get("targets", []):
                legends[target["expr"]] = target.get("legendFormat", "")
    for _, where, query in queries:
        used_here: set[str] = set(TARGET_LABELS)
        for name, matchers in SELECTOR.findall(query):
            labels = defined.get(name, frozenset())
            used_here |= labels
            for label in MATCHER.findall(matchers):
                if label not in labels | TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label!r}")
        for name in METRIC.findall(query):
            used_here |= defined.get(name, frozenset())
        grouped = [g.strip() for group in GROUPING.findall(query) for g in group.split(",")]
        shown = LEGEND.findall(legends.get(query, ""))
        for label in [g for g in grouped if g] + shown:
            if label not in used_here:
                problems.append(f"{where}: no metric of the query has a label {label!r}")
    assert problems == []


# ---- the chart objects ----------------------------------------------------------------
def _values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


ON = {"grafanaDashboards": {"enabled": True}, "prometheusRule": {"enabled": True}}


def dashboard_maps(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [cm for cm in by_kind(objects, "ConfigMap") if "config.yaml" not in cm["data"]]


def test_monitoring_objects_are_off_by_default() -> None:
    for values in (None, CHART / "ci/gateway-full.yaml", CHART / "ci/sidecar.yaml"):
        objects = render(values)
        assert not by_kind(objects, "PrometheusRule")
        assert dashboard_maps(objects) == []


@pytest.mark.parametrize("mode", ["gateway", "sidecar"])
def test_dashboards_render_for_the_grafana_sidecar(mode: str, tmp_path: Path) -> None:
    base = CHART / ("ci/sidecar.yaml" if mode == "sidecar" else "ci/gateway-full.yaml")
    objects = render(base, "-f", str(_values(tmp_path, ON)))
    maps = dashboard_maps(objects)
    assert len(maps) == len(DASHBOARDS)
    shipped = {path.name: path.read_text() for path in DASHBOARDS}
    seen = {}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "llm"
        assert kube.errors(cm) == [], cm["metadata"]["name"]
        [(key, text)] = cm["data"].items()
        assert json.loads(text) == json.loads(shipped[key])
        seen[key] = cm["metadata"]["name"]
    assert set(seen) == set(shipped)
    assert len(set(seen.values())) == len(seen)


def test_the_dashboard_label_and_namespace_are_configurable(tmp_path: Path) -> None:
    values = {
        "grafanaDashboards": {
            "enabled": True,
            "label": "example.com/dashboard",
            "labelValue": "llm",
            "labels": {"team": "platform"},
            "annotations": {"grafana_folder": "LLM"},
            "namespace": "monitoring",
        }
    }
    for cm in dashboard_maps(render(None, "-f", str(_values(tmp_path, values)))):
        meta = cm["metadata"]
        assert meta["labels"]["example.com/dashboard"] == "llm"
        assert meta["labels"]["team"] == "platform"
        assert "grafana_dashboard" not in meta["labels"]
        assert meta["annotations"] == {"grafana_folder": "LLM"}
        assert meta["namespace"] == "monitoring"


@functools.cache
def _prometheus_rule_validator() -> jsonschema.Draft202012Validator:
    from cloudcoil.models.prometheus_operator import v1

    schema = v1.PrometheusRule.model_json_schema(by_alias=True)
    return jsonschema.Draft202012Validator(kube._closed(schema))


def prometheus_rule_errors(obj: dict[str, Any]) -> list[str]:
    # The messages repeat the whole spec: the path is enough.
    return [
        f"PrometheusRule {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}"
        for e in _prometheus_rule_validator().iter_errors(obj)
    ]


@pytest.mark.parametrize("mode", ["gateway", "sidecar"])
def test_the_prometheus_rule_is_the_alerts_file(mode: str, tmp_path: Path) -> None:
    base = CHART / ("ci/sidecar.yaml" if mode == "sidecar" else "ci/gateway-full.yaml")
    values = {**ON, "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}}
    [rule] = by_kind(render(base, "-f", str(_values(tmp_path, values))), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["namespace"] == "llm"
    # Copied, not templated: the annotations' {{ $labels.x }} reach Prometheus.
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert "{{ $labels.provider }}" in json.dumps(rule["spec"])
    assert prometheus_rule_errors(rule) == []


def test_a_broken_prometheus_rule_is_caught() -> None:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": yaml.safe_load(ALERTS.read_text()),
    }
    rule["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    assert prometheus_rule_errors(rule)


def test_lint_strict_with_monitoring_on(tmp_path: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(_values(tmp_path, ON)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"grafanaDashboards": {"enabeld": True}}, "enabeld"),
        ({"grafanaDashboards": {"labelValue": 1}}, "labelValue"),
        ({"prometheusRule": {"labels": {"release": 1}}}, "release"),
        ({"prometheusRule": {"additionalLabels": {}}}, "additionalLabels"),
    ],
    ids=["typo", "not-a-string", "label-not-a-string", "unknown"],
)
def test_bad_monitoring_values_are_refused(
    values: dict[str, Any], named: str, tmp_path: Path
) -> None:
    result = helm("template", "llm", str(CHART), "-f", str(_values(tmp_path, values)))
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "values don't meet the specifications of the schema" in out, out
    assert named in out, out
