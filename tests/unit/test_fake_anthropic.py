"""The fake Anthropic upstream, checked through raw HTTP and the official ``anthropic`` SDK."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.anthropic import ERROR_TYPES, FakeAnthropic, FakeAnthropicThread, error_type_for

try:
    import anthropic
except ImportError:  # the SDK tests skip; the raw HTTP tests still run
    anthropic = None  # type: ignore[assignment]

KEY = "sk-ant-test-key"
VERSION = "2023-06-01"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "detail": {
                "type": "object",
                "properties": {"hourly": {"type": "boolean"}, "note": {"type": "string"}},
                "required": ["hourly"],
            },
        },
        "required": ["city", "unit", "detail"],
    },
}
OTHER = {"name": "lookup_stock", "input_schema": {"type": "object", "properties": {}}}
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)


# Written out (not taken from the fake) so that a wrong table in the fake fails the tests.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


def body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropicThread(name="claude", api_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    server.reset()
    yield server
    server.reset()
    server.delay_s = 0.0
    server.stream_delay_s = 0.001
    server.max_body_bytes = 32 * 1024 * 1024
    server.models = None


def post(
    fake: FakeAnthropic,
    payload: Any,
    path: str = "/v1/messages",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    sent = {"content-type": "application/json", "x-api-key": KEY, "anthropic-version": VERSION}
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


def answer(fake: FakeAnthropic, payload: dict[str, Any]) -> dict[str, Any]:
    status, _, data = post(fake, payload)
    assert status == 200, data
    return json.loads(data)


def error_of(fake: FakeAnthropic, payload: Any, status: int = 400, **kw: Any) -> str:
    got, headers, data = post(fake, payload, **kw)
    assert got == status, data
    assert headers["content-type"] == "application/json"
    err = json.loads(data)
    assert err["type"] == "error"
    assert set(err) == {"type", "error", "request_id"}
    assert err["request_id"] == headers["request-id"]
    assert err["error"]["type"] == ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error")
    return err["error"]["message"]


def sse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    frames = data.decode().split("\n\n")
    assert frames[-1] == ""
    events = []
    for frame in frames[:-1]:
        event_line, data_line = frame.split("\n")
        name = event_line.removeprefix("event: ")
        payload = json.loads(data_line.removeprefix("data: "))
        assert payload["type"] == name
        events.append((name, payload))
    return events


# -- raw HTTP: answers ---------------------------------------------------------------------


def test_text_answer_and_recording(fake: FakeAnthropic) -> None:
    payload = body("hello there  friend", system="Be brief.")
    status, headers, data = post(fake, payload)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["request-id"].startswith("req_")
    message = json.loads(data)
    assert message["id"].startswith("msg_")
    assert message == {
        "id": message["id"],
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "Echo: hello there  friend"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 2 + 3,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    [recorded] = fake.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/messages")
    assert recorded.headers["x-api-key"] == KEY
    assert recorded.headers["anthropic-version"] == VERSION
    assert recorded.json() == payload

    again = answer(fake, body("hello there  friend", system="Be brief."))
    assert again["id"] != message["id"]
    assert again["content"] == message["content"]  # deterministic


def test_input_tokens_count_blocks_and_history(fake: FakeAnthropic) -> None:
    payload = body(
        system=[{"type": "text", "text": "one two", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": "three four five"},
            {"role": "assistant", "content": [{"type": "text", "text": "six"}]},
            {"role": "user", "content": [{"type": "text", "text": "seven eight"}]},
        ],
    )
    message = answer(fake, payload)
    assert message["usage"]["input_tokens"] == 8
    assert message["content"][0]["text"] == "Echo: seven eight"

    status, _, data = post(
        fake,
        {k: v for k, v in payload.items() if k != "max_tokens"},
        path="/v1/messages/count_tokens",
    )
    assert status == 200
    assert json.loads(data) == {"input_tokens": 8}
    # count_tokens takes no generation parameters, like the real endpoint.
    assert "max_tokens" in error_of(fake, payload, path="/v1/messages/count_tokens")


def test_max_tokens_and_stop_sequences(fake: FakeAnthropic) -> None:
    cut = answer(fake, body("alpha beta gamma", max_tokens=2))
    assert cut["content"] == [{"type": "text", "text": "Echo: alpha"}]
    assert (cut["stop_reason"], cut["stop_sequence"]) == ("max_tokens", None)
    assert cut["usage"]["output_tokens"] == 2

    stopped = answer(fake, body("alpha END beta STOP gamma", stop_sequences=["STOP", "END"]))
    assert stopped["content"] == [{"type": "text", "text": "Echo: alpha "}]
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "END")
    assert stopped["usage"]["output_tokens"] == 2

    untouched = answer(fake, body("alpha", stop_sequences=["zzz"], max_tokens=2))
    assert (untouched["stop_reason"], untouched["stop_sequence"]) == ("end_turn", None)


def test_accepts_the_full_request_surface(fake: FakeAnthropic) -> None:
    payload = body(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {
                        "type": "text",
                        "text": "what is in these pictures",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    },
                ],
            },
            {"role": "assistant", "content": "It shows"},  # prefill
        ],
        max_tokens=2048,
        stop_sequences=["\n\nHuman:"],
        top_p=0.9,
        top_k=40,
        temperature=1,
        metadata={"user_id": "user-123"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        stream=False,
    )
    message = answer(fake, payload)
    thinking, text = message["content"]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] == "The user wrote: what is in these pictures"
    assert thinking["signature"]
    assert text == {"type": "text", "text": "Echo: what is in these pictures"}
    assert message["usage"]["input_tokens"] == 5 + 2
    assert message["usage"]["output_tokens"] == 8 + 6


def test_tool_use_and_tool_result_round_trip(fake: FakeAnthropic) -> None:
    question = "What's the weather in Paris?"
    first = answer(fake, body(question, tools=[WEATHER, OTHER]))
    assert first["stop_reason"] == "tool_use"
    text, call = first["content"]
    assert text == {"type": "text", "text": "I'll use the get_weather tool."}
    assert call["type"] == "tool_use"
    assert call["id"].startswith("toolu_")
    assert call["name"] == "get_weather"
    assert call["input"] == {"city": question, "unit": "celsius", "detail": {"hourly": True}}
    compact = json.dumps(call["input"], separators=(",", ":"))
    assert first["usage"]["output_tokens"] == 5 + len(compact) // 4

    follow_up = body(
        messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": first["content"]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call["id"], "content": "15 degrees"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        tools=[WEATHER, OTHER],
        tool_choice={"type": "any"},
    )
    final = answer(fake, follow_up)
    assert final["content"] == [{"type": "text", "text": "The tool said: 15 degrees"}]
    assert final["stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    ("question", "choice", "expected"),
    [
        ("price of lookup_stock please", None, "lookup_stock"),  # names a tool
        ("use a tool", {"type": "auto"}, "get_weather"),  # says "tool"
        ("nothing relevant", {"type": "any"}, "get_weather"),
        ("nothing relevant", {"type": "tool", "name": "lookup_stock"}, "lookup_stock"),
        ("nothing relevant", None, None),
        ("weather please", {"type": "none"}, None),
    ],
)
def test_tool_choice(
    fake: FakeAnthropic, question: str, choice: dict[str, Any] | None, expected: str | None
) -> None:
    extra: dict[str, Any] = {"tools": [WEATHER, OTHER]}
    if choice is not None:
        extra["tool_choice"] = choice
    message = answer(fake, body(question, **extra))
    calls = [b["name"] for b in message["content"] if b["type"] == "tool_use"]
    assert calls == ([expected] if expected else [])
    assert message["stop_reason"] == ("tool_use" if expected else "end_turn")


# -- raw HTTP: refusals --------------------------------------------------------------------


def test_auth_and_version_headers(fake: FakeAnthropic) -> None:
    assert error_of(fake, body(), 401, headers={"x-api-key": ""}) == "x-api-key header is required"
    assert error_of(fake, body(), 401, headers={"x-api-key": "sk-wrong"}) == "invalid x-api-key"
    # OpenAI-style bearer auth is not what Anthropic takes.
    assert "x-api-key" in error_of(
        fake, body(), 401, headers={"x-api-key": "", "authorization": f"Bearer {KEY}"}
    )
    message = error_of(fake, body(), 400, headers={"anthropic-version": ""})
    assert message == "anthropic-version: header is required"
    assert "version" in error_of(fake, body(), 400, headers={"anthropic-version": "2099-01-01"})
    assert len(fake.requests) == 5


def test_no_key_configured_accepts_any_key() -> None:
    with FakeAnthropicThread() as open_fake:
        status, _, _ = post(open_fake, body(), headers={"x-api-key": ""})
        assert status == 200


def _tool_turns(*result_ids: str) -> list[dict[str, Any]]:
    """A tool round: one tool_use (toolu_1), then tool_results for ``result_ids``."""
    results = [
        {"type": "tool_result", "tool_use_id": r, "content": "sunny"}
        for r in result_ids or ("toolu_1",)
    ]
    return [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        {"role": "user", "content": results},
    ]


def _without(key: str) -> dict[str, Any]:
    payload = body()
    del payload[key]
    return payload


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no model", _without("model"), "model: Field required"),
    ("no max_tokens", _without("max_tokens"), "max_tokens: Field required"),
    ("max_tokens 0", body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    ("max_tokens str", body(max_tokens="10"), "max_tokens: Input should be a valid integer"),
    ("max_tokens bool", body(max_tokens=True), "max_tokens: Input should be a valid integer"),
    ("no messages", _without("messages"), "messages: Field required"),
    ("empty messages", body(messages=[]), "messages: at least one message is required"),
    ("messages dict", body(messages={"role": "user"}), "messages: Input should be a valid list"),
    (
        "system role",
        body(messages=[{"role": "system", "content": "x"}]),
        'Unexpected role "system"',
    ),
    ("tool role", body(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
    (
        "assistant first",
        body(messages=[{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]),
        'first message must use the "user" role',
    ),
    ("content int", body(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
    ("content empty", body(messages=[{"role": "user", "content": ""}]), "non-empty content"),
    (
        "unknown block",
        body(messages=[{"role": "user", "content": [{"type": "video", "url": "x"}]}]),
        "messages.0.content.0: Input tag 'video'",
    ),
    (
        "OpenAI image part",
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "Input tag 'image_url'",
    ),
    (
        "bad media type",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/bmp", "data": PNG},
                        }
                    ],
                }
            ]
        ),
        "media_type",
    ),
    (
        "empty text block",
        body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
        "text content blocks must be non-empty",
    ),
    (
        "extra message key",
        body(messages=[{"role": "user", "content": "x", "name": "bob"}]),
        "messages.0.name: Extra inputs are not permitted",
    ),
    (
        "trailing whitespace prefill",
        body(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y "}]),
        "final assistant content cannot end with trailing whitespace",
    ),
    (
        "unknown tool_use_id",
        body(messages=_tool_turns("toolu_1", "toolu_2")),
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2",
    ),
    (
        "tool_result for another id",
        body(messages=_tool_turns("toolu_2")),
        "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1",
    ),
    (
        "tool_result without tool_use",
        body(
            messages=[
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]}
            ]
        ),
        "unexpected `tool_use_id`",
    ),
    (
        "tool_use without tool_result",
        body(messages=[*_tool_turns()[:2], {"role": "user", "content": "never mind"}]),
        "messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_1",
    ),
    (
        "tool_use in user turn",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}],
                }
            ]
        ),
        "only allowed in assistant messages",
    ),
    ("system int", body(system=5), "system:"),
    ("system image", body(system=[{"type": "image", "source": {}}]), "system.0.type"),
    ("temperature high", body(temperature=1.5), "temperature: range: 0..1"),
    ("temperature low", body(temperature=-0.1), "temperature: range: 0..1"),
    ("top_p high", body(top_p=2), "top_p: range: 0..1"),
    ("stop whitespace", body(stop_sequences=[" "]), "non-whitespace"),
    ("stop not list", body(stop_sequences="STOP"), "stop_sequences"),
    ("metadata extra", body(metadata={"session": "x"}), "metadata.session"),
    ("tools no name", body(tools=[{"input_schema": {"type": "object"}}]), "custom.name"),
    ("tools no schema", body(tools=[{"name": "t"}]), "tools.0.custom.input_schema: Field required"),
    (
        "OpenAI-style tool",
        body(tools=[{"type": "function", "function": {"name": "t", "parameters": {}}}]),
        "Input tag 'function'",
    ),
    ("tool name chars", body(tools=[{**OTHER, "name": "bad name"}]), "String should match"),
    ("duplicate tools", body(tools=[OTHER, OTHER]), "Tool names must be unique"),
    ("tool_choice str", body(tools=[OTHER], tool_choice="auto"), "tool_choice"),
    ("tool_choice kind", body(tools=[OTHER], tool_choice={"type": "required"}), "'required'"),
    (
        "tool_choice no name",
        body(tools=[OTHER], tool_choice={"type": "tool"}),
        "tool_choice.tool.name: Field required",
    ),
    (
        "tool_choice unknown name",
        body(tools=[OTHER], tool_choice={"type": "tool", "name": "x"}),
        "Tool 'x' not found",
    ),
    ("tool_choice without tools", body(tool_choice={"type": "any"}), "while providing tools"),
    (
        "parallel not bool",
        body(tools=[OTHER], tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}),
        "disable_parallel_tool_use",
    ),
    (
        "bad cache_control",
        body(system=[{"type": "text", "text": "x", "cache_control": {}}]),
        "cache_control.type",
    ),
    (
        "thinking budget small",
        body(thinking={"type": "enabled", "budget_tokens": 100}),
        "budget_tokens",
    ),
    (
        "thinking budget over max",
        body(max_tokens=1500, thinking={"type": "enabled", "budget_tokens": 2000}),
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    (
        "thinking with temperature",
        body(max_tokens=2000, temperature=0.5, thinking={"type": "enabled", "budget_tokens": 1024}),
        "temperature",
    ),
    ("OpenAI field", body(n=2), "n: Extra inputs are not permitted"),
    ("stream not bool", body(stream="yes"), "stream: Input should be a valid boolean"),
]


@pytest.mark.parametrize(
    ("payload", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_requests(fake: FakeAnthropic, payload: dict[str, Any], expected: str) -> None:
    assert expected in error_of(fake, copy.deepcopy(payload))


def test_valid_tool_history_is_accepted(fake: FakeAnthropic) -> None:
    message = answer(fake, body(messages=_tool_turns(), tools=[WEATHER]))
    assert message["content"] == [{"type": "text", "text": "The tool said: sunny"}]


def test_http_level_refusals(fake: FakeAnthropic) -> None:
    assert "error parsing" in error_of(fake, b"{not json")
    assert error_of(fake, body(), 404, path="/v1/complete") == "Not Found"
    assert error_of(fake, None, 405, method="GET") == "Method Not Allowed"
    fake.max_body_bytes = 100
    assert "maximum allowed number of bytes" in error_of(fake, body("x" * 200), 413)
    fake.max_body_bytes = 10_000
    fake.models = ["claude-known"]
    assert error_of(fake, body(), 404) == "model: claude-test"
    # A prefixed base URL (as some gateways configure) still reaches the endpoint.
    status, _, _ = post(fake, {**body(), "model": "claude-known"}, path="/anthropic/v1/messages")
    assert status == 200


# -- raw HTTP: streaming -------------------------------------------------------------------


def test_stream_event_sequence(fake: FakeAnthropic) -> None:
    status, headers, data = post(fake, body("tell me a story", stream=True))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    events = sse_events(data)
    names = [name for name, _ in events]
    text = "Echo: tell me a story"
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * len(text.split()),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["model"] == "claude-test"
    assert start["usage"]["input_tokens"] == 4
    assert start["usage"]["output_tokens"] == 1
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [e["delta"] for n, e in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == text
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 5},
    }


def test_stream_tool_use_and_thinking(fake: FakeAnthropic) -> None:
    payload = body(
        "weather in Oslo",
        tools=[WEATHER],
        stream=True,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    events = sse_events(post(fake, payload)[2])
    starts = [e["content_block"] for n, e in events if n == "content_block_start"]
    assert [s["type"] for s in starts] == ["thinking", "text", "tool_use"]
    assert starts[2]["input"] == {}
    assert starts[2]["name"] == "get_weather"
    by_index: dict[int, list[dict[str, Any]]] = {}
    for name, event in events:
        if name == "content_block_delta":
            by_index.setdefault(event["index"], []).append(event["delta"])
    assert by_index[0][-1]["type"] == "signature_delta"
    assert {d["type"] for d in by_index[0][:-1]} == {"thinking_delta"}
    json_pieces = [d["partial_json"] for d in by_index[2]]
    assert all(d["type"] == "input_json_delta" for d in by_index[2])
    assert json_pieces[0] == ""  # Anthropic opens with an empty partial_json
    assert len(json_pieces) > 3
    assert json.loads("".join(json_pieces))["city"] == "weather in Oslo"
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_stream_events_arrive_as_separate_writes() -> None:
    async with FakeAnthropic() as fake:
        headers = {"x-api-key": "k", "anthropic-version": VERSION}
        payload = body("one two three four five six seven eight", stream=True)
        async with (
            aiohttp.ClientSession() as session,
            session.post(fake.url + "/v1/messages", json=payload, headers=headers) as resp,
        ):
            chunks = [chunk async for chunk in resp.content.iter_any()]
        assert len(chunks) > 5
        assert b"".join(chunks).endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_break_next_stream(fake: FakeAnthropic) -> None:
    fake.break_next_stream(after_events=4)
    events = sse_events(post(fake, body("a b c d e f", stream=True))[2])
    assert [n for n, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    fake.break_next_stream(after_events=1, error_type=None)
    assert [n for n, _ in sse_events(post(fake, body(stream=True))[2])] == ["message_start"]
    fake.truncate_streams = 1
    assert len(sse_events(post(fake, body(stream=True))[2])) == 2
    assert sse_events(post(fake, body(stream=True))[2])[-1][0] == "message_stop"  # used up


# -- raw HTTP: failure injection -----------------------------------------------------------


@pytest.mark.parametrize("status", sorted(ANTHROPIC_ERROR_TYPES))
def test_fail_next_default_bodies(fake: FakeAnthropic, status: int) -> None:
    fake.fail_next(status)
    assert "simulated failure" in error_of(fake, body(), status)
    assert post(fake, body())[0] == 200


def test_error_table_is_anthropics() -> None:
    assert {k: v for k, v in ANTHROPIC_ERROR_TYPES.items() if k != 503} == ERROR_TYPES
    assert (error_type_for(503), error_type_for(409), error_type_for(422)) == (
        "api_error",
        "invalid_request_error",
        "invalid_request_error",
    )


def test_fail_next_custom(fake: FakeAnthropic) -> None:
    fake.fail_next(429, 2, headers={"retry-after": "7"})
    for _ in range(2):
        status, headers, _ = post(fake, body())
        assert (status, headers["retry-after"]) == (429, "7")
    assert post(fake, body())[0] == 200
    fake.fail_next(503, body={"custom": True})
    status, _, data = post(fake, body())
    assert (status, json.loads(data)) == (503, {"custom": True})
    # Failures come before validation: even a bad request gets the injected answer.
    fake.fail_next(529)
    assert error_of(fake, {"bad": "request"}, 529)
    fake.fail_next(500, 3)
    fake.reset()
    assert fake.requests == []
    assert post(fake, body())[0] == 200
    with pytest.raises(ValueError):
        fake.fail_next(999)


async def test_async_lifecycle_and_delay() -> None:
    async with FakeAnthropic(name="solo") as fake:
        assert fake.port > 0
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        headers = {"anthropic-version": VERSION}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                fake.url + "/v1/messages", json=body("ping"), headers=headers
            ) as resp:
                assert (await resp.json())["content"][0]["text"] == "Echo: ping"
            fake.delay_s = 1.0
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(
                    fake.url + "/v1/messages",
                    json=body(),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=0.1),
                ):
                    pass
        assert len(fake.requests) == 2
    with pytest.raises(RuntimeError):
        async with fake, fake:
            pass


# -- the official SDK ----------------------------------------------------------------------


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[Any]:
    sdk = pytest.importorskip("anthropic")
    # trust_env=False: a proxy configured in the environment must not intercept 127.0.0.1.
    with sdk.Anthropic(
        api_key=KEY,
        base_url=fake.url,
        max_retries=0,
        timeout=5.0,
        http_client=sdk.DefaultHttpxClient(trust_env=False),
    ) as c:
        yield c


def test_sdk_create(fake: FakeAnthropic, client: Any) -> None:
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello, Claude"}],
        metadata={"user_id": "u1"},
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: Hello, Claude"
    assert message.stop_reason == "end_turn"
    assert message.model == "claude-sonnet-4-5"
    assert message.usage.input_tokens == 5
    assert message.usage.output_tokens == 3
    assert message._request_id.startswith("req_")
    [recorded] = fake.requests
    assert recorded.headers["anthropic-version"] == VERSION
    assert recorded.headers["x-api-key"] == KEY
    counted = client.messages.count_tokens(
        model="claude-sonnet-4-5",
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello, Claude"}],
    )
    assert counted.input_tokens == 5


def test_sdk_stream(fake: FakeAnthropic, client: Any) -> None:
    with client.messages.stream(
        model="claude-test",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream this please"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "Echo: stream this please"
    assert len(pieces) == 4
    assert final.content[0].text == "Echo: stream this please"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4
    assert final.usage.input_tokens == 3


def test_sdk_tool_loop(fake: FakeAnthropic, client: Any) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Rome?"}]
    with client.messages.stream(
        model="claude-test", max_tokens=256, messages=messages, tools=[WEATHER]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use"
    assert call.input == {"city": "Weather in Rome?", "unit": "celsius", "detail": {"hourly": True}}
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22C, sunny"}],
        },
    ]
    final = client.messages.create(
        model="claude-test", max_tokens=256, messages=messages, tools=[WEATHER]
    )
    assert final.content[0].text == "The tool said: 22C, sunny"
    assert final.stop_reason == "end_turn"


def test_sdk_errors(fake: FakeAnthropic, client: Any) -> None:
    sdk = anthropic
    assert sdk is not None
    kwargs: dict[str, Any] = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    fake.fail_next(429, headers={"retry-after": "3"})
    with pytest.raises(sdk.RateLimitError) as limited:
        client.messages.create(**kwargs)
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    assert limited.value.request_id == limited.value.body["request_id"]

    fake.fail_next(529)
    with pytest.raises(sdk.OverloadedError):
        client.messages.create(**kwargs)
    fake.fail_next(500)
    with pytest.raises(sdk.InternalServerError):
        client.messages.create(**kwargs)
    with pytest.raises(sdk.BadRequestError) as bad:
        client.messages.create(**{**kwargs, "temperature": 3})
    assert "temperature" in bad.value.message
    with (
        sdk.Anthropic(
            api_key="sk-wrong",
            base_url=fake.url,
            max_retries=0,
            http_client=sdk.DefaultHttpxClient(trust_env=False),
        ) as wrong,
        pytest.raises(sdk.AuthenticationError),
    ):
        wrong.messages.create(**kwargs)

    fake.break_next_stream(after_events=4)
    with (
        pytest.raises(sdk.APIStatusError) as broken,
        client.messages.stream(
            **{**kwargs, "messages": [{"role": "user", "content": "a b c"}]}
        ) as stream,
    ):
        stream.get_final_message()
    assert broken.value.body["error"]["type"] == "overloaded_error"
    assert client.messages.create(**kwargs).content[0].text == "Echo: hi"
