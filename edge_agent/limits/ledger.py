"""Limits and budgets, sans-IO: what one admission asks, what it is told, and the
in-process ledger that answers it. `redis_ledger.py` runs the same algorithm in Redis
(one Lua script per call) for every replica at once; the two are tested alike.

The algorithm, per scope (a tenant, or a key with limits of its own):
- requests per minute and tokens per minute are token buckets: capacity = the limit,
  refilled at limit/60 per second (a burst of the whole minute's allowance, then a
  steady rate; no window edge to game);
- concurrent requests are a set of request ids with a deadline (a crashed process
  cannot leak a slot for longer than that);
- budgets are the spend of the UTC day and month, reservations in flight included.

One admission per request, before the caches: the request and concurrency checks must
pass (cache hits count too); the tokens and cost estimated for a provider call are
reserved in the same step when they fit, and when they do not the request may still be
a cache hit, and is refused only if it reaches a provider. Settling (at the request's
end) refunds what was reserved and not used (all of it for a hit or an error), charges
the provider's reported usage, and frees the concurrency slot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

Reason = Literal["requests", "concurrency", "tokens", "budget_day", "budget_month"]


class LedgerUnavailable(Exception):
    """The shared ledger did not answer (the caller decides per process instead)."""


CONCURRENCY_TTL_S = 600.0  # a slot never outlives a request by more than this


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose limits: `name` is "t:<tenant>" or "k:<key id>"."""

    name: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    request_id: str
    scopes: tuple[Scope, ...]
    tokens: int  # estimated prompt + completion tokens, reserved for a provider call
    cost_usd: float  # their estimated cost
    now: float  # unix seconds


@dataclass(frozen=True, slots=True)
class Window:
    """One limit's state for the x-ratelimit-* headers."""

    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again


@dataclass(slots=True)
class Verdict:
    admitted: bool  # requests and concurrency passed (the slot is held)
    reserved: bool  # tokens and cost were reserved (a provider call may go)
    reason: Reason | None = None  # why not admitted, or why not reserved
    scope: str = ""  # whose limit
    retry_after_s: float = 0.0
    requests: Window | None = None  # the tightest scope's, for headers
    tokens: Window | None = None
    spent_day: dict[str, float] = field(default_factory=dict)  # scope → USD today


@dataclass(frozen=True, slots=True)
class Settle:
    request_id: str
    scopes: tuple[Scope, ...]
    charge: bool  # settle the reservation (tokens and cost) now
    tokens_refund: int  # reserved - used (negative: used more than reserved)
    cost_delta: float  # used - reserved, in USD
    now: float
    admitted_at: float  # the day and month the reservation was charged to
    release: bool = True  # free the concurrency slot (the request has ended)


