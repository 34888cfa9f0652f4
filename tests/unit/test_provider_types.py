"""A provider type is one module and one line in the registry: it declares its names,
adapter, own config keys and their checks, credential check and capabilities; the config
and the router ask it, and know no type by name."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint
from edge_agent.config import ConfigError, Provider, parse_config, read_credential
from edge_agent.providers import registry
from edge_agent.providers.kind import ProviderType
from edge_agent.routing.router import Router
from edge_agent.routing.strategies import Needs

ROOT = Path(__file__).resolve().parents[2] / "edge_agent"
# A valid value for every type-specific key (a new key needs one here).
SAMPLES = {
    "api_version": "2024-10-21",
    "region": "eu-west-1",
    "aws_access_key_id_env": "AWS_ID",
    "aws_secret_access_key_env": "AWS_SECRET",
    "aws_session_token_env": "AWS_TOKEN",
}


def entry(type_: str, **keys: Any) -> dict[str, Any]:
    return {
        "name": "p",
        "type": type_,
        "base_url": "https://bedrock-runtime.eu-west-1.amazonaws.com",
        "api_key_env": "KEY",
        **keys,
    }


def issues(provider: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        parse_config({"providers": [provider], "models": [{"name": "m", "targets": ["p/m"]}]})
    return {i.path: i.message for i in exc.value.issues}


def test_every_type_declares_itself() -> None:
    names = [name for kind in registry.TYPES for name in kind.names]
    assert len(names) == len(set(names)), "a type name is registered twice"
    assert tuple(names) == registry.NAMES
    for kind in registry.TYPES:
        assert isinstance(kind, ProviderType) and kind.names
        assert isinstance(kind.json_mode, bool)
        for name in kind.names:
            provider = Provider.model_construct(
                name="p", type=name, base_url="https://h", **dict.fromkeys(SAMPLES)
            )
            assert registry.build_adapter(provider).schema
            assert kind.credential_problem(provider, {}) is None  # nothing configured


def test_each_types_keys_are_flat_optional_provider_keys() -> None:
    fields = registry.config_fields()
    assert set(fields) == set(SAMPLES)
    for key in fields:
        assert Provider.model_fields[key].default is None
        assert registry.owners(key)
    # Their place in the model (and the chart's generated schema) is unchanged.
    assert list(Provider.model_fields) == [
        "name",
        "type",
        "base_url",
        "api_key_env",
        "models",
        "timeout_s",
        *fields,
        "connect_timeout_s",
    ]


def test_the_config_takes_its_types_from_the_registry() -> None:
    message = issues(entry("watsonx"))["providers[0].type"]
    assert message == (
        f"unknown provider type 'watsonx'; expected one of {', '.join(registry.NAMES)}"
    )
    for name in registry.NAMES:
        keys = {"region": "eu-west-1"} if name == "bedrock" else {}
        assert parse_config(
            {"providers": [entry(name, **keys)], "models": [{"name": "m", "targets": ["p/m"]}]}
        )


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_a_types_key_is_refused_on_every_other_type(key: str) -> None:
    owners = registry.owners(key)
    for name in registry.NAMES:
        if key in registry.provider_type(name).fields:
            continue
        found = issues(entry(name, **{key: SAMPLES[key]}))
        assert found == {
            f"providers[0].{key}": f"only {' or '.join(owners)} providers take one ({name!r})"
        }


def test_a_types_own_checks_and_credentials_come_from_its_module() -> None:
    sigv4 = {"aws_access_key_id_env": "AWS_ID", "aws_secret_access_key_env": "AWS_SECRET"}
    bedrock = {**entry("bedrock", **sigv4), "api_key_env": None}
    found = issues({**bedrock, "base_url": "https://bedrock.example.com"})
    assert "required for SigV4" in found["providers[0].region"]
    assert "not both" in issues({**bedrock, "api_key_env": "KEY"})["providers[0]"]
    cfg = parse_config({"providers": [bedrock], "models": [{"name": "m", "targets": ["p/m"]}]})
    assert read_credential(cfg.providers[0], {"AWS_ID": "id"}) == (
        None,
        "its AWS variable AWS_SECRET is not set",
    )
    assert read_credential(cfg.providers[0], {"AWS_ID": "id", "AWS_SECRET": "s"}) == (None, None)


def test_json_mode_is_the_types_capability() -> None:
    without = [name for kind in registry.TYPES if not kind.json_mode for name in kind.names]
    assert without == ["anthropic", "bedrock"]
    cfg = parse_config(
        {
            "providers": [
                {"name": "a", "type": "anthropic", "base_url": "https://a", "api_key_env": "K"},
                {"name": "o", "type": "openai", "base_url": "https://o", "api_key_env": "K"},
            ],
            "models": [{"name": "m", "targets": ["a/x", "o/y"]}, {"name": "n", "targets": ["a/x"]}],
        }
    )
    router = Router(cfg, {"K": "k"})
    assert router.pick("m", Endpoint.CHAT, Needs(json=True)).target.key == "o/y"
    with pytest.raises(ApiError, match=r"JSON mode \(response_format\) has no anthropic form"):
        router.pick("n", Endpoint.CHAT, Needs(json=True))


def _names_in(nodes: list[ast.AST], words: set[str]) -> list[str]:
    found = []
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Constant) and node.value in words:
            found.append(f"{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in words:
            found.append(f"{node.lineno}: .{node.attr}")
    return found


def test_no_type_is_known_by_name_outside_its_module() -> None:
    words = set(registry.NAMES) | set(registry.config_fields())
    router = ast.parse((ROOT / "routing" / "router.py").read_text())
    assert _names_in([router], words) == []
    # The config's provider parts ("openai" is also a semantic-cache embedder there).
    config = ast.parse((ROOT / "config.py").read_text())
    parts = [
        node
        for node in config.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef)
        and (node.name in ("_ProviderKeys", "ProviderModel") or "credential" in node.name)
    ]
    assert len(parts) == 4
    assert _names_in(parts, words) == []
