"""The upstream (per-attempt) side of failover, sans-IO."""

from __future__ import annotations

import orjson
from prometheus_client import generate_latest

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.extproc.attempt import TARGET_ATTRIBUTE
from edge_agent.extproc.decisions import BodyMode, Continue, Respond
from tests.helpers import Clock, chat_completion, metric_value

CONFIG = {
    "providers": [
        {
            "name": "gpt",
            "type": "openai",
            "base_url": "http://127.0.0.1:1/v1",
            "api_key_env": "GPT_KEY",
            "models": [{"name": "g", "input_per_mtok": 1.0, "output_per_mtok": 1.0}],
        },
        {
            "name": "claude",
            "type": "anthropic",
            "base_url": "http://127.0.0.1:2",
            "api_key_env": "CLAUDE_KEY",
        },
        {"name": "off", "type": "openai", "base_url": "http://127.0.0.1:3", "api_key_env": "NONE"},
    ],
    "models": [{"name": "m", "targets": ["gpt/g", "claude/c", "off/o"]}],
    "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
}
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def agent() -> Agent:
    env = {"GPT_KEY": "sk-g", "CLAUDE_KEY": "sk-c"}
    return Agent(parse_config(CONFIG), environ=env, clock=Clock())


def test_each_attempt_resets_credentials_and_translates_for_its_target() -> None:
    a = agent()
    attempt = a.attempt()
    headers = {":path": "/v1/chat/completions", "x-request-id": "r1", "authorization": "old"}
    assert attempt.request_headers(headers, False, {TARGET_ATTRIBUTE: "claude/c"}) == Continue()
    decision = attempt.request_body(BODY)
    assert isinstance(decision, Continue)
    set_headers = dict(decision.set_headers)
    assert set_headers[":path"] == "/v1/messages" and set_headers["x-api-key"] == "sk-c"
    assert "authorization" in decision.remove_headers  # the previous attempt's key
    assert "x-envoy-original-host" in decision.remove_headers
    sent = orjson.loads(decision.body or b"")
    assert sent["model"] == "c" and sent["max_tokens"] == 4096
    reply = attempt.response_headers({":status": "200", "content-type": "application/json"})
    assert reply.response_body_mode is BodyMode.BUFFERED
    assert ("x-edge-agent-provider", "claude") in reply.set_headers


def test_same_schema_attempt_still_sets_content_length() -> None:
    attempt = agent().attempt()
    attempt.request_headers({":path": "/v1/chat/completions"}, False, {TARGET_ATTRIBUTE: "gpt/g"})
    decision = attempt.request_body(BODY)
    assert isinstance(decision, Continue)
    set_headers = dict(decision.set_headers)
    assert set_headers["authorization"] == "Bearer sk-g"
    assert decision.body == orjson.dumps({**orjson.loads(BODY), "model": "g"})
    assert "x-api-key" in decision.remove_headers


def test_failed_attempts_feed_health_and_the_attempt_log() -> None:
    a = agent()
    key = a.attempts.begin("/v1/chat/completions", "", "default")
    first = a.attempt()
    first.request_headers(
        {":path": "/v1/chat/completions", "x-edge-agent-attempt": key},
        False,
        {TARGET_ATTRIBUTE: "gpt/g"},
    )
    first.request_body(BODY)
    first.response_headers({":status": "429", "retry-after": "5"})
    target = a.router.target("gpt/g")
    assert target is not None and not target.health.peek()
    # The next attempt sees the first one's provider path: it must use the client's.
    second = a.attempt()
    second.request_headers(
        {":path": "/v1/messages", "x-edge-agent-attempt": key},
        False,
        {TARGET_ATTRIBUTE: "claude/c"},
    )
    decision = second.request_body(BODY)
    assert isinstance(decision, Continue)
    assert dict(decision.set_headers)[":path"] == "/v1/messages"
    assert orjson.loads(decision.body or b"")["max_tokens"] == 4096  # translated from chat
    assert a.attempts.finish(key) == {"gpt/g": "answered", "claude/c": "started"}


def test_a_disabled_target_in_a_chain_is_refused_clearly() -> None:
    attempt = agent().attempt()
    decision = attempt.request_headers(
        {":path": "/v1/chat/completions"}, False, {TARGET_ATTRIBUTE: "off/o"}
    )
    assert isinstance(decision, Respond) and decision.status == 503
    assert b"off/o" in decision.body


def test_passthrough_json_is_metered_once_upstream() -> None:
    a = agent()
    attempt = a.attempt()
    attempt.request_headers({":path": "/v1/chat/completions"}, False, {TARGET_ATTRIBUTE: "gpt/g"})
    attempt.request_body(BODY)
    reply = attempt.response_headers({":status": "200", "content-type": "application/json"})
    assert ("x-edge-agent-metered", "1") in reply.set_headers
    attempt.response_body(chat_completion("x", prompt_tokens=3, completion_tokens=4), True)
    text = generate_latest(a.metrics.registry).decode()
    assert metric_value(text, "edge_agent_tokens_total", model="m", kind="input") == 3
