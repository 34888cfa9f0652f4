"""deploy/compose: the local monitoring stack, checked without a Docker engine.

compose.yaml is validated against the Compose Specification's JSON schema (from the
docker-compose wheel pinned in requirements-tools.txt) after interpolating `${VAR...}` as
Compose does; the files it mounts must exist, and the gateway's config, prometheus.yml,
the Grafana provisioning and the Jaeger service must agree on names, ports and paths.
"""

from __future__ import annotations

import importlib.util
import json
import posixpath
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from edge_agent.config import Listen, credential_problems, load_config

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy/compose"
COMPOSE = STACK / "compose.yaml"
AGENT_CONFIG = STACK / "edge-agent.yaml"
PROMETHEUS = STACK / "prometheus.yml"
DATASOURCES = STACK / "grafana/datasources.yaml"
DASHBOARD_PROVIDERS = STACK / "grafana/dashboards.yaml"
PROMTOOL = Path(sys.executable).parent / "promtool"

# Where the pinned docker-compose wheel puts the schema (its package is not imported: it
# is installed without its dependencies).
SCHEMA_IN_WHEEL = "config/compose_spec.json"


# -- Compose's variable interpolation -------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class InterpolationError(ValueError):
    pass


def interpolate_string(text: str, environ: Mapping[str, str]) -> str:
    """One string as Compose interpolates it: `$$`, `$VAR`, `${VAR}`, and `${VAR:-default}`,
    `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` (the
    colon forms treat an empty value as unset). Unset variables without a default are
    empty strings (Compose warns)."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None and match["braced"] is None and match["plain"] is None:
            raise InterpolationError(f"invalid interpolation format in {text!r}")
        name = match["braced"] or match["plain"]
        value = environ.get(name)
        op, arg = match["op"], match["arg"] or ""
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op is None:
            return value or ""
        if op.endswith("-"):
            return arg if missing else value or ""
        if op.endswith("?"):
            if missing:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value or ""
        return "" if missing else arg  # `+`: the alternative when set

    return _VARIABLE.sub(one, text)


def interpolate(node: Any, environ: Mapping[str, str]) -> Any:
    """Every string value of a loaded compose file interpolated (keys are left alone)."""
    if isinstance(node, str):
        return interpolate_string(node, environ)
    if isinstance(node, list):
        return [interpolate(item, environ) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, environ) for key, value in node.items()}
    return node


def references(node: Any) -> Iterator[str]:
    """Every `${...}` or `$VAR` expression in the string values of `node`."""
    if isinstance(node, str):
        for match in _VARIABLE.finditer(node):
            if not match["escaped"]:
                yield match[0]
    elif isinstance(node, list):
        for item in node:
            yield from references(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from references(value)


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    cases = {
        "$$SET": "$SET",
        "${SET}": "x",
        "$SET/y": "x/y",
        "${UNSET}": "",
        "${UNSET:-d}": "d",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "${SET:-d}": "x",
        "${SET:+alt}": "alt",
        "${EMPTY:+alt}": "",
        "${EMPTY+alt}": "alt",
        "127.0.0.1:${UNSET:-8080}:8080": "127.0.0.1:8080:8080",
    }
    for text, expected in cases.items():
        assert interpolate_string(text, env) == expected, text
    for text in ("${UNSET:?set it}", "${EMPTY:?set it}", "${UNSET?set it}", "$ alone"):
        with pytest.raises(InterpolationError):
            interpolate_string(text, env)


# -- the schema -----------------------------------------------------------------------------


@cache
def compose_schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    paths = [Path(location, SCHEMA_IN_WHEEL) for location in locations]
    found = [p for p in paths if p.is_file()]
    if not found:
        pytest.fail(
            "The Compose Specification schema (compose/config/compose_spec.json from the "
            "docker-compose wheel in requirements-tools.txt) is not installed: run `make install`"
        )
    return json.loads(found[0].read_text(encoding="utf-8"))


_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_PORT = r"\d{1,5}(-\d{1,5})?"
_PORTS = re.compile(
    rf"^(?:(?:(?:\d{{1,3}}(?:\.\d{{1,3}}){{3}}|\[[0-9A-Fa-f:.]+\]):)?(?:{_PORT})?:)?{_PORT}"
    r"(?:/(?:tcp|udp|sctp))?$"
)

# The schema's own formats ("duration": Go durations such as 10s or 1m30s; "ports":
# [[ip:][host]:]container[/protocol]), which a plain FormatChecker would not check.
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("duration")
def _is_duration(value: object) -> bool:
    return not isinstance(value, str) or bool(_DURATION.fullmatch(value))


@FORMATS.checks("ports")
def _is_ports(value: object) -> bool:
    return isinstance(value, int) or not isinstance(value, str) or bool(_PORTS.fullmatch(value))


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    # The schema says draft 2019-09 (with a `$schema` URI jsonschema does not recognise).
    validator = jsonschema.Draft201909Validator(schema, format_checker=FORMATS)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


@cache
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def compose(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as Compose sees it, in an environment with nothing set by default."""
    return interpolate(raw_compose(), environ or {})