def day_key(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


def month_key(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m")


def until_next_day(now: float) -> float:
    t = datetime.fromtimestamp(now, UTC)
    nxt = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return nxt.timestamp() - now


def until_next_month(now: float) -> float:
    t = datetime.fromtimestamp(now, UTC)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp() - now


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float

    def refill(self, capacity: int, now: float) -> float:
        rate = capacity / 60.0
        self.level = min(float(capacity), self.level + max(0.0, now - self.at) * rate)
        self.at = now
        return self.level


def window(capacity: int, level: float) -> Window:
    rate = capacity / 60.0
    return Window(capacity, max(0, math.floor(level)), max(0.0, (capacity - level) / rate))


class LocalLedger:
    """The ledger of one process (no Redis, or Redis down: then with `share` of each
    limit, this process's part of what all of them may do)."""

    def __init__(self) -> None:
        self._req: dict[str, _Bucket] = {}
        self._tok: dict[str, _Bucket] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._usd: dict[str, float] = {}  # "<scope>:d:<day>" / "<scope>:m:<month>" → USD

    def admit(self, ask: Ask, share: float = 1.0) -> Verdict:
        now = ask.now
        best_req: Window | None = None
        best_tok: Window | None = None
        for s in ask.scopes:
            if s.requests_per_minute:
                cap = _scaled(s.requests_per_minute, share)
                level = self._bucket(self._req, s.name, cap, now).refill(cap, now)
                if level < 1:
                    retry = (1 - level) / (cap / 60.0)
                    return Verdict(False, False, "requests", s.name, retry, window(cap, level))
                best_req = _tighter(best_req, window(cap, level - 1))
            if s.concurrent_requests:
                cap = _scaled(s.concurrent_requests, share)
                slots = self._slots.setdefault(s.name, {})
                for rid in [r for r, until in slots.items() if until <= now]:
                    del slots[rid]
                if len(slots) >= cap:
                    return Verdict(False, False, "concurrency", s.name, 1.0)
        reserved, reason, scope, retry = True, None, "", 0.0
        for s in ask.scopes:
            if s.tokens_per_minute and ask.tokens:
                cap = _scaled(s.tokens_per_minute, share)
                level = self._bucket(self._tok, s.name, cap, now).refill(cap, now)
                if level < ask.tokens and reserved:
                    reserved, reason, scope = False, "tokens", s.name
                    retry = (ask.tokens - level) / (cap / 60.0)
                best_tok = _tighter(best_tok, window(cap, level - ask.tokens))
            for limit, key, why, wait in (
                (s.usd_per_day, f"{s.name}:d:{day_key(now)}", "budget_day", until_next_day),
                (s.usd_per_month, f"{s.name}:m:{month_key(now)}", "budget_month", until_next_month),
            ):
                if limit and reserved and self._usd.get(key, 0.0) + ask.cost_usd > limit * share:
                    reserved, reason, scope, retry = False, why, s.name, wait(now)  # type: ignore[assignment]
        # Passed: take the request and the slot; the reservation only when it fits.
        for s in ask.scopes:
            if s.requests_per_minute:
                self._req[s.name].level -= 1
            if s.concurrent_requests:
                self._slots[s.name][ask.request_id] = now + CONCURRENCY_TTL_S
            if reserved and s.tokens_per_minute and ask.tokens:
                self._tok[s.name].level -= ask.tokens
            if reserved:
                self._charge(s, ask.cost_usd, now)
        spent = {s.name: self._usd.get(f"{s.name}:d:{day_key(now)}", 0.0) for s in ask.scopes}
        return Verdict(True, reserved, reason, scope, retry, best_req, best_tok, spent)

    def settle(self, settle: Settle, share: float = 1.0) -> None:
        now = settle.now
        for s in settle.scopes:
            if s.concurrent_requests and settle.release:
                self._slots.get(s.name, {}).pop(settle.request_id, None)
            if not settle.charge:
                continue
            if s.tokens_per_minute and settle.tokens_refund:
                cap = _scaled(s.tokens_per_minute, share)
                bucket = self._bucket(self._tok, s.name, cap, now)
                bucket.refill(cap, now)
                bucket.level = min(float(cap), bucket.level + settle.tokens_refund)
            self._charge(s, settle.cost_delta, settle.admitted_at)

    def spent(self, scope: str, now: float) -> tuple[float, float]:
        """(USD today, USD this month) for `scope`, reservations in flight included."""
        return (
            self._usd.get(f"{scope}:d:{day_key(now)}", 0.0),
            self._usd.get(f"{scope}:m:{month_key(now)}", 0.0),
        )

    def _charge(self, s: Scope, usd: float, now: float) -> None:
        if not usd or not (s.usd_per_day or s.usd_per_month):
            return
        for key in (f"{s.name}:d:{day_key(now)}", f"{s.name}:m:{month_key(now)}"):
            self._usd[key] = max(0.0, self._usd.get(key, 0.0) + usd)

    @staticmethod
    def _bucket(store: dict[str, _Bucket], name: str, cap: int, now: float) -> _Bucket:
        bucket = store.get(name)
        if bucket is None:
            bucket = store[name] = _Bucket(float(cap), now)
        return bucket


def _scaled(limit: int, share: float) -> int:
    return max(1, math.floor(limit * share)) if share < 1 else limit


def _tighter(a: Window | None, b: Window) -> Window:
    return b if a is None or b.remaining < a.remaining else a


def scopes_of(items: Iterable[Scope | None]) -> tuple[Scope, ...]:
    """The scopes that limit anything."""
    return tuple(
        s
        for s in items
        if s is not None
        and any(
            (
                s.requests_per_minute,
                s.tokens_per_minute,
                s.concurrent_requests,
                s.usd_per_day,
                s.usd_per_month,
            )
        )
    )
