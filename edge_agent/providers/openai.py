"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, LM Studio, …): same wire format."""

from __future__ import annotations

from edge_agent.api.openai import Endpoint
from edge_agent.config import Provider


class OpenAIAdapter:
    def __init__(self, provider: Provider) -> None:
        base = provider.base_path
        # Accept both "https://api.openai.com" and the SDK-style "https://api.openai.com/v1".
        self._prefix = base[: -len("/v1")] if base.endswith("/v1") else base

    def upstream_path(self, endpoint: Endpoint, client_path: str) -> str:
        return self._prefix + client_path

    def auth_headers(self, api_key: str | None) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {api_key}")] if api_key else []

    def supports(self, endpoint: Endpoint) -> bool:
        return True
