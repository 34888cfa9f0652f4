"""Limits and budgets: one algorithm, two ledgers (in-process, and Redis through one Lua
script per call), held to the same tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from edge_agent.limits.ledger import Ask, LocalLedger, Scope, Settle, Verdict
from edge_agent.limits.redis_ledger import RedisLedger

NOW = 1_800_000_000.0  # 2027-01-15, mid-day UTC
_ids = itertools.count()


class Ledger:
    """Both ledgers behind one async face."""

    def __init__(self, inner: LocalLedger | RedisLedger) -> None:
        self.inner = inner

    async def admit(self, ask: Ask) -> Verdict:
        if isinstance(self.inner, LocalLedger):
            return self.inner.admit(ask)
        return await self.inner.admit(ask)

    async def settle(self, settle: Settle) -> None:
        if isinstance(self.inner, LocalLedger):
            self.inner.settle(settle)
        else:
            await self.inner.settle(settle)


@pytest.fixture(params=["local", "redis"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    if request.param == "local":
        yield Ledger(LocalLedger())
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("prefix")
    client = aioredis.Redis.from_url(url)
    try:
        yield Ledger(RedisLedger(client, prefix))
    finally:
        await client.aclose()


def ask(*scopes: Scope, tokens: int = 0, cost: float = 0.0, now: float = NOW) -> Ask:
    return Ask(f"r{next(_ids)}", scopes, tokens, cost, now)


def settle(a: Ask, v: Verdict, used: int, cost: float, now: float = NOW) -> Settle:
    return Settle(
        a.request_id, a.scopes, v.reserved, a.tokens - used, cost - a.cost_usd, now, a.now
    )


async def test_requests_per_minute_is_a_bucket_of_the_minutes_allowance(ledger: Ledger) -> None:
    s = Scope("k:one", requests_per_minute=5)
    verdicts = [await ledger.admit(ask(s)) for _ in range(6)]
    assert [v.admitted for v in verdicts] == [True] * 5 + [False]
    refused = verdicts[-1]
    assert refused.reason == "requests" and refused.scope == "k:one"
    assert 11 < refused.retry_after_s <= 12  # one request refills in 60/5 s
    assert verdicts[0].requests is not None
    assert (verdicts[0].requests.limit, verdicts[0].requests.remaining) == (5, 4)
    assert verdicts[4].requests is not None and verdicts[4].requests.remaining == 0
    # 12 s later one more fits.
    assert (await ledger.admit(ask(s, now=NOW + 12.1))).admitted


async def test_concurrency_holds_a_slot_until_settled(ledger: Ledger) -> None:
    s = Scope("t:c", concurrent_requests=2)
    a1, a2, a3 = ask(s), ask(s), ask(s)
    v1, v2 = await ledger.admit(a1), await ledger.admit(a2)
    assert v1.admitted and v2.admitted
    v3 = await ledger.admit(a3)
    assert not v3.admitted and v3.reason == "concurrency"
    await ledger.settle(settle(a1, v1, 0, 0.0))
    assert (await ledger.admit(ask(s))).admitted


async def test_tokens_are_reserved_up_front_and_the_rest_refunded(ledger: Ledger) -> None:
    s = Scope("t:tok", tokens_per_minute=1000)
    big = ask(s, tokens=800)
    v = await ledger.admit(big)
    assert v.admitted and v.reserved and v.tokens is not None and v.tokens.remaining == 200
    # Another 800 cannot fit: admitted (it may still be a cache hit), not reserved.
    second = await ledger.admit(ask(s, tokens=800))
    assert second.admitted and not second.reserved and second.reason == "tokens"
    assert second.retry_after_s > 0
    # The first answer was short: 50 used, 750 back at once.
    await ledger.settle(settle(big, v, 50, 0.0))
    assert (await ledger.admit(ask(s, tokens=800))).reserved


async def test_budgets_count_reservations_and_settle_to_the_real_cost(ledger: Ledger) -> None:
    s = Scope("t:b", usd_per_day=1.0, usd_per_month=10.0)
    a = ask(s, cost=0.6)
    v = await ledger.admit(a)
    assert v.reserved and v.spent_day["t:b"] == pytest.approx(0.6)
    refused = await ledger.admit(ask(s, cost=0.6))
    assert refused.admitted and not refused.reserved and refused.reason == "budget_day"
    assert 0 < refused.retry_after_s <= 86400  # until the next UTC day
    await ledger.settle(settle(a, v, 10, 0.1))  # it cost 0.1 in the end
    again = await ledger.admit(ask(s, cost=0.6))
    assert again.reserved and again.spent_day["t:b"] == pytest.approx(0.7)
    month = Scope("t:m", usd_per_month=0.5)
    assert (await ledger.admit(ask(month, cost=0.4))).reserved
    over = await ledger.admit(ask(month, cost=0.4))
    assert over.reason == "budget_month"


async def test_every_scope_must_pass_and_nothing_is_taken_when_one_refuses(
    ledger: Ledger,
) -> None:
    tenant = Scope("t:both", requests_per_minute=10)
    key = Scope("k:both", requests_per_minute=1)
    assert (await ledger.admit(ask(tenant, key))).admitted
    refused = await ledger.admit(ask(tenant, key))
    assert not refused.admitted and refused.scope == "k:both"
    # The refusal took nothing from the tenant: 8 more fit besides the first.
    assert sum([(await ledger.admit(ask(tenant))).admitted for _ in range(10)]) == 9


async def test_an_unreserved_or_failed_request_is_never_charged(ledger: Ledger) -> None:
    s = Scope("t:err", tokens_per_minute=100, usd_per_day=1.0)
    a = ask(s, tokens=100, cost=0.9)
    v = await ledger.admit(a)
    await ledger.settle(settle(a, v, 0, 0.0))  # the provider failed: everything back
    b = ask(s, tokens=100, cost=0.9)
    assert (await ledger.admit(b)).reserved


async def test_no_lost_updates_under_concurrency(ledger: Ledger) -> None:
    s = Scope("t:race", requests_per_minute=20)
    verdicts = await asyncio.gather(*(ledger.admit(ask(s)) for _ in range(50)))
    assert sum(v.admitted for v in verdicts) == 20


@pytest.mark.redis
async def test_two_processes_share_one_window(redis_url: str, prefix: str) -> None:
    clients: list[Any] = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        one, two = (RedisLedger(c, prefix) for c in clients)
        s = Scope("k:shared", requests_per_minute=8)
        results = [await one.admit(ask(s)) for _ in range(5)]
        results += [await two.admit(ask(s)) for _ in range(5)]
        assert sum(not v.admitted for v in results) == 2
    finally:
        for c in clients:
            await c.aclose()


async def test_a_reservation_is_settled_on_the_day_it_was_charged_to(ledger: Ledger) -> None:
    s = Scope("t:midnight", usd_per_day=10.0)
    before_midnight = 1_800_057_599.0  # 2027-01-15 23:59:59 UTC
    a = ask(s, cost=2.0, now=before_midnight)
    v = await ledger.admit(a)
    await ledger.settle(settle(a, v, 0, 0.5, now=before_midnight + 10))
    next_day = await ledger.admit(ask(s, cost=9.6, now=before_midnight + 20))
    # The next day starts from nothing; the first day kept its real cost, 0.5, so 9.4
    # more fits in it (it would not if the refund had gone to the next day).
    assert next_day.reserved and next_day.spent_day["t:midnight"] == pytest.approx(9.6)
    same_day = await ledger.admit(ask(s, cost=9.4, now=before_midnight - 5))
    assert same_day.reserved and same_day.spent_day["t:midnight"] == pytest.approx(9.9)


@pytest.mark.redis
async def test_a_token_debt_outlives_the_usual_key_expiry(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        ledger = RedisLedger(client, prefix)
        s = Scope("t:debt", tokens_per_minute=1000)
        a = ask(s, tokens=1000)
        v = await ledger.admit(a)
        await ledger.settle(settle(a, v, 3000, 0.0))  # used 3000: a debt of 2000
        ttl_ms = await client.pttl(f"{{{prefix}:rl}}:t:debt:tok")
        assert ttl_ms > 180_000  # until it is full again (~3 min), not 2 min
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_spend_is_summed_then_written_to_redis_in_one_go(redis_url: str, prefix: str) -> None:
    from edge_agent.limits.spend import SpendBook, Spent

    client = aioredis.Redis.from_url(redis_url)
    try:
        writer, reader = SpendBook(), SpendBook()
        writer.attach(client, prefix)
        reader.attach(client, prefix)
        for _ in range(3):
            writer.record(Spent("t", "k", "m", 10, 5, 0.25), NOW)
        writer.record(Spent("t", "-", "m", 0, 0, 0.0, saved_usd=0.1), NOW)
        await writer.flush()
        rows = await reader.report(["t"], None, NOW, NOW)  # another process's view
        by_key = {r["key"]: r for r in rows}
        assert by_key["k"]["requests"] == 3 and by_key["k"]["input_tokens"] == 30
        assert by_key["k"]["cost_usd"] == pytest.approx(0.75)
        assert by_key["-"]["saved_usd"] == pytest.approx(0.1)
        assert (await reader.report(["t"], "k", NOW, NOW))[0]["key"] == "k"
        await writer.close()
    finally:
        await client.aclose()
