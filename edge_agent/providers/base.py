"""The interface every provider module implements (sans-IO)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge_agent.api.openai import Endpoint
from edge_agent.providers.headers import CLIENT_ONLY_HEADERS, PROVIDER_ONLY_HEADERS
from edge_agent.translate.stream import StreamTranslator

__all__ = ["CLIENT_ONLY_HEADERS", "PROVIDER_ONLY_HEADERS"]

#: The wire schemas: "openai" is the pivot every other one translates to and from.
Schema = str


class ProviderCodec(Protocol):
    """A provider schema ⇄ the OpenAI chat format (the pivot), sans-IO.

    Requests that cannot be expressed raise `ApiError` (400, naming the field); answers
    and streams come back as OpenAI chat completions / chunks with usage.
    """

    def request_from_chat(self, chat: dict[str, Any], model: str) -> dict[str, Any]: ...

    def response_to_chat(self, body: dict[str, Any], model: str) -> dict[str, Any]: ...

    def stream_to_chat(self, model: str, include_usage: bool) -> StreamTranslator: ...

    def error_to_chat(self, status: int, body: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Codec:
    """A ProviderCodec made of one schema's four translation functions."""

    request_from_chat: Callable[[dict[str, Any], str], dict[str, Any]]
    response_to_chat: Callable[[dict[str, Any], str], dict[str, Any]]
    stream_to_chat: Callable[[str, bool], StreamTranslator]
    error_to_chat: Callable[[int, bytes], bytes]


class ProviderAdapter(Protocol):
    """How to address one provider: its schema, paths and credentials."""

    schema: Schema
    endpoints: frozenset[Endpoint]  # what it serves in its own schema, untranslated
    codec: ProviderCodec | None  # None for the pivot schema (openai)

    def upstream_path(
        self, endpoint: Endpoint, model: str, query: str = "", stream: bool = False
    ) -> str:
        """The provider's path for `endpoint` (chat for codec providers)."""
        ...

    def auth_headers(
        self, api_key: str | None, *, path: str = "", body: bytes = b""
    ) -> list[tuple[str, str]]:
        """Credential headers; signing schemes see the final path and body."""
        ...
