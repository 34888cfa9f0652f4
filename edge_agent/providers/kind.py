"""What a provider type declares: its names, adapter, own config keys, checks, capabilities.

Each provider module declares its `ProviderType` (openai.py two: OpenAI's own types and
the hosted APIs that speak its format); `registry.py` lists them, and the config model
and the router ask them. Nothing here imports the config at run time: the config imports
the registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator

if TYPE_CHECKING:
    from edge_agent.config import Provider
    from edge_agent.providers.base import ProviderAdapter


def _env_var_name(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
        raise ValueError(f"expected an environment variable name, got {v!r}")
    return v


# A secret is named by the variable that holds it, never written in the config.
EnvVarName = Annotated[str, AfterValidator(_env_var_name)]

_HEADER_VALUE_RE = re.compile(r"[\x21-\x7e]+")


def read_secret(environ: Mapping[str, str], var: str, what: str) -> tuple[str | None, str | None]:
    """(value, problem): a secret from `var`, or why it is unusable ("its {what} variable
    ... is not set"). Surrounding whitespace is dropped (file-mounted secrets often end in a
    newline); anything else Envoy would refuse in a header value makes it unusable."""
    value = (environ.get(var) or "").strip()
    if not value:
        return None, f"its {what} variable {var} is not set"
    if not _HEADER_VALUE_RE.fullmatch(value):
        return None, f"the value of {var} contains characters not allowed in an HTTP header"
    return value, None


def _no_check(provider: Provider) -> None:
    return None


def _no_credentials(provider: Provider, environ: Mapping[str, str]) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class ProviderType:
    # The `type` values of the config that mean this type (the first names it in messages).
    names: tuple[str, ...]
    # Builds the adapter for one configured provider (environ: secrets it reads itself).
    adapter: Callable[[Provider, Mapping[str, str]], ProviderAdapter]
    # Keys only this type takes, flat on the provider entry: name → type (pydantic
    # annotation). Each is optional (None when absent) and refused on every other type.
    fields: Mapping[str, Any] = field(default_factory=dict)
    # Checks across its keys once they are valid each; raises ValueError ("key: why" names
    # the key in the config error).
    check: Callable[[Provider], None] = _no_check
    # Why its own credential variables are unusable, asked when `api_key_env` is not set.
    credential_problem: Callable[[Provider, Mapping[str, str]], str | None] = _no_credentials
    # Capabilities of the type itself (a model's come from the config's `capabilities`):
    # whether OpenAI's JSON mode (`response_format`) has a form in its API.
    json_mode: bool = True
