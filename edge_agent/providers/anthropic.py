"""Anthropic's Messages API (api.anthropic.com, or any server speaking it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from edge_agent.api.anthropic import ANTHROPIC_VERSION
from edge_agent.api.openai import Endpoint
from edge_agent.providers.base import Codec, Schema
from edge_agent.providers.kind import ProviderType
from edge_agent.translate import anthropic as to_anthropic
from edge_agent.translate import anthropic_stream

if TYPE_CHECKING:
    from edge_agent.config import Provider

#: Messages ⇄ OpenAI chat (the mapping itself is in translate/anthropic.py).
CODEC = Codec(
    request_from_chat=to_anthropic.chat_to_messages,
    response_to_chat=to_anthropic.message_to_completion,
    stream_to_chat=anthropic_stream.MessagesStreamToChat,
    error_to_chat=to_anthropic.error_to_openai,
)


class AnthropicAdapter:
    schema: Schema = "anthropic"
    endpoints = frozenset({Endpoint.MESSAGES})
    codec = CODEC

    def __init__(self, provider: Provider, environ: Mapping[str, str] | None = None) -> None:
        # base_url is what you would give the Anthropic SDK: a host, without /v1.
        self._base = provider.base_path.removesuffix("/v1")

    def upstream_path(
        self, endpoint: Endpoint, model: str, query: str = "", stream: bool = False
    ) -> str:
        path = f"{self._base}/v1/messages"
        return f"{path}?{query}" if query else path

    def auth_headers(
        self, api_key: str | None, *, path: str = "", body: bytes = b""
    ) -> list[tuple[str, str]]:
        headers = [("anthropic-version", ANTHROPIC_VERSION)]
        if api_key:
            headers.append(("x-api-key", api_key))
        return headers


# Messages has no JSON output mode to translate response_format to.
ANTHROPIC = ProviderType(names=("anthropic",), adapter=AnthropicAdapter, json_mode=False)
