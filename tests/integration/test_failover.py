"""In-request failover through real Envoy: the same client request is retried on the
next target when the first refuses the connection, answers 5xx or 429 — also when the
next target speaks another schema — and the client gets a normal answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.fakes.anthropic import FakeAnthropic, FakeAnthropicThread
from tests.helpers import (
    Gateway,
    free_port,
    listen_block,
    metric_value,
    post_json,
    running_gateway,
    started_fakes,
)

KEYS = {"PRIMARY_KEY": "sk-primary", "SECONDARY_KEY": "sk-secondary", "CLAUDE_KEY": "sk-claude"}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    threads: dict[str, Any] = {
        "primary": FakeOpenAIThread(name="primary", api_key=KEYS["PRIMARY_KEY"]),
        "secondary": FakeOpenAIThread(name="secondary", api_key=KEYS["SECONDARY_KEY"]),
        "claude": FakeAnthropicThread(name="claude", api_key=KEYS["CLAUDE_KEY"]),
    }
    with started_fakes(threads) as started:
        yield started


@pytest.fixture(scope="module")
def gw(fakes: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    config = {
        "listen": listen_block(),
        "providers": [
            {
                "name": "primary",
                "type": "openai",
                "base_url": fakes["primary"].url,
                "api_key_env": "PRIMARY_KEY",
                "models": [{"name": "p-chat"}],
                "timeout_s": 1,  # the secondary's is the largest: attempts here end at 1 s
            },
            {
                "name": "secondary",
                "type": "openai",
                "base_url": fakes["secondary"].url,
                "api_key_env": "SECONDARY_KEY",
                "models": [{"name": "s-chat"}],
                "timeout_s": 30,
            },
            {
                "name": "claude",
                "type": "anthropic",
                "base_url": fakes["claude"].url,
                "api_key_env": "CLAUDE_KEY",
                "models": [{"name": "claude-x"}],
            },
            {"name": "dead", "type": "openai", "base_url": dead, "connect_timeout_s": 1},
        ],
        "models": [
            {
                "name": "pair",
                "strategy": "priority",
                "targets": ["primary/p-chat", "secondary/s-chat"],
            },
            {
                "name": "cross",
                "strategy": "priority",
                "targets": ["primary/p-chat", "claude/claude-x"],
            },
            {"name": "refused", "strategy": "priority", "targets": ["dead/d", "secondary/s-chat"]},
            {
                "name": "claude-first",
                "strategy": "priority",
                "targets": ["claude/claude-x", "secondary/s-chat"],
            },
        ],
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
    }
    tmp: Path = tmp_path_factory.mktemp("failover")
    with running_gateway(tmp, config, dict(KEYS)) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def clean(fakes: dict[str, Any]) -> None:
    for fake in fakes.values():
        fake.reset()


def wait_until_available(gw: Gateway, key: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = gw.admin_json("/admin/routing")["targets"][key]
        if state["state"] == "closed" and not state["cooldown_remaining_s"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{key} did not become available: {state}")


def ask(gw: Gateway, model: str, text: str, **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return post_json(f"{gw.url}/v1/chat/completions", body, {"authorization": "Bearer client"})


def test_primary_503_every_request_succeeds_from_the_secondary(
    gw: Gateway, fakes: dict[str, Any]
) -> None:
    primary: FakeOpenAI = fakes["primary"]
    secondary: FakeOpenAI = fakes["secondary"]
    primary.fail_next(503, count=1000)
    try:
        for i in range(100):
            reply = ask(gw, "pair", f"failover {i}")
            assert reply.status == 200, reply.body
            assert f"failover {i}" in reply.json()["choices"][0]["message"]["content"]
            assert reply.headers["x-edge-agent-provider"] == "secondary"
        tried_primary = len(primary.requests)
    finally:
        primary.reset()
    assert len(secondary.requests) == 100
    # The secondary got its own key and model, never the primary's.
    seen = secondary.requests[0]
    assert seen.headers["authorization"] == f"Bearer {KEYS['SECONDARY_KEY']}"
    assert seen.json()["model"] == "s-chat"
    # After a 503 the primary cools down (1 s without Retry-After): most requests went
    # straight to the secondary instead of paying for a failed first attempt.
    assert 1 <= tried_primary <= 10
    state = gw.admin_json("/admin/routing")["targets"]["primary/p-chat"]
    assert state["consecutive_failures"] == tried_primary


def test_each_attempt_ends_at_its_own_providers_timeout(gw: Gateway, fakes: dict[str, Any]) -> None:
    wait_until_available(gw, "primary/p-chat")  # the chain must start at the primary
    fakes["primary"].delay_s = 12.0  # past its own 1 s, well inside the secondary's 30 s
    try:
        # post_json gives up after 10 s: a try bounded by the largest timeout never ends.
        reply = ask(gw, "pair", "slow primary")
    finally:
        fakes["primary"].delay_s = 0
    assert reply.status == 200, reply.body
    assert reply.headers["x-edge-agent-provider"] == "secondary"
    assert len(fakes["primary"].requests) == 1 and len(fakes["secondary"].requests) == 1
    wait_until_available(gw, "primary/p-chat")


def test_refused_connections_fail_over_in_the_same_request(
    gw: Gateway, fakes: dict[str, Any]
) -> None:
    for i in range(100):
        reply = ask(gw, "refused", f"refused {i}")
        assert reply.status == 200, reply.body
        assert reply.headers["x-edge-agent-provider"] == "secondary"
    assert len(fakes["secondary"].requests) == 100
    text = gw.metrics()
    assert (
        metric_value(text, "edge_agent_failed_attempts_total", target="dead/d", outcome="connect")
        >= 1
    )


def test_429_with_retry_after_pauses_the_primary_then_it_gets_traffic_again(
    gw: Gateway, fakes: dict[str, Any]
) -> None:
    primary: FakeOpenAI = fakes["primary"]
    wait_until_available(gw, "primary/p-chat")  # earlier tests may have left it cooling
    primary.reset()
    primary.fail_next(429, headers={"retry-after": "2"})
    started = time.monotonic()
    first = ask(gw, "pair", "rate limited")
    assert first.status == 200 and first.headers["x-edge-agent-provider"] == "secondary"
    assert len(primary.requests) == 1  # the 429, answered by the secondary in the same request
    while time.monotonic() - started < 1.5:
        assert ask(gw, "pair", "cooling").headers["x-edge-agent-provider"] == "secondary"
    assert len(primary.requests) == 1  # no traffic while it cools down
    time.sleep(max(0.0, 2.3 - (time.monotonic() - started)))
    later = ask(gw, "pair", "after the cooldown")
    assert later.headers["x-edge-agent-provider"] == "primary"
    assert len(primary.requests) == 2


def test_failover_to_another_schema_translates_the_attempt(
    gw: Gateway, fakes: dict[str, Any]
) -> None:
    primary: FakeOpenAI = fakes["primary"]
    claude: FakeAnthropic = fakes["claude"]
    primary.fail_next(500, count=3)
    for i in range(3):
        reply = ask(gw, "cross", f"cross schema {i}", max_tokens=50)
        assert reply.status == 200, reply.body
        body = reply.json()
        assert body["object"] == "chat.completion"
        assert f"cross schema {i}" in body["choices"][0]["message"]["content"]
        assert reply.headers["x-edge-agent-provider"] == "claude"
    seen = claude.requests[0]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEYS["CLAUDE_KEY"]
    assert "authorization" not in seen.headers  # the primary's key did not leak
    assert seen.json()["model"] == "claude-x"


def test_streams_fail_over_too(gw: Gateway, fakes: dict[str, Any]) -> None:
    fakes["primary"].fail_next(503)
    reply = ask(gw, "cross", "stream please", stream=True, max_tokens=50)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    text = reply.body.decode()
    assert "chat.completion.chunk" in text and text.rstrip().endswith("data: [DONE]")
    assert (
        "stream please" in "".join(line for line in text.splitlines() if '"content"' in line)
        or "stream" in text
    )


def test_failover_from_a_provider_with_another_path_reaches_the_next_one(
    gw: Gateway, fakes: dict[str, Any]
) -> None:
    # The first attempt rewrote :path to /v1/messages; Envoy keeps it for the second
    # attempt, which must still translate from the client's chat request.
    claude: FakeAnthropic = fakes["claude"]
    claude.fail_next(500)
    reply = ask(gw, "claude-first", "from claude to openai", max_tokens=30)
    assert reply.status == 200, reply.body
    assert reply.headers["x-edge-agent-provider"] == "secondary"
    assert "from claude to openai" in reply.json()["choices"][0]["message"]["content"]
    seen = fakes["secondary"].requests[-1]
    assert seen.path == "/v1/chat/completions" and "x-api-key" not in seen.headers
    assert "x-envoy-attempt-count" not in reply.headers


def test_the_agents_own_refusal_charges_no_target(gw: Gateway) -> None:
    before = gw.admin_json("/admin/routing")["targets"]
    reply = ask(gw, "cross", "two answers please", n=2)  # claude cannot do n=2
    assert reply.status in (200, 400)
    after = gw.admin_json("/admin/routing")["targets"]
    for key in ("claude/claude-x",):
        assert after[key]["failures"] == before[key]["failures"], (before[key], after[key])
