from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import (
    ConfigError,
    credential_problems,
    load_config,
    parse_config,
    read_credential,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "edge_agent" / "configs" / "demo.yaml"


def base(**over: object) -> dict:
    data: dict = {
        "providers": [
            {
                "name": "openai",
                "type": "openai",
                "base_url": "https://api.openai.com",
                "api_key_env": "OPENAI_API_KEY",
                "models": [{"name": "gpt-4o-mini", "input_per_mtok": 0.15}],
            }
        ],
        "models": [{"name": "gpt-4o-mini", "targets": ["openai/gpt-4o-mini"]}],
    }
    data.update(over)
    return data


def issues(data: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return {i.path: i.message for i in exc.value.issues}


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_config(base())
    assert cfg.listen.envoy == "127.0.0.1:8080"
    assert cfg.cache.exact.enabled and cfg.cache.exact.ttl_s == 3600
    assert cfg.providers[0].tls and cfg.providers[0].port == 443
    assert cfg.envoy.failure_mode == "closed"


def test_demo_config_is_valid() -> None:
    cfg = load_config(DEMO)
    assert cfg.demo_upstream.enabled
    assert {m.name for m in cfg.models} >= {"demo", "demo-embeddings"}


def test_unknown_key_names_its_path() -> None:
    data = base()
    data["providers"][0]["api_key_env_typo"] = "X"
    found = issues(data)
    assert "providers[0].api_key_env_typo" in found
    assert "unknown key" in found["providers[0].api_key_env_typo"]


def test_wrong_types_and_values_name_their_paths() -> None:
    data = base(cache={"exact": {"ttl_s": "soon", "max_entries": 0}})
    data["providers"][0]["base_url"] = "ftp://example.com"
    found = issues(data)
    assert "cache.exact.ttl_s" in found
    assert "cache.exact.max_entries" in found
    assert "http:// or https://" in found["providers[0].base_url"]


def test_cross_references_are_checked() -> None:
    data = base(models=[{"name": "m", "targets": ["nope/x", "openai/unknown-model"]}])
    found = issues(data)
    assert "unknown provider 'nope'" in found["models[0].targets[0]"]
    assert "does not list model 'unknown-model'" in found["models[0].targets[1]"]
    found = issues(base(models=[{"name": "m", "targets": ["openai/gpt-4o-mini", "bad"]}]))
    assert "provider/model" in found["models[0].targets[1].target"]
    weighted = {"target": "openai/gpt-4o-mini", "weight": -1}
    found = issues(base(models=[{"name": "m", "targets": [weighted], "strategy": "fastest"}]))
    assert "greater than or equal to 0" in found["models[0].targets[0].weight"]
    assert "least_latency" in found["models[0].strategy"]


def test_duplicates_and_port_clashes() -> None:
    data = base(listen={"grpc": "127.0.0.1:9090", "admin": "127.0.0.1:9090"})
    data["providers"].append(dict(data["providers"][0]))
    data["models"].append({"name": "gpt-4o-mini", "targets": ["openai/gpt-4o-mini"]})
    found = issues(data)
    assert "duplicate provider" in found["providers[1].name"]
    assert "duplicate model" in found["models[1].name"]
    assert "listen.admin" in found


def test_unimplemented_features_are_refused_clearly() -> None:
    data = base(cache={"redis": {"url": "http://x"}})
    data["providers"][0]["type"] = "watsonx"
    found = issues(data)
    assert "unknown provider type 'watsonx'" in found["providers[0].type"]
    assert "redis://" in found["cache.redis.url"]


def test_bedrock_credentials_and_region() -> None:
    bedrock = {"name": "b", "type": "bedrock", "base_url": "https://bedrock.example.com"}
    data = base()
    data["providers"].append({**bedrock})
    assert "not both and not neither" in issues(data)["providers[1]"]
    data["providers"][1] = {
        **bedrock,
        "aws_access_key_id_env": "A",
        "aws_secret_access_key_env": "S",
    }
    assert "required for SigV4" in issues(data)["providers[1].region"]
    data["providers"][1]["region"] = "eu-west-1"
    data["models"].append({"name": "b", "targets": ["b/m"]})
    cfg = parse_config(data)
    assert "AWS variable A is not set" in credential_problems(cfg, {"OPENAI_API_KEY": "k"})["b"]
    assert credential_problems(cfg, {"OPENAI_API_KEY": "k", "A": "id", "S": "secret"}) == {}
    data["providers"][0]["region"] = "eu-west-1"
    assert "only bedrock providers" in issues(data)["providers[0].region"]


def test_semantic_config_checks() -> None:
    found = issues(base(cache={"semantic": {"enabled": True, "embedder": "openai"}}))
    assert "required when embedder is 'openai'" in found["cache.semantic.openai"]
    slow = {"base_url": "http://127.0.0.1:1/v1", "model": "e", "dimensions": 8, "timeout_s": 2}
    found = issues(
        base(cache={"semantic": {"enabled": True, "embedder": "openai", "openai": slow}})
    )
    assert "message timeout" in found["cache.semantic.openai.timeout_s"]
    found = issues(base(cache={"semantic": {"mode": "sometimes"}}))
    assert "cache.semantic.mode" in found


def test_credential_problems() -> None:
    cfg = parse_config(base())
    assert "OPENAI_API_KEY is not set" in credential_problems(cfg, {})["openai"]
    assert credential_problems(cfg, {"OPENAI_API_KEY": "sk-1\n"}) == {}  # newline stripped
    assert read_credential(cfg.providers[0], {"OPENAI_API_KEY": " sk-1\n"}) == ("sk-1", None)
    bad = credential_problems(cfg, {"OPENAI_API_KEY": "sk 1"})["openai"]
    assert "not allowed in an HTTP header" in bad


def test_listen_addresses_envoy_uses_must_be_ips() -> None:
    found = issues(base(listen={"envoy": "localhost:8080", "admin": "localhost:9090"}))
    assert "IP address" in found["listen.envoy"]
    assert "listen.admin" not in found


@pytest.mark.parametrize("port", ["9²", "٩٠٩٠", "0", "65536", "x"])
def test_listen_ports_must_be_ascii_numbers_in_range(port: str) -> None:
    assert (
        "expected 'host:port'"
        in issues(base(listen={"admin": f"127.0.0.1:{port}"}))["listen.admin"]
    )


@pytest.mark.parametrize("name", ["authorization", "host", ":authority", "X-Upper", "x-envoy-x"])
def test_routing_header_must_be_a_safe_name(name: str) -> None:
    assert "envoy.routing_header" in issues(base(envoy={"routing_header": name}))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n  - name: x\n  bad")
    with pytest.raises(ConfigError, match="not valid YAML: line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.yaml")


def test_check_config_cli_reports_paths_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n  - {name: a, type: openai, base_url: 'nope'}\nmodels: []\n")
    assert main(["check-config", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "providers[0].base_url" in err
    assert "models" in err
    assert "Traceback" not in err


def test_check_config_cli_accepts_demo(capsys: pytest.CaptureFixture[str]) -> None:
    # Also runs `envoy --mode validate` on the generated bootstrap.
    assert main(["check-config", "--config", str(DEMO)]) == 0
    assert "OK" in capsys.readouterr().out
