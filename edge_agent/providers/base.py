"""The interface every provider module implements (sans-IO)."""

from __future__ import annotations

from typing import Literal, Protocol

from edge_agent.api.openai import Endpoint
from edge_agent.config import Provider

#: The wire schemas the agent translates between (api/translate.py).
Schema = Literal["openai", "anthropic"]

# What a client may send that must never reach a provider under the gateway's key:
# credentials, and headers that pick the account the key is billed to.
CLIENT_ONLY_HEADERS = (
    "authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "openai-organization",
    "openai-project",
    "anthropic-version",
    "cookie",
)
# What a provider answers about the gateway's account that clients have no business seeing.
PROVIDER_ONLY_HEADERS = (
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
    "set-cookie",
)


class ProviderAdapter(Protocol):
    """How to address one provider: its schema, paths and credentials."""

    schema: Schema
    endpoints: frozenset[Endpoint]  # what it serves in its own schema

    def upstream_path(self, endpoint: Endpoint, model: str, query: str = "") -> str:
        """The provider's path for `endpoint` (an endpoint of the provider's schema)."""
        ...

    def auth_headers(self, api_key: str | None) -> list[tuple[str, str]]: ...


def build_adapter(provider: Provider) -> ProviderAdapter:
    from edge_agent.providers.registry import ADAPTERS

    return ADAPTERS[provider.type](provider)
