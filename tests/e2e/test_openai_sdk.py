"""The official `openai` SDK against `edge-agent run` (real Envoy + agent + fake providers)."""

from __future__ import annotations

import openai
import pytest

from edge_agent.demo.upstream import FakeOpenAI
from tests.conftest import CLIENT_KEY, PROVIDER_KEYS
from tests.helpers import Gateway


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def ask(content: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]


def test_chat_json_and_cache_hit(
    client: openai.OpenAI, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-alpha", messages=ask(unique))
    first = raw.parse()
    assert raw.headers["x-edge-agent-cache"] == "miss"
    assert unique in (first.choices[0].message.content or "")
    assert first.choices[0].finish_reason == "stop"

    raw = client.chat.completions.with_raw_response.create(model="gpt-alpha", messages=ask(unique))
    assert raw.headers["x-edge-agent-cache"] == "hit"
    assert raw.parse().choices[0].message.content == first.choices[0].message.content
    [seen] = fresh["alpha"].requests
    assert seen.headers["authorization"] == f"Bearer {PROVIDER_KEYS['ALPHA_KEY']}"


def test_chat_stream_miss_then_stream_hit_then_json_hit(
    client: openai.OpenAI, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    def streamed() -> tuple[str, str, object]:
        raw = client.chat.completions.with_raw_response.create(
            model="beta-chat",
            messages=ask(unique),
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        for chunk in raw.parse():
            for choice in chunk.choices:
                text += choice.delta.content or ""
            usage = chunk.usage or usage
        return raw.headers["x-edge-agent-cache"], text, usage

    status, text, usage = streamed()
    assert status == "miss" and unique in text and usage is not None
    status, replayed, replayed_usage = streamed()
    assert status == "hit" and replayed == text
    assert replayed_usage == usage

    raw = client.chat.completions.with_raw_response.create(model="beta-chat", messages=ask(unique))
    assert raw.headers["x-edge-agent-cache"] == "hit"
    assert raw.parse().choices[0].message.content == text
    assert len(fresh["beta"].requests) == 1


def test_tool_calls_survive_stream_capture_and_replay(
    client: openai.OpenAI, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]

    def call(stream: bool) -> tuple[str, str]:
        kwargs = {"model": "gpt-alpha", "messages": ask(unique), "tools": tools}
        if not stream:
            c = client.chat.completions.create(tool_choice="required", **kwargs)  # type: ignore[arg-type]
            tc = c.choices[0].message.tool_calls[0]  # type: ignore[index]
            return tc.function.name, tc.function.arguments  # type: ignore[union-attr]
        name, args = "", ""
        for chunk in client.chat.completions.create(
            tool_choice="required",
            stream=True,
            **kwargs,  # type: ignore[arg-type]
        ):
            for choice in chunk.choices:
                for d in choice.delta.tool_calls or []:
                    name += (d.function and d.function.name) or ""
                    args += (d.function and d.function.arguments) or ""
        return name, args

    streamed = call(stream=True)
    assert streamed[0] == "get_weather"
    assert call(stream=False) == streamed  # served from the assembled stream
    assert call(stream=True) == streamed  # replayed as SSE
    assert len(fresh["alpha"].requests) == 1


def test_embeddings_completions_and_models(
    client: openai.OpenAI, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    emb = client.embeddings.create(model="embed", input=[unique, "two"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    again = client.embeddings.create(model="embed", input=[unique, "two"])
    assert again.data[0].embedding == emb.data[0].embedding

    comp = client.completions.create(model="instruct", prompt=unique, max_tokens=8)
    assert unique in comp.choices[0].text
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="instruct", prompt=unique, max_tokens=8, stream=True
        )
        if c.choices
    )
    assert text == comp.choices[0].text  # the stream replays the cached completion
    assert len(fresh["alpha"].requests) == 2

    ids = {m.id for m in client.models.list()}
    assert ids == {"gpt-alpha", "beta-chat", "both", "embed", "instruct"}


def test_sdk_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=ask("x"))
    assert "nope" in str(nf.value)
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="gpt-alpha", messages=[])
    assert br.value.body and "messages" in str(br.value.body)
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="gpt-alpha", messages=ask("x"), temperature="hot")  # type: ignore[arg-type]
    assert "temperature" in str(br.value)
