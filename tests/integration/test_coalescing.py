"""Request coalescing through real Envoy: concurrent identical misses, one provider call."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.helpers import Gateway, listen_block, metric_value, post_json, running_gateway


@pytest.fixture(scope="module")
def slow() -> Iterator[FakeOpenAI]:
    thread = FakeOpenAIThread(name="slow")
    fake = thread.start()
    fake.delay_s = 0.5  # long enough for all the identical requests to overlap
    try:
        yield fake
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def gw(slow: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "listen": listen_block(),
        "providers": [{"name": "slow", "type": "openai", "base_url": slow.url}],
        "models": [{"name": "m", "targets": ["slow/m"]}],
        "cache": {"semantic": {"enabled": False}},
    }
    tmp: Path = tmp_path_factory.mktemp("coalesce")
    with running_gateway(tmp, config) as gateway:
        yield gateway


def test_twenty_concurrent_identical_misses_reach_the_provider_once(
    gw: Gateway, slow: FakeOpenAI
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "everyone asks this"}]}
    with ThreadPoolExecutor(20) as pool:
        replies = list(
            pool.map(lambda _: post_json(f"{gw.url}/v1/chat/completions", body), range(20))
        )
    assert [r.status for r in replies] == [200] * 20
    assert len(slow.requests) == 1
    answers = {r.json()["choices"][0]["message"]["content"] for r in replies}
    assert len(answers) == 1
    results = sorted(r.headers["x-edge-agent-cache"] for r in replies)
    assert results.count("miss") == 1 and results.count("coalesced") + results.count("hit") == 19
    assert metric_value(gw.metrics(), "edge_agent_coalesced_total", outcome="served") >= 1


def test_streams_coalesce_with_json_requests(gw: Gateway, slow: FakeOpenAI) -> None:
    before = len(slow.requests)
    base = {"model": "m", "messages": [{"role": "user", "content": "mixed delivery"}]}
    bodies = [base if i % 2 else {**base, "stream": True} for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda b: post_json(f"{gw.url}/v1/chat/completions", b), bodies))
    assert [r.status for r in replies] == [200] * 6
    assert len(slow.requests) == before + 1
    streamed = [r for r, b in zip(replies, bodies, strict=True) if b.get("stream")]
    assert all(r.body.rstrip().endswith(b"data: [DONE]") for r in streamed)
