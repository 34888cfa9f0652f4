"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, LM Studio, …): same wire format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from edge_agent.api.openai import Endpoint
from edge_agent.providers.base import Schema
from edge_agent.providers.kind import ProviderType

if TYPE_CHECKING:
    from edge_agent.config import Provider

_PATHS = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETIONS: "/completions",
    Endpoint.EMBEDDINGS: "/embeddings",
}


class OpenAIAdapter:
    schema: Schema = "openai"
    codec = None
    endpoints = frozenset(_PATHS)

    def __init__(self, provider: Provider, environ: Mapping[str, str] | None = None) -> None:
        # base_url is what you would give the OpenAI SDK ("https://api.groq.com/openai/v1",
        # "http://vllm:8000/v1", ".../v1beta/openai"); a bare host means the usual /v1.
        self._base = provider.base_path or "/v1"

    def upstream_path(
        self, endpoint: Endpoint, model: str, query: str = "", stream: bool = False
    ) -> str:
        path = self._base + _PATHS[endpoint]
        return f"{path}?{query}" if query else path

    def auth_headers(
        self, api_key: str | None, *, path: str = "", body: bytes = b""
    ) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {api_key}")] if api_key else []


OPENAI = ProviderType(names=("openai", "openai_compatible"), adapter=OpenAIAdapter)
# Hosted APIs that speak OpenAI's chat wire format with Bearer keys; base_url as in their
# docs: https://api.mistral.ai/v1, https://api.groq.com/openai/v1, https://api.together.xyz/v1.
HOSTED = ProviderType(names=("mistral", "groq", "together"), adapter=OpenAIAdapter)
