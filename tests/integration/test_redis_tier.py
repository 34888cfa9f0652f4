"""The shared tier against a real Redis: sync between replicas, TTL, warm start, leases,
purge, and the breaker when Redis dies and comes back.

Needs Redis at $EDGE_AGENT_REDIS_URL (default redis://127.0.0.1:6379/0) and, for the
outage tests, the `redis-server` binary (a private server on a free port). Without them
these tests skip; with EDGE_AGENT_REQUIRE_REDIS=1 they fail instead.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from edge_agent.cache import records as rec
from edge_agent.cache.records import SemanticPart, SharedEntry, SyncEvent
from edge_agent.cache.redis_tier import Breaker, RedisTier, RedisTierError
from edge_agent.config import RedisCache
from tests.redis_support import RedisServer, free_port


def make_cfg(url: str, prefix: str, **extra: Any) -> RedisCache:
    return RedisCache(url=url, key_prefix=prefix, **extra)


@pytest.fixture
async def pair(redis_url: str, prefix: str) -> AsyncIterator[tuple[RedisTier, RedisTier]]:
    """Two replicas on one Redis, each with its own metrics registry."""
    cfg = make_cfg(redis_url, prefix, timeout_ms=500)
    a = RedisTier(cfg, replica_id="replica-a", registry=CollectorRegistry())
    b = RedisTier(cfg, replica_id="replica-b", registry=CollectorRegistry())
    await a.start()
    await b.start()
    assert a.reading and b.reading
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def entry(key: str, *, ttl_s: float = 60, tenant: str = "acme", model: str = "m1") -> SharedEntry:
    return SharedEntry(
        key=key,
        body=f'{{"answer":"{key}"}}'.encode(),
        expires_at=time.time() + ttl_s,
        model=model,
        tenant=tenant,
        endpoint="chat",
    )


def sample(tier: RedisTier, name: str, **labels: str) -> float:
    value = tier.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def eventually(check: Callable[[], Any], within_s: float, what: str) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.01)


# -- sync between replicas -----------------------------------------------------------


@pytest.mark.redis
async def test_put_on_one_replica_is_a_hit_on_the_other(pair: tuple[RedisTier, RedisTier]) -> None:
    a, b = pair
    vec = SemanticPart.from_array("local/3", "part", "two plus two?", [0.1, 0.2, 0.3])  # type: ignore[arg-type]
    e = SharedEntry("k1", b'{"x":1}', time.time() + 60, "m1", "acme", "chat", vec)
    assert await b.get("k1") is None
    a.put(e)
    got = await eventually(lambda: b.get("k1"), 1.0, "B sees A's entry")
    assert got == e
    assert sample(b, "edge_agent_redis_operations_total", op="get", outcome="hit") >= 1
    assert sample(b, "edge_agent_redis_operations_total", op="get", outcome="miss") >= 1
    assert sample(a, "edge_agent_redis_operations_total", op="put", outcome="ok") == 1


@pytest.mark.redis
async def test_events_reach_other_replicas_within_a_second_and_not_self(
    pair: tuple[RedisTier, RedisTier],
) -> None:
    a, b = pair
    to_a: list[SyncEvent] = []
    to_b: list[SyncEvent] = []
    a.subscribe(to_a.append)

    async def async_callback(event: SyncEvent) -> None:  # async subscribers work too
        to_b.append(event)

    b.subscribe(async_callback)
    e = entry("k-sync")
    t0 = time.monotonic()
    a.put(e)
    await eventually(lambda: to_b, 1.0, "store event delivered to B")
    assert time.monotonic() - t0 < 1.0
    assert to_b[0].kind == "store" and to_b[0].entry == e and to_b[0].replica == "replica-a"

    a.evict(["k-sync"])
    await eventually(lambda: len(to_b) == 2, 1.0, "evict event delivered to B")
    assert to_b[1].kind == "evict" and to_b[1].keys == ("k-sync",)
    assert await b.get("k-sync") is None

    await asyncio.sleep(0.4)  # more than one XREAD block: A would have seen its own by now
    assert to_a == []
    assert sample(b, "edge_agent_redis_sync_events_total", outcome="received") == 2
    assert sample(b, "edge_agent_redis_sync_events_total", outcome="applied") == 2


@pytest.mark.redis
async def test_events_before_start_are_not_replayed_but_later_ones_are(
    redis_url: str, prefix: str
) -> None:
    cfg = make_cfg(redis_url, prefix, timeout_ms=500)
    a = RedisTier(cfg, replica_id="a", registry=CollectorRegistry())
    await a.start()
    a.put(entry("old"))
    await a.close()  # flushes the queue
    b = RedisTier(cfg, replica_id="b", registry=CollectorRegistry())
    seen: list[str] = []
    b.subscribe(lambda ev: seen.append(ev.entry.key if ev.entry else "?"))
    await b.start()
    a2 = RedisTier(cfg, replica_id="a", registry=CollectorRegistry())
    await a2.start()
    try:
        a2.put(entry("new"))
        await eventually(lambda: seen, 1.0, "new event delivered")
        await asyncio.sleep(0.3)
        assert seen == ["new"]
    finally:
        await a2.close()
        await b.close()


@pytest.mark.redis
async def test_undecodable_and_newer_events_are_dropped_and_counted(
    pair: tuple[RedisTier, RedisTier], redis_url: str, prefix: str
) -> None:
    a, b = pair
    seen: list[SyncEvent] = []
    b.subscribe(seen.append)
    newer = rec.encode_event(SyncEvent.evict("future", ["k"]))
    newer = b"\x08\x63" + newer[2:]  # version field rewritten to 99
    with redis.Redis.from_url(redis_url) as r:
        r.xadd(rec.stream_name(prefix), {"r": "x", "d": b"\xff\xfe garbage"})
        r.xadd(rec.stream_name(prefix), {"r": "x", "d": newer})
        r.xadd(rec.stream_name(prefix), {"r": "x"})
    a.put(entry("after"))
    await eventually(lambda: seen, 1.0, "valid event after the bad ones")
    assert [ev.entry.key for ev in seen if ev.entry] == ["after"]
    assert sample(b, "edge_agent_redis_sync_events_total", outcome="dropped") == 3
    assert (
        sample(b, "edge_agent_redis_records_dropped_total", record="event", reason="newer_version")
        == 1
    )


@pytest.mark.redis
async def test_a_failing_subscriber_does_not_stop_the_reader(
    pair: tuple[RedisTier, RedisTier],
) -> None:
    a, b = pair
    seen: list[SyncEvent] = []

    def broken(event: SyncEvent) -> None:
        raise RuntimeError("subscriber bug")

    b.subscribe(broken)
    b.subscribe(seen.append)
    a.put(entry("one"))
    a.put(entry("two"))
    await eventually(lambda: len(seen) == 2, 1.0, "both events despite the broken subscriber")
    assert sample(b, "edge_agent_redis_sync_events_total", outcome="failed") == 2


# -- TTL, warm, purge ----------------------------------------------------------------


@pytest.mark.redis
async def test_ttl_is_honoured(
    pair: tuple[RedisTier, RedisTier], redis_url: str, prefix: str
) -> None:
    a, b = pair
    a.put(entry("short", ttl_s=0.4))
    await eventually(lambda: b.get("short"), 1.0, "short-lived entry visible")
    with redis.Redis.from_url(redis_url) as r:
        assert 0 < r.pttl(rec.entry_name(prefix, "short")) <= 400
    await asyncio.sleep(0.5)
    assert await b.get("short") is None
    # Already expired: never written.
    a.put(entry("dead", ttl_s=-1))
    assert sample(a, "edge_agent_redis_put_queue_drops_total", reason="expired") == 1


@pytest.mark.redis
async def test_warm_yields_live_entries_bounded(redis_url: str, prefix: str) -> None:
    cfg = make_cfg(redis_url, prefix, timeout_ms=500, warm_max_entries=4)
    writer = RedisTier(cfg, replica_id="w", registry=CollectorRegistry())
    await writer.start()
    for i in range(6):
        writer.put(entry(f"w{i}"))
    await writer.close()
    with redis.Redis.from_url(redis_url) as r:
        r.set(rec.entry_name(prefix, "junk"), b"\xff\xff not a record")
    tier = RedisTier(cfg, replica_id="r", registry=CollectorRegistry())
    try:
        loaded = [e async for e in tier.warm()]
        assert len(loaded) == 4  # warm_max_entries
        assert all(e.key.startswith("w") for e in loaded)
        assert len([e async for e in tier.warm(2)]) == 2
        cfg_all = make_cfg(redis_url, prefix, timeout_ms=500)
        everything = RedisTier(cfg_all, replica_id="r2", registry=CollectorRegistry())
        keys = sorted([e.key async for e in everything.warm()])
        await everything.close()
        assert keys == [f"w{i}" for i in range(6)]  # the junk value is skipped
        assert sample(tier, "edge_agent_redis_warm_entries_loaded_total") == 6
        dropped = {"record": "entry", "reason": "corrupt"}
        assert sample(everything, "edge_agent_redis_records_dropped_total", **dropped) == 1
    finally:
        await tier.close()


@pytest.mark.redis
async def test_purge_by_tenant_model_key_and_all_propagates(
    pair: tuple[RedisTier, RedisTier],
) -> None:
    a, b = pair
    purges: list[SyncEvent] = []
    a.subscribe(lambda ev: purges.append(ev) if ev.kind == "purge" else None)
    a.put(entry("t1m1", tenant="t1", model="m1"))
    a.put(entry("t1m2", tenant="t1", model="m2"))
    a.put(entry("t2m1", tenant="t2", model="m1"))
    a.put(entry("t2m2", tenant="t2", model="m2"))
    a.put(entry("t3m3", tenant="t3", model="m3"))
    await eventually(lambda: b.get("t3m3"), 1.0, "entries written")

    assert await b.purge(tenant="t1", model="m1") == 1
    assert await b.get("t1m1") is None and await b.get("t1m2") is not None
    await eventually(lambda: purges, 1.0, "purge event delivered to A")
    assert purges[0].purge is not None
    assert (purges[0].purge.tenant, purges[0].purge.model) == ("t1", "m1")

    assert await b.purge(model="m2") == 2
    assert await b.get("t1m2") is None and await b.get("t2m2") is None
    assert await b.purge(key="t2m1", tenant="other") == 0  # filters combine with AND
    assert await b.purge(key="t2m1") == 1
    assert await b.purge(all=True) == 1  # t3m3
    assert await a.get("t3m3") is None
    await eventually(lambda: len(purges) == 5, 1.0, "every purge reaches A")
    with pytest.raises(ValueError):
        await b.purge()


# -- leases --------------------------------------------------------------------------


@pytest.mark.redis
async def test_only_one_replica_gets_the_lease_and_only_the_owner_releases(
    pair: tuple[RedisTier, RedisTier], redis_url: str, prefix: str
) -> None:
    a, b = pair
    results = await asyncio.gather(a.acquire_lease("q", 5000), b.acquire_lease("q", 5000))
    assert sorted(results) == [False, True]
    owner, other = (a, b) if results[0] else (b, a)
    assert await other.release_lease("q") is False
    with redis.Redis.from_url(redis_url) as r:
        assert r.get(rec.lease_name(prefix, "q")) == owner.replica_id.encode()
    assert await owner.release_lease("q") is True
    assert await other.acquire_lease("q", 5000) is True


@pytest.mark.redis
async def test_waiter_gets_the_owners_answer(pair: tuple[RedisTier, RedisTier]) -> None:
    a, b = pair
    assert await a.acquire_lease("co", 5000)
    assert not await b.acquire_lease("co", 5000)
    waiting = asyncio.create_task(b.wait_for("co", 3.0))
    await asyncio.sleep(0.1)
    e = entry("co")
    a.put(e)
    assert await a.release_lease("co") is True  # queued behind the put: ordered
    t0 = time.monotonic()
    assert await waiting == e
    assert time.monotonic() - t0 < 1.0


@pytest.mark.redis
async def test_waiter_falls_through_when_the_owner_gives_up_or_time_runs_out(
    pair: tuple[RedisTier, RedisTier],
) -> None:
    a, b = pair
    assert await a.acquire_lease("gone", 5000)
    waiting = asyncio.create_task(b.wait_for("gone", 5.0))
    await asyncio.sleep(0.1)
    await a.release_lease("gone")  # no answer stored (an error upstream, say)
    t0 = time.monotonic()
    assert await waiting is None
    assert time.monotonic() - t0 < 1.0
    assert await a.acquire_lease("slow", 5000)
    t0 = time.monotonic()
    assert await b.wait_for("slow", 0.3) is None
    assert 0.25 < time.monotonic() - t0 < 1.0


# -- failure: breaker, outage, recovery ---------------------------------------------


@pytest.mark.redis
async def test_dead_redis_gives_fast_misses_and_opens_the_breaker() -> None:
    cfg = make_cfg(
        f"redis://127.0.0.1:{free_port()}/0",
        "dead",
        timeout_ms=50,
        failure_threshold=2,
        open_s=30,
    )
    tier = RedisTier(cfg, replica_id="lonely", registry=CollectorRegistry())
    await tier.start()  # does not raise
    try:
        # Requests and the sync reader both count: the breaker opens without traffic too.
        for _ in range(2):
            t0 = time.monotonic()
            assert await tier.get("k") is None
            assert time.monotonic() - t0 < 0.05 + 0.1
        await eventually(lambda: tier.state == "open", 1.0, "breaker open")
        t0 = time.monotonic()
        assert await tier.get("k") is None
        assert await tier.acquire_lease("k", 1000) is False
        assert await tier.wait_for("k", 5.0) is None
        assert time.monotonic() - t0 < 0.01  # short-circuited, not timed out
        tier.put(entry("k"))
        tier.evict(["k"])
        with pytest.raises(RedisTierError):
            await tier.purge(all=True)
        assert sample(tier, "edge_agent_redis_put_queue_drops_total", reason="open") == 2
        assert sample(tier, "edge_agent_redis_operations_total", op="get", outcome="dropped") >= 1
        assert sample(tier, "edge_agent_redis_operations_total", op="wait", outcome="dropped") == 1
        assert sample(tier, "edge_agent_redis_breaker_state") == 2
    finally:
        await tier.close()


@pytest.mark.redis
async def test_outage_and_recovery_on_a_private_server(private_redis: RedisServer) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    cfg = make_cfg(private_redis.url, prefix, timeout_ms=50, failure_threshold=3, open_s=0.5)
    kw: dict[str, Any] = {"reconnect_base_s": 0.05, "reconnect_max_s": 0.3}
    a = RedisTier(cfg, replica_id="a", registry=CollectorRegistry(), **kw)
    b = RedisTier(cfg, replica_id="b", registry=CollectorRegistry(), **kw)
    seen: list[str] = []
    b.subscribe(lambda ev: seen.append(ev.entry.key if ev.entry else ev.kind))
    await a.start()
    await b.start()
    try:
        a.put(entry("before"))
        await eventually(lambda: seen == ["before"], 1.0, "sync works before the outage")

        # Slow Redis (frozen process): every call is cut at timeout_ms, then the
        # breaker opens and calls return at once.
        private_redis.freeze()
        for _ in range(3):
            t0 = time.monotonic()
            assert await b.get("before") is None
            assert time.monotonic() - t0 < 0.05 + 0.1
        assert b.state == "open"
        t0 = time.monotonic()
        assert await b.get("before") is None
        assert time.monotonic() - t0 < 0.01

        # Dead Redis.
        private_redis.thaw()
        private_redis.stop()
        await asyncio.sleep(0.6)  # the open period ends; the probe fails fast
        assert await b.get("before") is None
        await eventually(lambda: a.state == "open", 2.0, "A's reader notices the outage")

        # Back: both resume by themselves (reader reconnects, breaker closes).
        private_redis.start()
        await eventually(lambda: a.state == "up" and b.state == "up", 3.0, "breakers close")
        a.put(entry("after"))
        await eventually(lambda: "after" in seen, 1.5, "sync resumed")
        assert (await b.get("after")) is not None
    finally:
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_reader_catches_up_after_losing_its_connection(
    private_redis: RedisServer,
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    cfg = make_cfg(private_redis.url, prefix, timeout_ms=200)
    a = RedisTier(cfg, replica_id="a", registry=CollectorRegistry())
    # A long first backoff: the events below are written while B is disconnected.
    b = RedisTier(
        cfg, replica_id="b", registry=CollectorRegistry(), reconnect_base_s=0.8,
        reconnect_max_s=0.8,
    )  # fmt: skip
    seen: list[str] = []
    b.subscribe(lambda ev: seen.append(ev.entry.key if ev.entry else ev.kind))
    await a.start()
    await b.start()
    try:
        a.put(entry("e0"))
        await eventually(lambda: seen == ["e0"], 1.0, "first event")
        with redis.Redis(port=private_redis.port) as r:
            r.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.05)
        for i in range(1, 6):
            a.put(entry(f"e{i}"))
        await asyncio.sleep(0.2)
        assert seen == ["e0"]  # still backing off
        await eventually(lambda: len(seen) == 6, 2.0, "catch-up after reconnect")
        assert seen == [f"e{i}" for i in range(6)]  # none lost, in order
    finally:
        await a.close()
        await b.close()


# -- breaker logic (no Redis needed) ------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_then_probes_once() -> None:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    br = Breaker(3, 5.0, clock=clock, on_change=lambda old, new, why: changes.append((old, new)))
    assert br.state == "up" and br.allow()
    br.failure("x")
    br.failure("x")
    assert br.state == "down" and br.allow()
    br.success()
    br.failure("x")
    br.failure("x")
    assert br.state == "down"
    br.failure("x")
    assert br.state == "open" and not br.allow() and br.rejecting()
    clock.now = 5.0
    assert not br.rejecting()
    assert br.allow()  # the probe
    assert not br.allow()  # only one
    br.failure("still down")
    assert br.state == "open" and not br.allow()
    clock.now = 10.0
    assert br.allow()
    br.success()
    assert br.state == "up"
    # One change notification per transition, not per call.
    assert changes == [
        ("up", "down"),
        ("down", "up"),
        ("up", "down"),
        ("down", "open"),
        ("open", "open"),
        ("open", "up"),
    ]


def test_breaker_passive_evidence_respects_the_open_period() -> None:
    clock = FakeClock()
    br = Breaker(1, 5.0, clock=clock)
    br.failure("x")
    assert br.state == "open"
    br.success(passive=True)
    assert br.state == "open"  # too early
    br.failure("reader", passive=True)
    clock.now = 5.0
    br.success(passive=True)
    assert br.state == "up"


def test_breaker_lost_probe_is_released() -> None:
    clock = FakeClock()
    br = Breaker(1, 2.0, clock=clock)
    br.failure("x")
    clock.now = 2.0
    assert br.allow()
    br.release()  # the probe's caller was cancelled
    assert br.allow()
    clock.now = 10.0  # and a probe that never reports frees itself after open_s
    assert br.allow()


@pytest.mark.redis
async def test_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on PATH")
    server = RedisServer(binary, password="s3cret-from-a-secret")
    server.start()
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    try:
        # No password: Redis refuses every command; the tier degrades, never raises.
        monkeypatch.delenv("REDIS_PASSWORD", raising=False)
        cfg = make_cfg(server.url, prefix, password_env="REDIS_PASSWORD")
        refused = RedisTier(cfg, replica_id="r", registry=CollectorRegistry())
        await refused.start()
        try:
            for _ in range(cfg.failure_threshold):
                assert await refused.get("k") is None
            assert refused.state == "open"
        finally:
            await refused.close()

        monkeypatch.setenv("REDIS_PASSWORD", "s3cret-from-a-secret")
        tier = RedisTier(cfg, replica_id="ok", registry=CollectorRegistry())
        await tier.start()
        try:
            tier.put(entry("k"))
            got = await eventually(lambda: tier.get("k"), 2.0, "the entry is stored")
            assert got is not None and got.key == "k"
            assert tier.state == "up"
        finally:
            await tier.close()
    finally:
        server.stop()
