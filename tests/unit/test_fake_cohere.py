"""The fake Cohere v2 Chat upstream, checked over raw HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.cohere import TEMPLATE_TOKENS, FakeCohere, FakeCohereThread

KEY = "co-test-key"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "detail": {
                    "type": "object",
                    "properties": {"hourly": {"type": "boolean"}},
                    "required": ["hourly"],
                },
            },
            "required": ["city", "unit", "detail"],
        },
    },
}
STOCK = {"type": "function", "function": {"name": "lookup_stock", "parameters": {}}}


def body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "command-a", "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeCohere]:
    with FakeCohereThread(name="co", api_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeCohere) -> Iterator[FakeCohere]:
    server.reset()
    yield server
    server.reset()
    server.delay_s = 0.0
    server.stream_delay_s = 0.001
    server.models = None


def post(
    fake: FakeCohere,
    payload: Any,
    path: str = "/v2/chat",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    sent = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    if headers is not None:
        sent = {k: v for k, v in {**sent, **headers}.items() if v}
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request(method, path, raw if method == "POST" else None, sent)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answer(fake: FakeCohere, payload: dict[str, Any]) -> dict[str, Any]:
    status, _, data = post(fake, payload)
    assert status == 200, data
    return json.loads(data)


def error_of(fake: FakeCohere, payload: Any, status: int = 400, **kw: Any) -> str:
    got, headers, data = post(fake, payload, **kw)
    assert got == status, data
    assert headers["content-type"] == "application/json"
    err = json.loads(data)
    assert set(err) == {"id", "message"}  # Cohere's error shape
    assert err["id"] == headers["x-debug-trace-id"]
    return err["message"]


def sse_events(data: bytes) -> list[dict[str, Any]]:
    frames = data.decode().split("\n\n")
    assert frames[-1] == ""
    events = []
    for frame in frames[:-1]:
        event_line, data_line = frame.split("\n")
        payload = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {payload['type']}"
        events.append(payload)
    return events


# -- answers -------------------------------------------------------------------------------


def test_text_answer_and_recording(fake: FakeCohere) -> None:
    payload = body(
        "hello there  friend",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hello there  friend"}]},
        ],
    )
    status, headers, data = post(fake, payload)
    assert status == 200 and headers["content-type"] == "application/json"
    reply = json.loads(data)
    assert reply == {
        "id": reply["id"],
        "message": {
            "role": "assistant",
            "content": [{"type": "text", "text": "Echo: hello there  friend"}],
        },
        "finish_reason": "COMPLETE",
        "usage": {
            "billed_units": {"input_tokens": 2 + 3, "output_tokens": 4},
            "tokens": {"input_tokens": 5 + TEMPLATE_TOKENS, "output_tokens": 4},
        },
    }
    [recorded] = fake.requests
    assert (recorded.method, recorded.path) == ("POST", "/v2/chat")
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert recorded.json() == payload
    again = answer(fake, payload)
    assert again["id"] != reply["id"] and again["message"] == reply["message"]


def test_max_tokens_and_stop_sequences(fake: FakeCohere) -> None:
    cut = answer(fake, body("alpha beta gamma", max_tokens=2))
    assert cut["message"]["content"] == [{"type": "text", "text": "Echo: alpha"}]
    assert cut["finish_reason"] == "MAX_TOKENS"
    assert cut["usage"]["billed_units"]["output_tokens"] == 2
    stopped = answer(fake, body("alpha END beta STOP", stop_sequences=["STOP", "END"]))
    assert stopped["message"]["content"][0]["text"] == "Echo: alpha "
    assert stopped["finish_reason"] == "STOP_SEQUENCE"
    assert answer(fake, body("alpha", stop_sequences=["zzz"]))["finish_reason"] == "COMPLETE"


def test_accepts_the_documented_request_surface(fake: FakeCohere) -> None:
    payload = body(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "sys"}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                    },
                    {"type": "text", "text": "what is this"},
                ],
            },
        ],
        temperature=0.3,
        p=0.75,
        k=40,
        seed=1,
        frequency_penalty=0.2,
        max_tokens=100,
        stop_sequences=["\n\n"],
        logprobs=False,
        safety_mode="CONTEXTUAL",
        priority=0,
        stream=False,
    )
    assert answer(fake, payload)["message"]["content"][0]["text"] == "Echo: what is this"


def test_json_response_format(fake: FakeCohere) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    shaped = answer(fake, body("x", response_format={"type": "json_object", "json_schema": schema}))
    assert json.loads(shaped["message"]["content"][0]["text"]) == {"n": 1}
    free = answer(fake, body("say hi", response_format={"type": "json_object"}))
    assert json.loads(free["message"]["content"][0]["text"]) == {"echo": "say hi"}


def test_tool_call_and_tool_result_round_trip(fake: FakeCohere) -> None:
    question = "What's the weather in Paris?"
    first = answer(fake, body(question, tools=[WEATHER, STOCK]))
    assert first["finish_reason"] == "TOOL_CALL"
    message = first["message"]
    assert "content" not in message
    assert message["tool_plan"] == "I will use the get_weather tool."
    [call] = message["tool_calls"]
    assert call["id"].startswith("get_weather_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert arguments == {"city": question, "unit": "celsius", "detail": {"hourly": True}}
    output = first["usage"]["billed_units"]["output_tokens"]
    assert output == 6 + len(call["function"]["arguments"]) // 4

    follow_up = body(
        messages=[
            {"role": "user", "content": question},
            message,
            {"role": "tool", "tool_call_id": call["id"], "content": "15 degrees"},
        ],
        tools=[WEATHER, STOCK],
    )
    final = answer(fake, follow_up)
    assert final["message"]["content"] == [{"type": "text", "text": "The tool said: 15 degrees"}]
    assert final["finish_reason"] == "COMPLETE"


@pytest.mark.parametrize(
    ("question", "choice", "expected"),
    [
        ("price of lookup_stock please", None, "lookup_stock"),  # names a tool
        ("use a tool", None, "get_weather"),  # says "tool"
        ("nothing relevant", "REQUIRED", "get_weather"),
        ("nothing relevant", None, None),
        ("weather please", "NONE", None),
    ],
)
def test_tool_choice(
    fake: FakeCohere, question: str, choice: str | None, expected: str | None
) -> None:
    extra: dict[str, Any] = {"tools": [WEATHER, STOCK]}
    if choice is not None:
        extra["tool_choice"] = choice
    reply = answer(fake, body(question, **extra))
    calls = [c["function"]["name"] for c in reply["message"].get("tool_calls", [])]
    assert calls == ([expected] if expected else [])
    assert reply["finish_reason"] == ("TOOL_CALL" if expected else "COMPLETE")


# -- refusals ------------------------------------------------------------------------------


def test_bearer_auth(fake: FakeCohere) -> None:
    assert error_of(fake, body(), 401, headers={"authorization": ""}) == "no api key supplied"
    assert (
        error_of(fake, body(), 401, headers={"authorization": "Bearer nope"}) == "invalid api token"
    )
    # Anthropic/Azure style headers are not what Cohere takes.
    assert error_of(fake, body(), 401, headers={"authorization": "", "x-api-key": KEY}) == (
        "no api key supplied"
    )
    assert len(fake.requests) == 3


def test_no_key_configured_accepts_any_key() -> None:
    with FakeCohereThread() as open_fake:
        assert post(open_fake, body(), headers={"authorization": ""})[0] == 200


def _without(key: str) -> dict[str, Any]:
    payload = body()
    del payload[key]
    return payload


CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
INVALID: list[tuple[str, Any, str]] = [
    ("no model", _without("model"), "a model parameter is required"),
    ("no messages", _without("messages"), "messages is required"),
    ("empty messages", body(messages=[]), "messages must be a non-empty list"),
    ("unknown field", body(top_p=0.5), "unknown field: parameter top_p is not a valid field"),
    ("OpenAI n", body(n=2), "parameter n is not a valid field"),
    ("bad role", body(messages=[{"role": "developer", "content": "x"}]), "messages[0].role"),
    ("function role", body(messages=[{"role": "function", "content": "x"}]), "messages[0].role"),
    (
        "tool without id",
        body(
            messages=[
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "content": "r"},
            ]
        ),
        "messages[2].tool_call_id is required",
    ),
    (
        "tool with unknown id",
        body(
            messages=[
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "other", "content": "r"},
            ]
        ),
        "does not match a tool call",
    ),
    (
        "arguments not a string",
        body(
            messages=[
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}],
                },
            ]
        ),
        "arguments must be a string",
    ),
    (
        "empty assistant",
        body(messages=[{"role": "user", "content": "q"}, {"role": "assistant"}]),
        "must have content or tool_calls",
    ),
    (
        "OpenAI message field",
        body(messages=[{"role": "user", "content": "q", "name": "bob"}]),
        "messages[0].name is not a valid field",
    ),
    (
        "system not first",
        body(messages=[{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]),
        "system turn must be the first",
    ),
    (
        "input_audio part",
        body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
        "messages[0].content[0].type",
    ),
    ("empty user text", body(""), "at least 1 token"),
    ("temperature", body(temperature=1.5), "temperature must be between 0 and 1.0 inclusive."),
    ("p", body(p=1.0), "p must be between 0.01 and 0.99"),
    ("penalty", body(presence_penalty=-1), "presence_penalty must be between"),
    ("max_tokens", body(max_tokens=0), "max_tokens must be a positive integer"),
    ("stops", body(stop_sequences=["a"] * 6), "at most 5"),
    ("tool_choice lower", body(tools=[WEATHER], tool_choice="required"), "tool_choice must be"),
    ("tool_choice alone", body(tool_choice="REQUIRED"), "requires tools"),
    (
        "OpenAI tool shape",
        body(tools=[{"type": "function", "function": {"name": "f", "strict": True}}]),
        "function.strict is not a valid field",
    ),
    ("duplicate tools", body(tools=[WEATHER, WEATHER]), "duplicate tool name"),
    (
        "json with tools",
        body(tools=[WEATHER], response_format={"type": "json_object"}),
        "not supported with tools",
    ),
    ("json_schema format", body(response_format={"type": "json_schema"}), "response_format.type"),
    ("not json", b"{nope", "could not parse"),
    ("not an object", [1, 2], "must be a JSON object"),
]


@pytest.mark.parametrize(
    ("payload", "needle"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_validation(fake: FakeCohere, payload: Any, needle: str) -> None:
    assert needle in error_of(fake, payload)


def test_paths_and_models(fake: FakeCohere) -> None:
    assert "Not Found" in error_of(fake, body(), 404, path="/v1/chat")
    assert "Not Found" in error_of(fake, body(), 404, path="/compatibility/v1/chat/completions")
    assert error_of(fake, body(), 405, method="GET") == "Method Not Allowed"
    assert post(fake, body(), path="/proxy/v2/chat")[0] == 200  # a base URL with a prefix
    fake.models = ["command-r"]
    assert "model 'command-a' not found" in error_of(fake, body(), 404)
    assert post(fake, body(model="command-r"))[0] == 200


# -- streams -------------------------------------------------------------------------------


def test_stream_text(fake: FakeCohere) -> None:
    status, headers, data = post(fake, body("tell me a story", stream=True))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(data)
    text = "Echo: tell me a story"
    assert [e["type"] for e in events] == [
        "message-start",
        "content-start",
        *["content-delta"] * len(text.split()),
        "content-end",
        "message-end",
    ]
    assert events[0]["delta"]["message"]["role"] == "assistant" and events[0]["id"]
    assert events[1]["delta"]["message"]["content"] == {"type": "text", "text": ""}
    pieces = [
        e["delta"]["message"]["content"]["text"] for e in events if e["type"] == "content-delta"
    ]
    assert "".join(pieces) == text
    assert events[-1]["delta"] == {
        "finish_reason": "COMPLETE",
        "usage": {
            "billed_units": {"input_tokens": 4, "output_tokens": 5},
            "tokens": {"input_tokens": 4 + TEMPLATE_TOKENS, "output_tokens": 5},
        },
    }


def test_stream_tool_call(fake: FakeCohere) -> None:
    events = sse_events(post(fake, body("weather in Oslo", tools=[WEATHER], stream=True))[2])
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message-start" and kinds[-1] == "message-end"
    assert "content-start" not in kinds
    plan = "".join(
        e["delta"]["message"]["tool_plan"] for e in events if e["type"] == "tool-plan-delta"
    )
    assert plan == "I will use the get_weather tool."
    start = next(e for e in events if e["type"] == "tool-call-start")
    assert start["index"] == 0
    assert start["delta"]["message"]["tool_calls"]["function"] == {
        "name": "get_weather",
        "arguments": "",
    }
    pieces = [
        e["delta"]["message"]["tool_calls"]["function"]["arguments"]
        for e in events
        if e["type"] == "tool-call-delta"
    ]
    assert len(pieces) > 3
    assert json.loads("".join(pieces))["city"] == "weather in Oslo"
    assert kinds.index("tool-call-end") == len(kinds) - 2
    assert events[-1]["delta"]["finish_reason"] == "TOOL_CALL"


async def test_stream_events_arrive_as_separate_writes() -> None:
    async with FakeCohere() as fake:
        payload = body("one two three four five six seven eight", stream=True)
        async with (
            aiohttp.ClientSession() as session,
            session.post(fake.url + "/v2/chat", json=payload) as resp,
        ):
            chunks = [chunk async for chunk in resp.content.iter_any()]
        assert len(chunks) > 5
        assert chunks[-1].startswith(b"event: message-end\n")


def test_break_and_truncate_streams(fake: FakeCohere) -> None:
    fake.break_next_stream(after_events=3)
    events = sse_events(post(fake, body("a b c d e f", stream=True))[2])
    assert [e["type"] for e in events] == [
        "message-start",
        "content-start",
        "content-delta",
        "message-end",
    ]
    assert events[-1]["delta"] == {"error": "internal error", "finish_reason": "ERROR"}
    fake.break_next_stream(after_events=1, error=None)
    assert [e["type"] for e in sse_events(post(fake, body(stream=True))[2])] == ["message-start"]
    fake.truncate_streams = 1
    assert len(sse_events(post(fake, body(stream=True))[2])) == 2
    assert sse_events(post(fake, body(stream=True))[2])[-1]["type"] == "message-end"  # used up


# -- failure injection ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 402, 404, 429, 500, 503])
def test_fail_next_default_bodies(fake: FakeCohere, status: int) -> None:
    fake.fail_next(status)
    assert "simulated failure" in error_of(fake, body(), status)
    assert post(fake, body())[0] == 200


def test_rate_limit_shape(fake: FakeCohere) -> None:
    fake.fail_next(429, 2, headers={"retry-after": "7"})
    for _ in range(2):
        status, headers, data = post(fake, body())
        assert (status, headers["retry-after"]) == (429, "7")
        assert "Trial key" in json.loads(data)["message"]
    assert post(fake, body())[0] == 200


def test_fail_next_custom(fake: FakeCohere) -> None:
    fake.fail_next(503, body={"custom": True})
    status, _, data = post(fake, body())
    assert (status, json.loads(data)) == (503, {"custom": True})
    fake.fail_next(500, body="plain text")
    assert post(fake, body())[2] == b"plain text"
    # Failures come before auth and validation.
    fake.fail_next(500)
    assert error_of(fake, {"bad": "request"}, 500, headers={"authorization": ""})
    fake.fail_next(500, 3)
    fake.reset()
    assert fake.requests == []
    assert post(fake, body())[0] == 200
    with pytest.raises(ValueError):
        fake.fail_next(999)


async def test_async_lifecycle_and_delay() -> None:
    async with FakeCohere(name="solo") as fake:
        assert fake.port > 0
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(fake.url + "/v2/chat", json=body("ping")) as resp:
                reply = await resp.json()
                assert reply["message"]["content"][0]["text"] == "Echo: ping"
            fake.delay_s = 1.0
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(
                    fake.url + "/v2/chat", json=body(), timeout=aiohttp.ClientTimeout(total=0.1)
                ):
                    pass
        assert len(fake.requests) == 2
    with pytest.raises(RuntimeError):
        async with fake, fake:
            pass
