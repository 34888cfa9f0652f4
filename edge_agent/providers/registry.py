"""Provider type → adapter class. Adding a provider is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edge_agent.config import Provider
from edge_agent.providers.anthropic import AnthropicAdapter
from edge_agent.providers.azure_openai import AzureOpenAIAdapter
from edge_agent.providers.base import ProviderAdapter
from edge_agent.providers.bedrock import BedrockAdapter
from edge_agent.providers.cohere import CohereAdapter
from edge_agent.providers.gemini import GeminiAdapter
from edge_agent.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Callable[[Provider, Mapping[str, str]], ProviderAdapter]] = {
    "openai": OpenAIAdapter,
    "openai_compatible": OpenAIAdapter,
    # Hosted APIs that speak OpenAI's chat wire format with Bearer keys; base_url as in
    # their docs: https://api.mistral.ai/v1, https://api.groq.com/openai/v1,
    # https://api.together.xyz/v1.
    "mistral": OpenAIAdapter,
    "groq": OpenAIAdapter,
    "together": OpenAIAdapter,
    "azure_openai": AzureOpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "cohere": CohereAdapter,
    "gemini": GeminiAdapter,
    "bedrock": BedrockAdapter,
}


def build_adapter(provider: Provider, environ: Mapping[str, str] | None = None) -> ProviderAdapter:
    """The adapter for a provider; `environ` holds secrets beyond `api_key_env` (bedrock)."""
    return ADAPTERS[provider.type](provider, environ or {})