def test_schema_is_the_compose_specification() -> None:
    schema = compose_schema()
    # Not a legacy v2/v3 file format schema (config_schema_v3.x.json): those require `version`.
    assert schema.get("id") == "compose_spec.json"
    assert "required" not in schema
    assert "services" in schema["properties"]
    assert "^x-" in schema["patternProperties"]


def test_compose_file_validates() -> None:
    assert schema_errors(compose()) == []


def test_compose_file_validates_with_variables_set() -> None:
    env = {"OPENAI_API_KEY": "sk-test", "GRAFANA_ADMIN_PASSWORD": "s3cret", "IMAGE_SOURCE": "x"}
    document = compose(env)
    assert schema_errors(document) == []
    gateway = document["services"]["gateway"]
    assert gateway["environment"]["OPENAI_API_KEY"] == "sk-test"


@pytest.mark.parametrize(
    ("name", "break_it"),
    [
        ("unknown top-level key", lambda d: d.update(servcies={})),
        ("ports not a list", lambda d: d["services"]["gateway"].update(ports=8080)),
        ("bad port", lambda d: d["services"]["gateway"].update(ports=["80:80:80:80"])),
        ("unknown service key", lambda d: d["services"]["gateway"].update(healthchek={})),
        (
            "bad depends_on condition",
            lambda d: d["services"]["gateway"]["depends_on"]["jaeger"].update(condition="up"),
        ),
        (
            "interval not a duration",
            lambda d: d["services"]["gateway"]["healthcheck"].update(interval="10 seconds"),
        ),
        ("read_only not a boolean", lambda d: d["services"]["gateway"].update(read_only="yes")),
        (
            "misspelt mount key",
            lambda d: d["services"]["gateway"]["volumes"][0].update(readonly=True),
        ),
    ],
)
def test_schema_refuses_a_broken_file(name: str, break_it: Any) -> None:
    document = compose()
    break_it(document)
    assert schema_errors(document), name


def test_every_variable_has_a_default() -> None:
    """`docker compose up` works with nothing set: no required or bare variables."""
    for expression in references(raw_compose()):
        assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-[^}]*\}", expression), expression


SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$")


