"""Provider type → adapter class. Adding a provider is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.config import Provider
from edge_agent.providers.anthropic import AnthropicAdapter
from edge_agent.providers.base import ProviderAdapter
from edge_agent.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Callable[[Provider], ProviderAdapter]] = {
    "openai": OpenAIAdapter,
    "openai_compatible": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
}
