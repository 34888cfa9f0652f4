"""Google's Gemini API, native `generateContent` (generativelanguage.googleapis.com).

Not the OpenAI-compatibility endpoint: the native API is the one with every feature
(thought signatures, usage details, safety feedback) and the one Google documents first.
Clients reach it only through the OpenAI chat pivot; the mapping lives here, sans-IO.

Choices worth knowing (each refuses with a 400 rather than silently changing an answer):
- `n > 1`, logprobs, logit_bias, audio output, predicted outputs, `reasoning_effort`
  (model-dependent on Gemini) and `parallel_tool_calls: false` have no counterpart;
- JSON schemas (response_format and tool parameters) must fit Gemini's Schema subset;
  `additionalProperties: false` is accepted (Gemini only ever emits declared
  properties), local `$ref`s into `$defs` are inlined, anything else is refused;
- an https image URL becomes `fileData` (Gemini fetches public and signed URLs) when the
  URL's extension names the image type, because `fileData.mimeType` is required;
- thought signatures ride in `tool_calls[].extra_content.google.thought_signature`
  (the convention of Google's own OpenAI layer); calls without one get the documented
  `skip_thought_signature_validator` sentinel so Gemini 3 accepts foreign histories.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

from edge_agent.api.openai import Endpoint
from edge_agent.providers.base import Schema
from edge_agent.providers.kind import ProviderType
from edge_agent.translate.gemini import CODEC

if TYPE_CHECKING:
    from edge_agent.config import Provider


class GeminiAdapter:
    schema: Schema = "gemini"
    endpoints: frozenset[Endpoint] = frozenset()  # clients reach it only through translation
    codec = CODEC

    def __init__(self, provider: Provider, environ: Mapping[str, str] | None = None) -> None:
        # base_url as Google's docs give it (a host), optionally with a prefix or /v1beta.
        self._base = provider.base_path.removesuffix("/v1beta")

    def upstream_path(
        self, endpoint: Endpoint, model: str, query: str = "", stream: bool = False
    ) -> str:
        # The client's query is not forwarded: Gemini's only query parameters are `alt`
        # and `key`, and a client must never choose the credential.
        name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        path = f"{self._base}/v1beta/{quote(name, safe='/')}"
        return f"{path}:streamGenerateContent?alt=sse" if stream else f"{path}:generateContent"

    def auth_headers(
        self, api_key: str | None, *, path: str = "", body: bytes = b""
    ) -> list[tuple[str, str]]:
        return [("x-goog-api-key", api_key)] if api_key else []


GEMINI = ProviderType(names=("gemini",), adapter=GeminiAdapter)
