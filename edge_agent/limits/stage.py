"""Stages: admission against the caller's limits and budgets (before the caches; cache
hits count as requests), the gate before a provider call (the tokens and cost must have
been reserved), and settlement when the request ends.

Refusals are 429s in the client's schema with the headers OpenAI's API sends
(`x-ratelimit-*`, `retry-after`), so the official SDKs back off by themselves; an
exhausted budget is `insufficient_quota`. Successful answers carry the same headers.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint
from edge_agent.limits.ledger import Ask, Scope, Settle, Verdict, Window
from edge_agent.limits.spend import Spent
from edge_agent.pipeline.effects import Effect
from edge_agent.routing.strategies import estimate_tokens
from edge_agent.translate.common import requested_max_tokens

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.extproc.exchange import Exchange

_ids = itertools.count(1)
_PREFIX = f"{os.getpid():x}-{secrets.token_hex(4)}-"


@dataclass(frozen=True, slots=True)
class Admission:
    ask: Ask
    verdict: Verdict
    local: bool  # decided by this process's ledger (settled there too)


@dataclass(frozen=True, slots=True)
class Admit(Effect):
    """Admit `ask` against the ledger: (Verdict, decided locally)."""

    ask: Ask

    async def perform(self, agent: Agent) -> Any:
        assert agent.limiter is not None
        return await agent.limiter.admit(self.ask)


def admit(ex: Exchange) -> Generator[Effect, Any, None]:
    limiter = ex.agent.limiter
    assert limiter is not None and ex.request is not None
    scopes = limiter.scopes(ex.caller)
    if not scopes:
        return
    tokens, cost = estimate(ex)
    ask = Ask(f"{_PREFIX}{next(_ids)}", scopes, tokens, cost, limiter.clock())
    verdict, local = yield Admit(ask)
    ex.limit = Admission(ask, verdict, local)
    ex.ratelimit_headers = ratelimit_headers(verdict)
    if not verdict.admitted:
        raise refusal(ex, verdict)
    limiter.note_spend(verdict, scopes)


def gate(ex: Exchange) -> None:
    """Before a provider call: the request's tokens and cost must be reserved."""
    admission = ex.limit
    if admission is not None and not admission.verdict.reserved:
        raise refusal(ex, admission.verdict)


def settle(ex: Exchange, *, release: bool) -> None:
    """Settle the reservation once the answer's usage is known (refund what was not
    used, charge the provider's usage), before the client has all of it; `release`:
    the request has ended, free its concurrency slot (a stream still flowing keeps it)."""
    admission = ex.limit
    limiter = ex.agent.limiter
    if admission is None or limiter is None or not admission.verdict.admitted:
        ex.limit = None
        return
    if release:
        ex.limit = None
    charge = admission.verdict.reserved and not ex.limit_charged
    if not charge and not release:
        return
    ex.limit_charged = True
    ask = admission.ask
    refund, delta = _settlement(ex, ask) if charge else (0, 0.0)
    limiter.settle_later(
        Settle(
            ask.request_id, ask.scopes, charge, refund, delta, limiter.clock(), ask.now, release
        ),
        admission.local,
    )


def _settlement(ex: Exchange, ask: Ask) -> tuple[int, float]:
    """(tokens to refund, USD to add) for a reserved request."""
    sent = ex.target is not None and ex.sent_at > 0
    if ex.status == "200" and ex.target is not None:
        used = answer_usage(ex)
        if used is None:
            return 0, 0.0  # usage unknown (a stream nobody read): the reservation stands
        return ask.tokens - used[0] - used[1], used[2] - ask.cost_usd
    if ex.status in (None, "aborted") and sent:
        # Sent, then the client went away: the provider may well bill it.
        return 0, 0.0
    return ask.tokens, -ask.cost_usd  # a cache hit, a refusal or an error: nothing used


def answer_usage(ex: Exchange) -> tuple[int, int, float] | None:
    """The answer's (input tokens, output tokens, USD), if known: the exchange's own
    provider call, or on a failover chain the attempt that answered (read upstream,
    taken once and kept on the exchange)."""
    used = ex.used if ex.used is not None else (ex.call.used if ex.call else None)
    if used is None and ex.chained:
        used = ex.used = ex.agent.attempts.take_usage(ex.attempt_key)
    return used


