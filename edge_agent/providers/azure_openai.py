"""Azure OpenAI: OpenAI's wire format under deployment paths, with an `api-key` header.

The target's model name is the *deployment* name (`azure/my-gpt4o-deployment`); requests
go to `{base}/openai/deployments/{deployment}/{operation}?api-version=...`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

from pydantic import Field

from edge_agent.api.openai import Endpoint
from edge_agent.providers.base import Schema
from edge_agent.providers.kind import ProviderType

if TYPE_CHECKING:
    from edge_agent.config import Provider

#: A GA data-plane version; override per provider with `api_version`.
DEFAULT_API_VERSION = "2024-10-21"
_OPERATIONS = {
    Endpoint.CHAT: "chat/completions",
    Endpoint.COMPLETIONS: "completions",
    Endpoint.EMBEDDINGS: "embeddings",
}


class AzureOpenAIAdapter:
    schema: Schema = "openai"
    codec = None
    endpoints = frozenset(_OPERATIONS)

    def __init__(self, provider: Provider, environ: Mapping[str, str] | None = None) -> None:
        # base_url is the resource endpoint, https://<resource>.openai.azure.com
        self._base = provider.base_path.removesuffix("/openai")
        self._version = provider.api_version or DEFAULT_API_VERSION

    def upstream_path(
        self, endpoint: Endpoint, model: str, query: str = "", stream: bool = False
    ) -> str:
        path = f"{self._base}/openai/deployments/{quote(model, safe='')}/{_OPERATIONS[endpoint]}"
        extra = f"&{query}" if query else ""
        return f"{path}?api-version={quote(self._version, safe='')}{extra}"

    def auth_headers(
        self, api_key: str | None, *, path: str = "", body: bytes = b""
    ) -> list[tuple[str, str]]:
        return [("api-key", api_key)] if api_key else []


AZURE_OPENAI = ProviderType(
    names=("azure_openai",),
    adapter=AzureOpenAIAdapter,
    # The data-plane api-version query (default DEFAULT_API_VERSION).
    fields={
        "api_version": Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$")]
    },
)
