"""The config for limits and budgets: per tenant, and per key (a key's own limits apply
on top of its tenant's, which every key of the tenant shares)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_COUNT = Annotated[int, Field(ge=1, le=10**12)]
_USD = Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]


class Limits(_Strict):
    requests_per_minute: _COUNT | None = None
    # Prompt + completion tokens of provider calls, reserved up front (estimated prompt
    # + max_tokens) and settled with the provider's usage.
    tokens_per_minute: _COUNT | None = None
    concurrent_requests: _COUNT | None = None


class Budget(_Strict):
    usd_per_day: _USD | None = None  # the UTC day
    usd_per_month: _USD | None = None  # the calendar month, UTC

    @property
    def any(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None


class LimitsConfig(_Strict):
    """How reservations are estimated (the limits themselves are per tenant and key)."""

    # Reserved for the completion when a request names no max_tokens.
    default_max_tokens: Annotated[int, Field(ge=1)] = 4096
    # Prompt tokens are estimated from the request's characters: this many per token.
    # Low on purpose: an overestimate is refunded when the answer's usage arrives.
    chars_per_token: Annotated[float, Field(gt=0, le=8)] = 3.0
