"""The interface every provider module implements (sans-IO)."""

from __future__ import annotations

from typing import Protocol

from edge_agent.api.openai import Endpoint
from edge_agent.config import Provider

# Credentials a client may send; none of them ever reaches a provider.
CLIENT_CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key", "x-goog-api-key")


class ProviderAdapter(Protocol):
    """How to address one provider: path, credentials, request body."""

    def upstream_path(self, endpoint: Endpoint, client_path: str) -> str: ...

    def auth_headers(self, api_key: str | None) -> list[tuple[str, str]]: ...

    def supports(self, endpoint: Endpoint) -> bool: ...


def build_adapter(provider: Provider) -> ProviderAdapter:
    from edge_agent.providers.registry import ADAPTERS

    return ADAPTERS[provider.type](provider)
