"""The provider types. Adding one is one module (its `ProviderType`) and one line here.

The config takes its list of types and their own keys from here; the router asks a
target's type what it can do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge_agent.providers import anthropic, azure_openai, bedrock, cohere, gemini, openai
from edge_agent.providers.base import ProviderAdapter
from edge_agent.providers.kind import ProviderType

if TYPE_CHECKING:
    from edge_agent.config import Provider

# In the order the config's messages list them.
TYPES: tuple[ProviderType, ...] = (
    openai.OPENAI,
    anthropic.ANTHROPIC,
    azure_openai.AZURE_OPENAI,
    openai.HOSTED,
    cohere.COHERE,
    gemini.GEMINI,
    bedrock.BEDROCK,
)
# Types the config contract knows but this version does not implement: refused with a
# clear message instead of half-working.
PLANNED: tuple[str, ...] = ()

_BY_NAME: dict[str, ProviderType] = {name: kind for kind in TYPES for name in kind.names}
#: Every implemented `type` value.
NAMES: tuple[str, ...] = tuple(_BY_NAME)


def provider_type(name: str) -> ProviderType:
    return _BY_NAME[name]


def owners(key: str) -> list[str]:
    """The types that take a type-specific config key (the first name of each)."""
    return [kind.names[0] for kind in TYPES if key in kind.fields]


def config_fields() -> dict[str, Any]:
    """Every type's own keys as optional pydantic fields, in declaration order."""
    out: dict[str, Any] = {}
    for kind in TYPES:
        for key, annotation in kind.fields.items():
            out.setdefault(key, (annotation | None, None))
    return out


def build_adapter(provider: Provider, environ: Mapping[str, str] | None = None) -> ProviderAdapter:
    """The adapter for a provider; `environ` holds secrets beyond `api_key_env` (bedrock)."""
    return provider_type(provider.type).adapter(provider, environ or {})
