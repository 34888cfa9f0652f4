from __future__ import annotations

import pytest

from edge_agent.api.openai import Endpoint
from edge_agent.config import Provider
from edge_agent.providers.registry import build_adapter


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.openai.com", "/v1/chat/completions"),
        ("https://api.openai.com/", "/v1/chat/completions"),
        ("https://api.openai.com/v1", "/v1/chat/completions"),
        ("https://api.groq.com/openai/v1", "/openai/v1/chat/completions"),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "/v1beta/openai/chat/completions",
        ),
        ("http://127.0.0.1:8000/v1/", "/v1/chat/completions"),
    ],
)
def test_base_url_follows_the_openai_sdk_convention(base_url: str, expected: str) -> None:
    adapter = build_adapter(Provider(name="p", type="openai", base_url=base_url))
    assert adapter.upstream_path(Endpoint.CHAT, "m") == expected


def test_query_string_is_kept() -> None:
    adapter = build_adapter(Provider(name="p", type="openai", base_url="http://h/v1"))
    assert adapter.upstream_path(Endpoint.EMBEDDINGS, "m", "a=1&b=2") == ("/v1/embeddings?a=1&b=2")


def test_credentials() -> None:
    adapter = build_adapter(Provider(name="p", type="openai_compatible", base_url="http://h"))
    assert adapter.auth_headers("sk-1") == [("authorization", "Bearer sk-1")]
    assert adapter.auth_headers(None) == []


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.anthropic.com", "/v1/messages"),
        ("https://api.anthropic.com/v1", "/v1/messages"),
        ("http://127.0.0.1:9000/proxy/", "/proxy/v1/messages"),
    ],
)
def test_anthropic_paths_and_headers(base_url: str, expected: str) -> None:
    adapter = build_adapter(Provider(name="c", type="anthropic", base_url=base_url))
    assert adapter.schema == "anthropic"
    assert adapter.upstream_path(Endpoint.MESSAGES, "m") == expected
    assert adapter.auth_headers("k") == [("anthropic-version", "2023-06-01"), ("x-api-key", "k")]
