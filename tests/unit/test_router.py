"""Routing through the Exchange: strategies, capability filter, health, cost metrics."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.extproc.decisions import Continue, Respond
from tests.helpers import Clock, chat_completion, metric_value


def make_agent(strategy: str, clock: Clock, **model: Any) -> Agent:
    config = parse_config(
        {
            "providers": [
                {
                    "name": "a",
                    "type": "openai",
                    "base_url": "http://127.0.0.1:1",
                    "models": [
                        {
                            "name": "a1",
                            "input_per_mtok": 10.0,
                            "output_per_mtok": 30.0,
                            "capabilities": ["json"],
                        }
                    ],
                },
                {
                    "name": "b",
                    "type": "anthropic",
                    "base_url": "http://127.0.0.1:2",
                    "models": [{"name": "b1", "input_per_mtok": 1.0, "output_per_mtok": 2.0}],
                },
            ],
            "models": [
                {
                    "name": "m",
                    "targets": ["a/a1", "b/b1"],
                    "strategy": strategy,
                    "failover": False,  # the agent itself routes; chains have their own tests
                    **model,
                }
            ],
            "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
        }
    )
    return Agent(config, environ={}, clock=clock)


def send(agent: Agent, **extra: Any) -> tuple[Any, str]:
    ex = agent.exchange()
    ex.request_headers({":method": "POST", ":path": "/v1/chat/completions"}, False)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    decision = ex.request_body(orjson.dumps(body))
    if isinstance(decision, Respond):
        return ex, f"refused {decision.status}: {decision.body.decode()}"
    assert isinstance(decision, Continue)
    return ex, dict(decision.set_headers)["x-edge-agent-cluster"]


def test_priority_skips_a_target_cooling_down_after_429_and_returns_to_it() -> None:
    clock = Clock()
    agent = make_agent("priority", clock)
    ex, first = send(agent)
    assert first == "a"
    ex.response_headers({":status": "429", "retry-after": "2"})
    ex.close()
    assert send(agent)[1] == "b"  # a is cooling down
    clock.now += 1.9
    assert send(agent)[1] == "b"
    clock.now += 0.2
    assert send(agent)[1] == "a"  # Retry-After honoured, then back


def test_priority_opens_the_circuit_after_consecutive_5xx() -> None:
    clock = Clock()
    agent = make_agent("priority", clock)
    for _ in range(5):
        ex, target = send(agent)
        assert target == "a"
        ex.response_headers({":status": "503"})
        clock.now += 1.1  # past the short cooldown a 503 without Retry-After earns
    assert send(agent)[1] == "b"
    state = agent.router.snapshot()["targets"]["a/a1"]
    assert state["state"] == "open"


def test_lowest_cost_prefers_the_cheaper_target() -> None:
    agent = make_agent("lowest_cost", Clock())
    assert {send(agent)[1] for _ in range(5)} == {"b"}


def test_capability_filter_skips_targets_without_the_needed_capability() -> None:
    agent = make_agent("lowest_cost", Clock())
    # a declares only json; b declares nothing (not filtered), but JSON mode cannot be
    # translated to its Anthropic API.
    _, target = send(agent, tools=[{"type": "function", "function": {"name": "f"}}])
    assert target == "b"
    _, refused = send(agent, tools=[{"type": "function", "function": {"name": "f"}}], n=2)
    assert refused.startswith("refused 400") and "cannot be translated" in refused
    _, target = send(agent, response_format={"type": "json_object"})
    assert target == "a"  # dearer, but the only one that can do JSON mode
    _, refused = send(
        agent,
        response_format={"type": "json_object"},
        tools=[{"type": "function", "function": {"name": "f"}}],
    )
    assert refused.startswith("refused 400") and "no 'tools' capability" in refused


def test_weighted_follows_the_weights() -> None:
    agent = make_agent("weighted", Clock())
    route = agent.config.models[0]
    assert route.targets[0].weight == 1.0
    weighted = make_agent(
        "weighted",
        Clock(),
        targets=[{"target": "a/a1", "weight": 3}, {"target": "b/b1", "weight": 1}],
    )
    picks = [send(weighted)[1] for _ in range(40)]
    assert picks.count("a") == 30 and picks.count("b") == 10


@pytest.mark.parametrize(("prompt", "completion"), [(1000, 500), (7, 0)])
def test_cost_metrics_match_hand_computed_values(prompt: int, completion: int) -> None:
    agent = make_agent("priority", Clock())
    ex, target = send(agent)
    assert target == "a"
    ex.response_headers({":status": "200", "content-type": "application/json"})
    body = chat_completion("x", prompt_tokens=prompt, completion_tokens=completion)
    ex.response_body(body, end_of_stream=True)
    text = _scrape(agent)
    assert metric_value(text, "edge_agent_tokens_total", model="m", kind="input") == prompt
    assert metric_value(text, "edge_agent_tokens_total", model="m", kind="output") == completion
    expected = (prompt * 10.0 + completion * 30.0) / 1_000_000
    cost = metric_value(text, "edge_agent_cost_usd_total", model="m", provider="a")
    assert cost == pytest.approx(expected)


def _scrape(agent: Agent) -> str:
    from prometheus_client import generate_latest

    return generate_latest(agent.metrics.registry).decode()


def test_failover_models_route_to_the_chain_that_starts_with_the_chosen_target() -> None:
    clock = Clock()
    agent = make_agent("priority", clock, failover=True)
    ex, cluster = send(agent)
    assert cluster == "edge_agent_chain_0_0"  # a first, then b
    decision = ex.response_headers(
        {
            ":status": "200",
            "content-type": "application/json",
            "x-edge-agent-provider": "b",
            "x-edge-agent-model": "b1",
            "x-edge-agent-metered": "1",
        }
    )
    assert "x-edge-agent-metered" in decision.remove_headers
    assert ex.target is not None and ex.target.key == "b/b1"  # the attempt that answered
    # The chosen target cooling down moves requests to the chain that starts elsewhere.
    agent.router.target("a/a1").health.on_failure("rate_limited", 429, 2.0)  # type: ignore[union-attr]
    assert send(agent)[1] == "edge_agent_chain_0_1"
    clock.now += 2.1
    assert send(agent)[1] == "edge_agent_chain_0_0"


def test_client_overrides_are_refused_unless_enabled() -> None:
    agent = make_agent("priority", Clock())
    ex = agent.exchange()
    ex.request_headers(
        {":method": "POST", ":path": "/v1/chat/completions", "x-edge-agent-pin": "b"}, False
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    refused = ex.request_body(orjson.dumps(body))
    assert isinstance(refused, Respond) and refused.status == 400
    assert b"routing.client_overrides" in refused.body


def test_pin_and_exclude_steer_the_request_and_disable_failover() -> None:
    config = make_agent("priority", Clock(), failover=True).config.model_dump()
    config["routing"] = {"client_overrides": True}
    agent = Agent(parse_config(config), environ={}, clock=Clock())

    def route(headers: dict[str, str]) -> str:
        ex = agent.exchange()
        ex.request_headers({":method": "POST", ":path": "/v1/chat/completions", **headers}, False)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        decision = ex.request_body(orjson.dumps(body))
        assert isinstance(decision, Continue), decision
        assert "x-edge-agent-pin" in decision.remove_headers
        return dict(decision.set_headers)["x-edge-agent-cluster"]

    assert route({}) == "edge_agent_chain_0_0"  # failover chain by default
    assert route({"x-edge-agent-pin": "b"}) == "b"  # pinned: that target only
    assert route({"x-edge-agent-pin": "b/b1"}) == "b"
    assert route({"x-edge-agent-exclude": "a"}) == "b"


def test_a_request_refused_after_routing_releases_the_half_open_probe() -> None:
    clock = Clock()
    agent = make_agent("lowest_cost", clock)  # b (anthropic) is the cheaper target
    b = agent.router.target("b/b1")
    assert b is not None
    for _ in range(5):
        b.health.on_failure("status", 500)
    clock.now += 31  # past open_s: half-open, one probe allowed
    _, refused = send(agent, n=2)  # picks b (taking the probe), then n=2 cannot translate
    assert refused.startswith("refused 400")
    assert send(agent)[1] == "b"  # the probe was released, not stuck for 30 s


def test_malformed_provider_usage_is_unknown_not_a_crash() -> None:
    from edge_agent.translate import anthropic as to_anthropic

    assert to_anthropic.openai_usage({"input_tokens": "x", "output_tokens": 1}) is None
    assert to_anthropic.openai_usage({"input_tokens": 10**300}) is None
    assert to_anthropic.openai_usage({"input_tokens": 3, "output_tokens": 4})["total_tokens"] == 7


def test_a_malformed_field_the_translator_trips_on_is_a_400() -> None:
    agent = make_agent("lowest_cost", Clock())  # b: translated to Anthropic
    _, refused = send(agent, tools=[{"type": "function", "function": "not an object"}])
    assert refused.startswith("refused 400") and "wrong shape" in refused
