"""The fake OpenAI upstream, checked through the official ``openai`` SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import openai
import pytest

from edge_agent.demo import FakeOpenAI, FakeOpenAIThread
from edge_agent.demo.upstream import main

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer"},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAIThread(name="alpha") as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    server.reset()
    yield server
    server.reset()
    server.delay_s = server.stream_delay_s = 0.0


def sdk(url: str, api_key: str = "sk-test") -> openai.OpenAI:
    # trust_env=False: a proxy configured in the environment must not intercept 127.0.0.1.
    return openai.OpenAI(
        api_key=api_key,
        base_url=url,
        max_retries=0,
        timeout=5.0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with sdk(fake.url + "/v1") as c:
        yield c


def raw(fake: FakeOpenAI, method: str, path: str, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_chat_completion(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model="gpt-4o-mini",
        n=2,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
        ],
    )
    expected = "[demo upstream] alpha:gpt-4o-mini answer to: What is 2 + 2?"
    assert result.object == "chat.completion"
    assert result.id.startswith("chatcmpl-")
    assert result.model == "gpt-4o-mini"
    assert result.system_fingerprint
    assert isinstance(result.created, int)
    assert [c.index for c in result.choices] == [0, 1]
    for choice in result.choices:
        assert choice.message.role == "assistant"
        assert choice.message.content == expected
        assert choice.message.refusal is None
        assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.prompt_tokens == 2 + 2 + 1 + 5
    assert result.usage.completion_tokens == 2 * len(expected.split())
    assert result.usage.total_tokens == result.usage.prompt_tokens + 2 * len(expected.split())

    [recorded] = fake.requests
    assert (recorded.method, recorded.path, recorded.query) == ("POST", "/v1/chat/completions", "")
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.json()["n"] == 2

    # Distinct ids, and the question is what tells answers apart.
    again = client.chat.completions.create(
        model="m2", messages=[{"role": "user", "content": "x" * 300}]
    )
    assert again.id != result.id
    assert again.choices[0].message.content == "[demo upstream] alpha:m2 answer to: " + "x" * 200


def test_streamed_chat_with_usage(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    expected = "[demo upstream] alpha:gpt-4o answer to: tell me a story"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first, *middle, final, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert len(middle) == len(expected.split())
    assert "".join(c.choices[0].delta.content or "" for c in middle) == expected
    assert final.choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == 4
    assert usage_chunk.usage.total_tokens == 4 + len(expected.split())


def test_sse_framing(fake: FakeOpenAI) -> None:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()
    status, headers, data = raw(fake, "POST", "/v1/chat/completions", body)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-cache"
    events = data.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert all("usage" not in c for c in chunks)  # only present when include_usage is asked
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_completions(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this")
    expected = "[demo upstream] alpha:gpt-3.5-turbo-instruct answer to: Say this"
    assert result.object == "text_completion"
    assert result.choices[0].text == expected
    assert result.choices[0].index == 0
    assert result.choices[0].logprobs is None
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.total_tokens == 2 + len(expected.split())

    chunks = list(
        client.completions.create(
            model="m",
            prompt=["one", "two"],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        assert chunk.object == "text_completion"
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == {
        i: f"[demo upstream] alpha:m answer to: {p}" for i, p in enumerate(["one", "two"])
    }
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2


def test_embeddings_float_and_base64(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    inputs = ["hello world", "another text"]
    as_float = client.embeddings.create(
        model="text-embedding-3-small", input=inputs, encoding_format="float"
    )
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    as_base64 = client.embeddings.create(model="text-embedding-3-small", input=inputs)
    explicit = client.embeddings.create(model="m", input=inputs[0], encoding_format="base64")
    assert [r.json()["encoding_format"] for r in fake.requests] == ["float", "base64", "base64"]
    packed = base64.b64decode(explicit.data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack("<8f", packed)) == as_float.data[0].embedding
    assert as_float.object == "list"
    assert as_float.model == "text-embedding-3-small"
    assert [d.index for d in as_float.data] == [0, 1]
    vectors = [d.embedding for d in as_float.data]
    assert vectors == [d.embedding for d in as_base64.data]  # bit-identical float32 values
    assert all(len(v) == 8 for v in vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] != vectors[1]
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == 4

    single = client.embeddings.create(model="m", input="hello world", dimensions=16)
    assert len(single.data) == 1
    assert len(single.data[0].embedding) == 16
    repeat = client.embeddings.create(model="m", input="hello world", dimensions=16)
    assert repeat.data[0].embedding == single.data[0].embedding  # deterministic


def test_models_list(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == fake.model_ids
    assert "gpt-4o-mini" in ids
    assert client.models.retrieve("gpt-4o").owned_by == "alpha"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_auth_refusal() -> None:
    with FakeOpenAIThread(name="locked", api_key="sk-right-key") as fake:
        wrong = sdk(fake.url + "/v1", api_key="sk-wrong-key")
        with wrong, pytest.raises(openai.AuthenticationError) as caught:
            wrong.models.list()
        assert caught.value.status_code == 401
        assert caught.value.code == "invalid_api_key"
        assert caught.value.type == "invalid_request_error"
        assert "Incorrect API key provided" in caught.value.message
        assert "sk-wrong-key" not in caught.value.message  # keys are masked, as OpenAI does
        with sdk(fake.url + "/v1", api_key="sk-right-key") as right:
            assert right.models.list().data
        assert len(fake.requests) == 2


def test_fail_next(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    fake.fail_next(503)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m", messages=messages)
    assert caught.value.status_code == 503
    assert caught.value.type == "server_error"
    assert client.chat.completions.create(model="m", messages=messages).choices

    fake.fail_next(
        429, 2, body=b'{"error": {"message": "slow down"}}', headers={"Retry-After": "7"}
    )
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="m", messages=messages)
        assert limited.value.response.headers["retry-after"] == "7"
        assert limited.value.body == {"message": "slow down"}
    assert client.chat.completions.create(model="m", messages=messages).choices

    fake.fail_next(500, 5)
    fake.reset()
    assert fake.requests == []
    assert client.chat.completions.create(model="m", messages=messages).choices


def test_tool_calls(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,
        tool_choice="required",
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Weather in Paris?", "unit": "celsius"}

    named = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "other"}},
    )
    assert (named.choices[0].message.tool_calls or [])[0].function.name == "other"

    plain = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "no tools please"}], tools=TOOLS
    )
    assert plain.choices[0].message.tool_calls is None
    suppressed = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "CALL_TOOL"}],
        tools=TOOLS,
        tool_choice="none",
    )
    assert suppressed.choices[0].finish_reason == "stop"

    # Streamed: the SDK's accumulator rebuilds the call from its pieces.
    with client.chat.completions.stream(
        model="m", messages=[{"role": "user", "content": "CALL_TOOL for Oslo"}], tools=TOOLS
    ) as stream:
        final = stream.get_final_completion()
    [streamed] = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert streamed.function.name == "get_weather"
    assert json.loads(streamed.function.arguments)["city"] == "CALL_TOOL for Oslo"


def test_prefixed_base_url(fake: FakeOpenAI) -> None:
    with sdk(fake.url + "/openai/v1") as client:
        result = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert result.choices[0].message.content == "[demo upstream] alpha:m answer to: hi"
    assert fake.requests[0].path == "/openai/v1/chat/completions"


def test_errors_are_openai_shaped(fake: FakeOpenAI) -> None:
    status, headers, body = raw(fake, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["type"] == "invalid_request_error"

    status, _, body = raw(fake, "POST", "/v1/chat/completions", b'{"model": "m"}')
    assert status == 400
    assert json.loads(body)["error"]["param"] == "messages"

    status, _, body = raw(fake, "GET", "/v2/unknown?x=1")
    assert status == 404
    assert json.loads(body)["error"] == {
        "message": "Invalid URL (GET /v2/unknown)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert [(r.path, r.query) for r in fake.requests][-1] == ("/v2/unknown", "x=1")


async def test_async_lifecycle_and_delay() -> None:
    async with FakeOpenAI(name="beta", label="test upstream") as fake:
        assert fake.port > 0
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        async with aiohttp.ClientSession() as session:
            payload = {"model": "m", "messages": [{"role": "user", "content": "ping"}]}
            async with session.post(fake.url + "/v1/chat/completions", json=payload) as resp:
                answer = await resp.json()
            assert answer["choices"][0]["message"]["content"] == (
                "[test upstream] beta:m answer to: ping"
            )
            fake.delay_s = 1.0
            with pytest.raises(asyncio.TimeoutError):
                async with session.get(
                    fake.url + "/v1/models", timeout=aiohttp.ClientTimeout(total=0.1)
                ):
                    pass
        assert len(fake.requests) == 2


def test_main_runs_standalone() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.demo.upstream", "--port", "0", "--name", "solo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "DEMO upstream" in line and "not a real LLM" in line
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert match, line
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=5)
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert stderr == ""


def test_main_reports_busy_port(server: FakeOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", str(server.port)]) == 1
    assert "cannot listen" in capsys.readouterr().err
