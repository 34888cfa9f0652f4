"""Routing strategies through real Envoy: latency, cost and capabilities steer traffic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.helpers import (
    Gateway,
    listen_block,
    metric_value,
    post_json,
    running_gateway,
    started_fakes,
)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeOpenAI]]:
    threads = {name: FakeOpenAIThread(name=name) for name in ("fast", "slow")}
    with started_fakes(threads) as started:
        started["fast"].delay_s = 0.01
        started["slow"].delay_s = 0.05  # 5x slower
        yield started


@pytest.fixture(scope="module")
def gw(fakes: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    def provider(name: str, **model: Any) -> dict[str, Any]:
        return {
            "name": name,
            "type": "openai",
            "base_url": fakes[name].url,
            "models": [{"name": "m", **model}],
        }

    config = {
        "listen": listen_block(),
        "providers": [
            provider("fast", input_per_mtok=10.0, output_per_mtok=30.0, capabilities=["json"]),
            provider("slow", input_per_mtok=1.0, output_per_mtok=2.0),
        ],
        "models": [
            {"name": "quick", "strategy": "least_latency", "targets": ["slow/m", "fast/m"]},
            {"name": "thrifty", "strategy": "lowest_cost", "targets": ["fast/m", "slow/m"]},
            {"name": "tooled", "strategy": "priority", "targets": ["fast/m", "slow/m"]},
        ],
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
    }
    tmp: Path = tmp_path_factory.mktemp("routing")
    with running_gateway(tmp, config) as gateway:
        yield gateway


def ask(gw: Gateway, model: str, **extra: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    reply = post_json(f"{gw.url}/v1/chat/completions", body)
    assert reply.status == 200, reply.body
    return reply.headers["x-edge-agent-provider"]


def test_least_latency_moves_most_traffic_to_the_5x_faster_target(gw: Gateway) -> None:
    picks = [ask(gw, "quick") for _ in range(40)]
    late = Counter(picks[10:])
    assert late["fast"] >= 24, picks  # after a few requests, most go to the fast one
    snapshot = gw.admin_json("/admin/routing")["targets"]
    assert snapshot["fast/m"]["ewma_latency_ms"] < snapshot["slow/m"]["ewma_latency_ms"]


def test_lowest_cost_sends_traffic_to_the_cheaper_target(gw: Gateway) -> None:
    assert {ask(gw, "thrifty") for _ in range(10)} == {"slow"}
    text = gw.metrics()
    assert (
        metric_value(
            text, "edge_agent_routing_decisions_total", model="thrifty", reason="lowest_cost"
        )
        >= 10
    )


def test_a_request_with_tools_skips_a_target_without_tool_support(gw: Gateway) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert ask(gw, "tooled") == "fast"  # priority: first target
    assert ask(gw, "tooled", tools=tools) == "slow"  # fast declares only json
