"""The interface every provider module implements (sans-IO)."""

from __future__ import annotations

from typing import Protocol

from edge_agent.api.openai import Endpoint
from edge_agent.config import Provider

# What a client may send that must never reach a provider under the gateway's key:
# credentials, and headers that pick the account the key is billed to.
CLIENT_ONLY_HEADERS = (
    "authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "openai-organization",
    "openai-project",
    "cookie",
)
# What a provider answers about the gateway's account that clients have no business seeing.
PROVIDER_ONLY_HEADERS = ("openai-organization", "openai-project", "set-cookie")


class ProviderAdapter(Protocol):
    """How to address one provider: path, credentials, request body."""

    def upstream_path(self, endpoint: Endpoint, client_path: str, query: str = "") -> str: ...

    def auth_headers(self, api_key: str | None) -> list[tuple[str, str]]: ...


def build_adapter(provider: Provider) -> ProviderAdapter:
    from edge_agent.providers.registry import ADAPTERS

    return ADAPTERS[provider.type](provider)
