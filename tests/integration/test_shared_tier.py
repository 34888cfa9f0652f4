"""The shared tier through real gateways: two `edge-agent run` instances on one Redis.

Needs a Redis server (see tests/redis_support.py); skips without one unless
EDGE_AGENT_REQUIRE_REDIS=1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.helpers import Gateway, listen_block, metric_value, post_json, running_gateway
from tests.redis_support import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    thread = FakeOpenAIThread(name="shared-upstream")
    try:
        yield thread.start()
    finally:
        thread.stop()


def config(upstream: FakeOpenAI, url: str, prefix: str, semantic: bool = False) -> dict[str, Any]:
    return {
        "listen": listen_block(),
        "providers": [{"name": "up", "type": "openai", "base_url": upstream.url}],
        "models": [{"name": "m", "targets": ["up/m"]}],
        "cache": {
            "semantic": {"enabled": semantic, "mode": "serve"},
            "redis": {"url": url, "key_prefix": prefix, "timeout_ms": 100},
        },
    }


def place(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(exist_ok=True)
    return path


def ask(gw: Gateway, text: str) -> Any:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return post_json(f"{gw.url}/v1/chat/completions", body)


def eventually(fn: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_an_answer_cached_by_one_instance_is_served_by_the_other_and_after_restart(
    upstream: FakeOpenAI, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    cfg_a = config(upstream, redis_url, prefix)
    cfg_b = config(upstream, redis_url, prefix)
    with (
        running_gateway(place(tmp_path, "a"), cfg_a) as a,
        running_gateway(place(tmp_path, "b"), cfg_b) as b,
    ):
        before = len(upstream.requests)
        first = ask(a, "shared across replicas")
        assert first.headers["x-edge-agent-cache"] == "miss"
        started = time.monotonic()
        # Within a second the other instance answers it from its own local tier.
        hit = eventually(
            lambda: ask(b, "shared across replicas").headers["x-edge-agent-cache"] == "hit", 1.0
        )
        assert hit, "instance B did not serve A's answer within 1 s"
        assert time.monotonic() - started < 1.5
        assert len(upstream.requests) == before + 1
    # A restarted instance warms its local tiers from Redis and still hits.
    with running_gateway(place(tmp_path, "c"), config(upstream, redis_url, prefix)) as c:
        reply = ask(c, "shared across replicas")
        assert reply.headers["x-edge-agent-cache"] == "hit"
        assert reply.json() == first.json()
        assert len(upstream.requests) == before + 1


def test_semantic_entries_reach_the_other_instance(
    upstream: FakeOpenAI, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    cfg_a = config(upstream, redis_url, prefix, semantic=True)
    cfg_b = config(upstream, redis_url, prefix, semantic=True)
    with (
        running_gateway(place(tmp_path, "a"), cfg_a) as a,
        running_gateway(place(tmp_path, "b"), cfg_b) as b,
    ):
        assert ask(a, "What is the capital city of France?").status == 200
        # The entry travels through Redis (write, then a sync event B applies): wait for
        # it to land in B before asking. A paraphrase asked earlier would go upstream and
        # B would keep its own answer (exact hits from then on).
        arrived = eventually(
            lambda: metric_value(b.metrics(), "edge_agent_semantic_entries") >= 1, 1.0
        )
        assert arrived, "A's semantic entry did not reach instance B within 1 s"
        reply = ask(b, "Which city is the capital of France?")
        assert reply.headers["x-edge-agent-cache"] == "semantic-hit", reply.headers


def test_purge_reaches_every_instance(
    upstream: FakeOpenAI, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    from tests.helpers import http

    with (
        running_gateway(place(tmp_path, "a"), config(upstream, redis_url, prefix)) as a,
        running_gateway(place(tmp_path, "b"), config(upstream, redis_url, prefix)) as b,
    ):
        ask(a, "purge me")
        assert eventually(lambda: ask(b, "purge me").headers["x-edge-agent-cache"] == "hit", 1.0)
        gone = http("DELETE", f"{a.admin_url}/admin/cache?model=m", timeout=5)
        assert gone.status == 200 and gone.json()["purged_in_redis"] >= 1
        assert eventually(lambda: ask(b, "purge me").headers["x-edge-agent-cache"] == "miss", 1.0)


def test_redis_stopped_mid_load_fails_no_request_and_the_tier_resumes(
    upstream: FakeOpenAI, private_redis: RedisServer, tmp_path: Path
) -> None:
    cfg = config(upstream, private_redis.url, "outage")
    cfg["cache"]["redis"]["open_s"] = 1.0
    failures: list[int] = []
    sent = [0]
    stop = threading.Event()
    with running_gateway(place(tmp_path, "a"), cfg) as a:

        def load() -> None:
            while not stop.is_set():
                reply = ask(a, f"load {sent[0] % 20}")
                sent[0] += 1
                if reply.status != 200:
                    failures.append(reply.status)

        loader = threading.Thread(target=load)
        loader.start()
        try:
            time.sleep(0.5)
            private_redis.stop()
            time.sleep(1.5)
            private_redis.start()
            time.sleep(0.5)
        finally:
            stop.set()
            loader.join(30)
        assert sent[0] > 50 and failures == []
        # The tier resumes by itself: answers cached from now on reach Redis again
        # (once the breaker's open period, 1 s here, has passed).
        asked = [0]

        def in_redis() -> bool:
            import redis

            asked[0] += 1
            ask(a, f"after the outage {asked[0]}")
            with redis.Redis.from_url(private_redis.url) as r:
                return any(True for _ in r.scan_iter(match="outage:e:*"))

        assert eventually(in_redis, 10.0)


def test_with_two_workers_a_repeat_is_a_hit_whichever_worker_takes_it(
    upstream: FakeOpenAI, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    cfg = config(upstream, redis_url, prefix)
    cfg["workers"] = 2
    with running_gateway(place(tmp_path, "w"), cfg) as gw:
        before = len(upstream.requests)
        assert ask(gw, "any worker").headers["x-edge-agent-cache"] == "miss"
        time.sleep(0.3)  # the answer reaches Redis and the other worker's local tier
        results = [ask(gw, "any worker").headers["x-edge-agent-cache"] for _ in range(30)]
        assert results == ["hit"] * 30
        assert len(upstream.requests) == before + 1


def test_concurrent_identical_misses_across_instances_reach_the_provider_once(
    upstream: FakeOpenAI, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    upstream.delay_s = 0.5  # all requests overlap the first one's call
    try:
        with (
            running_gateway(place(tmp_path, "a"), config(upstream, redis_url, prefix)) as a,
            running_gateway(place(tmp_path, "b"), config(upstream, redis_url, prefix)) as b,
        ):
            before = len(upstream.requests)
            gateways = [a, b] * 10
            with ThreadPoolExecutor(20) as pool:
                replies = list(pool.map(lambda gw: ask(gw, "one call for all"), gateways))
            assert [r.status for r in replies] == [200] * 20
            assert len(upstream.requests) == before + 1
            assert len({r.body for r in replies}) == 1
    finally:
        upstream.delay_s = 0.0
