"""Both official SDKs across schemas through `edge-agent run` (real Envoy + agent):
the `openai` SDK reaching an Anthropic-type provider, and the `anthropic` SDK reaching
an OpenAI-type provider — JSON, streams, tool calls, usage, errors and cost metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.fakes.anthropic import FakeAnthropic, FakeAnthropicThread
from tests.helpers import Gateway, listen_block, metric_value, running_gateway

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

KEYS = {"CLAUDE_KEY": "sk-ant-provider", "GPT_KEY": "sk-openai-provider"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAnthropic, FakeOpenAI]]:
    claude = FakeAnthropicThread(name="claude", api_key=KEYS["CLAUDE_KEY"])
    gpt = FakeOpenAIThread(name="gpt", api_key=KEYS["GPT_KEY"])
    try:
        yield claude.start(), gpt.start()
    finally:
        claude.stop()
        gpt.stop()


@pytest.fixture(scope="module")
def gw(
    fakes: tuple[FakeAnthropic, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    claude, gpt = fakes
    config = {
        "listen": listen_block(),
        "providers": [
            {
                "name": "claude",
                "type": "anthropic",
                "base_url": claude.url,
                "api_key_env": "CLAUDE_KEY",
                "models": [
                    {
                        "name": "claude-x",
                        "input_per_mtok": 3.0,
                        "output_per_mtok": 15.0,
                        "capabilities": ["tools", "vision"],
                    }
                ],
            },
            {
                "name": "gpt",
                "type": "openai",
                "base_url": gpt.url,
                "api_key_env": "GPT_KEY",
                "models": [{"name": "gpt-x", "input_per_mtok": 1.0, "output_per_mtok": 2.0}],
            },
        ],
        "models": [
            {"name": "smart", "targets": ["claude/claude-x"]},
            {"name": "fast", "targets": ["gpt/gpt-x"]},
        ],
        "cache": {"semantic": {"enabled": False}},
    }
    tmp: Path = tmp_path_factory.mktemp("cross")
    with running_gateway(tmp, config, dict(KEYS)) as gateway:
        yield gateway


@pytest.fixture
def oa(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="client-key", max_retries=0)


@pytest.fixture
def an(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0)


def test_openai_sdk_json_reaches_anthropic_provider(
    oa: openai.OpenAI, fakes: tuple[FakeAnthropic, FakeOpenAI], gw: Gateway
) -> None:
    claude, _ = fakes
    before = len(claude.requests)
    raw = oa.chat.completions.with_raw_response.create(
        model="smart",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello to cross-json"},
        ],
        max_tokens=64,
        temperature=0,
    )
    reply = raw.parse()
    assert raw.headers["x-edge-agent-provider"] == "claude"
    assert raw.headers["x-edge-agent-model"] == "claude-x"
    assert "cross-json" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    seen = claude.requests[before]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEYS["CLAUDE_KEY"]
    assert "authorization" not in seen.headers  # the client's key never leaves
    sent = seen.json()
    assert sent["system"] == "Be brief." and sent["model"] == "claude-x"
    # Cost at the configured prices, from the usage the client saw.
    metrics = gw.metrics()
    assert metric_value(metrics, "edge_agent_tokens_total", model="smart", kind="input") >= (
        reply.usage.prompt_tokens
    )


def test_openai_sdk_stream_and_tool_calls_from_anthropic_provider(oa: openai.OpenAI) -> None:
    stream = oa.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, args, names, finish, usage = "", "", [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
                args += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert names == ["get_weather"] and finish == "tool_calls"
    assert "city" in json.loads(args)
    assert usage is not None and usage.completion_tokens > 0


def test_openai_sdk_sees_anthropic_errors_in_its_own_shape(
    oa: openai.OpenAI, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    claude, _ = fakes
    claude.fail_next(429, headers={"retry-after": "0"})
    with pytest.raises(openai.RateLimitError) as err:
        oa.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 429


def test_untranslatable_field_is_a_clear_400(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="cannot be translated"):
        oa.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}], n=2)


def test_anthropic_sdk_json_reaches_openai_provider(
    an: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeOpenAI], gw: Gateway
) -> None:
    _, gpt = fakes
    before = len(gpt.requests)
    raw = an.messages.with_raw_response.create(
        model="fast",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello to anthropic-json"}],
    )
    message = raw.parse()
    assert raw.headers["x-edge-agent-provider"] == "gpt"
    assert message.type == "message" and message.stop_reason == "end_turn"
    assert "anthropic-json" in message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    seen = gpt.requests[before]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEYS['GPT_KEY']}"
    assert "x-api-key" not in seen.headers
    assert seen.json()["messages"][0] == {"role": "system", "content": "Be brief."}
    cost = metric_value(gw.metrics(), "edge_agent_cost_usd_total", model="fast", provider="gpt")
    assert cost > 0


def test_anthropic_sdk_stream_with_tools_from_openai_provider(an: anthropic.Anthropic) -> None:
    with an.messages.stream(
        model="fast",
        max_tokens=64,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[
            {
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": WEATHER["function"]["parameters"],
            }
        ],
        tool_choice={"type": "any"},
    ) as stream:
        final = stream.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.name == "get_weather" and "city" in tool.input
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens > 0


def test_anthropic_sdk_gets_anthropic_errors(an: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        an.messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        an.messages.create(model="fast", max_tokens=0, messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("model", ["smart", "fast"])  # Anthropic passthrough, translated
def test_anthropic_sdk_answers_are_cached_and_replayed_as_events(
    an: anthropic.Anthropic, model: str, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    question = [{"role": "user", "content": f"cache me via {model}"}]
    with an.messages.stream(model=model, max_tokens=64, messages=question) as stream:
        first = stream.get_final_message()
    claude, gpt = fakes
    seen = len(claude.requests) + len(gpt.requests)
    raw = an.messages.with_raw_response.create(model=model, max_tokens=64, messages=question)
    assert raw.headers["x-edge-agent-cache"] == "hit"
    assert raw.parse().content[0].text == first.content[0].text
    with an.messages.stream(model=model, max_tokens=64, messages=question) as stream:
        replayed = stream.get_final_message()
    assert replayed.content[0].text == first.content[0].text
    assert replayed.stop_reason == first.stop_reason
    assert len(claude.requests) + len(gpt.requests) == seen  # no provider was asked again


def test_a_broken_translated_stream_reaches_the_client_as_an_error_and_is_counted(
    oa: openai.OpenAI, fakes: tuple[FakeAnthropic, FakeOpenAI], gw: Gateway
) -> None:
    claude, _ = fakes
    before = metric_value(gw.metrics(), "edge_agent_broken_streams_total", target="claude/claude-x")
    claude.break_next_stream(after_events=4)
    stream = oa.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "break this stream"}], stream=True
    )
    with pytest.raises(openai.APIError, match="Overloaded"):
        for _ in stream:
            pass
    # The client may see the error event before the gateway has handled the stream's
    # end, where the break is counted: poll briefly.
    deadline = time.monotonic() + 5
    while True:
        after = metric_value(
            gw.metrics(), "edge_agent_broken_streams_total", target="claude/claude-x"
        )
        if after == before + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after == before + 1


def test_an_untranslatable_provider_answer_is_a_clean_502(
    oa: openai.OpenAI, an: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    claude, gpt = fakes
    claude.fail_next(200, body={"type": "message", "content": "not a list", "stop_reason": 7})
    with pytest.raises(openai.APIStatusError) as err:
        oa.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x1"}])
    assert err.value.status_code == 502 and "cannot translate" in str(err.value)
    gpt.fail_next(200, body=b'{"choices": "nope", "usage": {"prompt_tokens": "x"}}')
    with pytest.raises(anthropic.APIStatusError) as aerr:
        an.messages.create(model="fast", max_tokens=5, messages=[{"role": "user", "content": "x2"}])
    assert aerr.value.status_code == 502
