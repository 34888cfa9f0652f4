"""Anthropic's Messages API (api.anthropic.com, or any server speaking it)."""

from __future__ import annotations

from edge_agent.api.anthropic import ANTHROPIC_VERSION
from edge_agent.api.openai import Endpoint
from edge_agent.config import Provider
from edge_agent.providers.base import Schema


class AnthropicAdapter:
    schema: Schema = "anthropic"
    endpoints = frozenset({Endpoint.MESSAGES})

    def __init__(self, provider: Provider) -> None:
        # base_url is what you would give the Anthropic SDK: a host, without /v1.
        self._base = provider.base_path.removesuffix("/v1")

    def upstream_path(self, endpoint: Endpoint, model: str, query: str = "") -> str:
        path = f"{self._base}/v1/messages"
        return f"{path}?{query}" if query else path

    def auth_headers(self, api_key: str | None) -> list[tuple[str, str]]:
        headers = [("anthropic-version", ANTHROPIC_VERSION)]
        if api_key:
            headers.append(("x-api-key", api_key))
        return headers