def record_spend(ex: Exchange) -> None:
    """Every request of an identified caller: its tokens, cost and savings, by tenant,
    key and model (GET /admin/spend)."""
    limiter = ex.agent.limiter
    if limiter is None or ex.request is None or ex.status is None:
        return
    used = answer_usage(ex)
    if used is None and not ex.saved_usd:
        if not ex.status.startswith("2"):
            return  # refused or failed: nothing was spent or saved
        used = (0, 0, 0.0)
    key = ex.caller.key.name if ex.caller.key is not None else "-"
    input_tokens, output_tokens, cost = used or (0, 0, 0.0)
    spent = Spent(ex.caller.tenant, key, ex.model, input_tokens, output_tokens, cost, ex.saved_usd)
    limiter.spend.record(spent, limiter.clock())


def estimate(ex: Exchange) -> tuple[int, float]:
    """(tokens, USD) to reserve: the prompt estimated from the request's size, plus the
    completion it allows (max_tokens, or the configured default), at the prices of the
    model's first target."""
    agent = ex.agent
    assert agent.limiter is not None and ex.request is not None
    cfg = agent.limiter.estimates
    body = ex.request.body
    prompt = estimate_tokens(len(ex.raw), cfg.chars_per_token)
    if ex.request.endpoint is Endpoint.EMBEDDINGS:
        completion = 0
    else:
        asked = requested_max_tokens(body)
        per_choice = asked if isinstance(asked, int) and asked > 0 else cfg.default_max_tokens
        completion = per_choice * max(1, ex.request.n)
    target = agent.router.first_target(ex.model)
    price = target.provider.model(target.model) if target is not None else None
    cost = price.cost_usd(prompt, completion) if price is not None else 0.0
    return prompt + completion, cost


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "17s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def ratelimit_headers(verdict: Verdict) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for kind, w in (("requests", verdict.requests), ("tokens", verdict.tokens)):
        if isinstance(w, Window):
            out += [
                (f"x-ratelimit-limit-{kind}", str(w.limit)),
                (f"x-ratelimit-remaining-{kind}", str(w.remaining)),
                (f"x-ratelimit-reset-{kind}", _duration(w.reset_s)),
            ]
    return out


def _whose(ex: Exchange, scope: str) -> str:
    kind, _, name = scope.partition(":")
    if kind == "k" and ex.caller.key is not None:
        return f"key {ex.caller.key.name!r}"
    return f"tenant {name!r}"


def refusal(ex: Exchange, verdict: Verdict) -> ApiError:
    limiter = ex.agent.limiter
    assert limiter is not None
    reason = verdict.reason or "requests"
    limiter.metrics.limit_refusals.labels(ex.tenant_label, reason).inc()
    retry = max(1, math.ceil(verdict.retry_after_s))
    # The x-ratelimit-* headers are the exchange's (ex.ratelimit_headers, set by admit
    # from this verdict): every answer carries them, a refusal too.
    headers = (("retry-after", str(retry)),)
    whose = _whose(ex, verdict.scope)
    scope = _scope(ex, verdict.scope)
    if reason in ("budget_day", "budget_month"):
        daily = reason == "budget_day"
        limit = (scope.usd_per_day if daily else scope.usd_per_month) if scope else None
        resets = datetime.fromtimestamp(limiter.clock() + verdict.retry_after_s, UTC)
        return ApiError(
            429,
            f"The {'daily' if daily else 'monthly'} budget of {whose}"
            + (f" (${limit:g} per UTC {'day' if daily else 'month'})" if limit else "")
            + f" is spent; it resets at {resets:%Y-%m-%d %H:%M} UTC.",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=headers,
        )
    tpm = scope.tokens_per_minute if scope is not None else None
    asked = ex.limit.ask.tokens if ex.limit is not None else 0
    if reason == "tokens" and tpm is not None and asked > tpm:
        # It can never fit: say what to change rather than when to retry.
        return ApiError(
            429,
            f"Request too large for {whose}: it reserves {asked} tokens (its prompt and "
            f"max_tokens), more than the {tpm} tokens per minute allowed; lower max_tokens "
            "or shorten the prompt.",
            type="tokens",
            code="rate_limit_exceeded",
        )
    what = {
        "requests": "requests per minute",
        "tokens": "tokens per minute (this request reserves its prompt and max_tokens)",
        "concurrency": "concurrent requests",
    }[reason]
    return ApiError(
        429,
        f"Rate limit reached for {whose} on {what}; try again in {retry} s.",
        type="tokens" if reason == "tokens" else "requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


def _scope(ex: Exchange, name: str) -> Scope | None:
    admission = ex.limit
    if admission is None:
        return None
    return next((s for s in admission.ask.scopes if s.name == name), None)