def test_no_literal_secret() -> None:
    """Keys and passwords come from the environment: each is a `${...}` reference, and a
    provider key's default is empty."""
    for name, service in raw_compose()["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: use the mapping form of environment"
        for var, value in environment.items():
            if not SECRET_NAME.search(var):
                continue
            assert isinstance(value, str) and value.startswith("${"), f"{name}: {var}={value!r}"
            if var.endswith("_API_KEY"):
                assert value == f"${{{var}:-}}", f"{name}: pass {var} through, default empty"


def test_images_are_pinned() -> None:
    for name, service in raw_compose()["services"].items():
        image = service.get("image")
        assert image, f"{name}: no image"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and tag not in ("", "latest"), f"{name}: {image}"


# -- mounts ---------------------------------------------------------------------------------


def binds(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(host path, container path, read-only) for each bind mount of a service."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume["type"] == "bind":
                found.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
            continue
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/", "~")):  # otherwise a named volume
            target, _, mode = rest.partition(":")
            found.append((source, target, "ro" in mode.split(",")))
    return found


def mounted(service_name: str) -> dict[str, Path]:
    """{container path: host path} of a service's bind mounts."""
    return {
        target: (STACK / source).resolve()
        for source, target, _ in binds(compose()["services"][service_name])
    }


def host_path_of(service_name: str, container_path: str) -> Path:
    """The host path behind a container path (a mounted file, or a file in a mounted
    directory)."""
    for target, source in mounted(service_name).items():
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / posixpath.relpath(container_path, target)
    raise AssertionError(f"{container_path} is not mounted into {service_name}")


def test_every_bind_mount_exists_and_is_read_only() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for source, _target, read_only in binds(service):
            assert read_only, f"{name}: mount {source} read-only"
            assert not source.startswith(("/", "~")), f"{name}: {source} is outside the repo"
            host = (STACK / source).resolve()
            assert host.is_relative_to(ROOT), f"{name}: {source} is outside the repo"
            assert host.exists(), f"{name}: {source} ({host.relative_to(ROOT)}) does not exist"


def test_the_chart_files_are_mounted() -> None:
    rules = ROOT / "charts/edge-agent/files/alerts.yaml"
    dashboards = ROOT / "charts/edge-agent/files/dashboards"
    assert rules in mounted("prometheus").values()
    assert dashboards in mounted("grafana").values()


def test_gateway_is_built_and_runs_like_docker_run() -> None:
    gateway = compose()["services"]["gateway"]
    context = (STACK / gateway["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / gateway["build"].get("dockerfile", "Dockerfile")).is_file()
    # docs/deploy.md's `docker run --read-only --tmpfs /tmp -v config.yaml:...:ro`
    assert gateway["read_only"] is True
    tmpfs = gateway["tmpfs"]
    assert "/tmp" in ([tmpfs] if isinstance(tmpfs, str) else tmpfs)
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    [cmd] = re.findall(r"^CMD (.*)$", dockerfile, re.MULTILINE)
    config_path = json.loads(cmd)[-1]
    assert "command" not in gateway and "entrypoint" not in gateway
    assert mounted("gateway")[config_path] == AGENT_CONFIG
    # Tagged as docs/deploy.md's `docker build` tags it: the project's version.
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert gateway["image"] == f"llm-edge-agent:{version['version']}"


# -- the gateway's config, Prometheus, Grafana, Jaeger --------------------------------------


@cache
def agent_config_data() -> dict[str, Any]:
    """edge-agent.yaml as plain YAML (the loader's own check is a test of its own)."""
    return yaml.safe_load(AGENT_CONFIG.read_text(encoding="utf-8"))


def listen() -> Listen:
    return Listen(**agent_config_data().get("listen", {}))


def container_ports(service: Mapping[str, Any]) -> set[int]:
    """The container side of each published port."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def test_gateway_listens_beyond_loopback_and_publishes_its_ports() -> None:
    gateway = compose()["services"]["gateway"]
    for which in ("envoy", "admin"):
        host, port = listen().addr(which)
        assert host in ("0.0.0.0", "::"), f"listen.{which} must not be loopback in a container"
        assert port in container_ports(gateway), f"listen.{which} port {port} is not published"


@cache
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))


def test_prometheus_is_mounted_where_the_image_reads_it() -> None:
    prometheus = compose()["services"]["prometheus"]
    # The image's default command reads /etc/prometheus/prometheus.yml.
    assert "command" not in prometheus
    assert mounted("prometheus")["/etc/prometheus/prometheus.yml"] == PROMETHEUS


def test_prometheus_scrapes_the_gateway_admin_port() -> None:
    [job] = [
        job
        for job in prometheus_config()["scrape_configs"]
        if any(
            target.split(":")[0] == "gateway"
            for static in job.get("static_configs", [])
            for target in static["targets"]
        )
    ]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scheme", "http") == "http"
    [target] = [t for static in job["static_configs"] for t in static["targets"]]
    _, admin_port = listen().addr("admin")
    assert target == f"gateway:{admin_port}"
    assert "gateway" in compose()["services"]


def test_prometheus_rule_files_are_the_mounted_chart_rules() -> None:
    rule_files = prometheus_config()["rule_files"]
    assert rule_files
    for path in rule_files:
        assert host_path_of("prometheus", path) == ROOT / "charts/edge-agent/files/alerts.yaml"


def test_promtool_accepts_prometheus_yml(tmp_path: Path) -> None:
    if not PROMTOOL.exists():
        pytest.skip(f"{PROMTOOL} is missing: run `make install` (tools/install_promtool.py)")
    # The rule files as the container sees them, at their host paths.
    config = dict(prometheus_config())
    config["rule_files"] = [str(host_path_of("prometheus", p)) for p in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_agent_config_loads() -> None:
    config = load_config(AGENT_CONFIG)
    assert config.demo_upstream.enabled
    # Works with no provider key: the demo provider needs none.
    assert "demo" not in credential_problems(config, {})
    assert credential_problems(config, {"OPENAI_API_KEY": "sk-test"}) == {}


def test_every_provider_key_is_passed_through() -> None:
    environment = raw_compose()["services"]["gateway"].get("environment", {})
    for provider in agent_config_data()["providers"]:
        var = provider.get("api_key_env")
        if var:
            assert environment.get(var) == f"${{{var}:-}}", f"pass {var} to the gateway"


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), path
    return document


def service_url_ok(url: str) -> None:
    """A URL that names a compose service on one of its container ports."""
    parts = urlsplit(url)
    services = compose()["services"]
    assert parts.hostname in services, url
    service = services[parts.hostname]
    exposed = container_ports(service) | {int(p) for p in service.get("expose", [])}
    assert parts.port in exposed, f"{url}: port not published or exposed by {parts.hostname}"


def test_grafana_datasources() -> None:
    document = load_yaml(DATASOURCES)
    assert document["apiVersion"] == 1
    by_type = {d["type"]: d for d in document["datasources"]}
    assert set(by_type) == {"prometheus", "jaeger"}
    for datasource in by_type.values():
        assert datasource["uid"] and datasource["name"]
        service_url_ok(datasource["url"])
    assert by_type["prometheus"].get("isDefault") is True
    assert mounted("grafana")["/etc/grafana/provisioning/datasources/edge-agent.yaml"] == (
        DATASOURCES
    )


def test_grafana_dashboard_provider_reads_the_mounted_chart_dashboards() -> None:
    document = load_yaml(DASHBOARD_PROVIDERS)
    assert document["apiVersion"] == 1
    [provider] = document["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert host_path_of("grafana", path) == ROOT / "charts/edge-agent/files/dashboards"
    assert mounted("grafana")["/etc/grafana/provisioning/dashboards/edge-agent.yaml"] == (
        DASHBOARD_PROVIDERS
    )


def datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def test_dashboards_use_the_provisioned_datasources() -> None:
    """Each dashboard parses, and each datasource it names (not through a variable) is
    one the stack provisions."""
    directory = ROOT / "charts/edge-agent/files/dashboards"
    dashboards = sorted(directory.glob("*.json"))
    assert dashboards, f"no dashboards in {directory.relative_to(ROOT)}"
    provisioned = load_yaml(DATASOURCES)["datasources"]
    uids = {d["uid"] for d in provisioned}
    names = {d["name"] for d in provisioned}
    types = {d["type"] for d in provisioned}
    for path in dashboards:
        for ref in datasource_refs(json.loads(path.read_text(encoding="utf-8"))):
            if ref is None:
                continue
            if isinstance(ref, str):
                assert ref.startswith("$") or ref.startswith("-- ") or ref in names, (
                    f"{path.name}: datasource {ref!r}"
                )
                continue
            uid = str(ref.get("uid") or "")
            if ref.get("type") in ("datasource", "grafana") or uid.startswith(("$", "-- ")):
                continue
            assert ref.get("type") in types | {None}, f"{path.name}: datasource {ref}"
            assert not uid or uid in uids, f"{path.name}: datasource uid {uid!r}"


def test_tracing_goes_to_the_jaeger_service() -> None:
    tracing = agent_config_data()["telemetry"]["tracing"]
    assert tracing["enabled"] is True
    endpoint = urlsplit(tracing["endpoint"])
    jaeger = compose()["services"]["jaeger"]
    assert endpoint.hostname == "jaeger"
    # OTLP's ports: gRPC 4317, HTTP 4318 (Jaeger v2's defaults).
    expected = {"grpc": 4317, "http/protobuf": 4318}[tracing.get("protocol", "grpc")]
    assert endpoint.port == expected
    assert {4317, 4318, 16686} <= container_ports(jaeger)
    assert jaeger["environment"]["JAEGER_LISTEN_HOST"] == "0.0.0.0"
    assert "jaeger" in compose()["services"]["gateway"]["depends_on"]


def test_depends_on_conditions_have_healthchecks() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for other, how in (service.get("depends_on") or {}).items():
            assert other in services, f"{name} depends on unknown {other}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{other} has no healthcheck"


def test_gateway_healthcheck_asks_the_admin_port() -> None:
    # The image has no curl or wget: the probe is the venv's Python (the other images
    # carry busybox's wget).
    test = compose()["services"]["gateway"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    _, admin_port = listen().addr("admin")
    assert f"'http://127.0.0.1:{admin_port}/readyz'" in test[-1]
