"""The fake Gemini upstream over raw HTTP, and the Gemini codec against it."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from edge_agent.api.sse import SSEParser
from edge_agent.translate.gemini import CODEC, GeminiStreamToChat
from tests.fakes.gemini import STATUSES, FakeGemini, FakeGeminiThread, status_for

KEY = "AIza-test-key"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "INTEGER"},
            "detail": {
                "type": "OBJECT",
                "properties": {"hourly": {"type": "BOOLEAN"}, "note": {"type": "STRING"}},
                "required": ["hourly"],
            },
        },
        "required": ["city", "unit", "detail"],
    },
}
STOCK = {"name": "lookup_stock", "parameters": {"type": "object", "properties": {"t": {}}}}
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)

# Written out (not taken from the fake) so that a wrong table in the fake fails the tests.
GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGemini]:
    with FakeGeminiThread(name="gem", api_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeGemini) -> Iterator[FakeGemini]:
    server.reset()
    yield server


def post(
    fake: FakeGemini,
    payload: Any,
    model: str = "gemini-test",
    method: str = "generateContent",
    query: str = "",
    headers: dict[str, str] | None = None,
    prefix: str = "",
) -> tuple[int, dict[str, str], bytes]:
    url = f"{fake.url}{prefix}/v1beta/models/{model}:{method}{query}"
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(
        url,
        data=data,
        headers={"content-type": "application/json", "x-goog-api-key": KEY, **(headers or {})},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxy
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def answer(fake: FakeGemini, payload: Any, **kwargs: Any) -> dict[str, Any]:
    status, _, data = post(fake, payload, **kwargs)
    assert status == 200, data
    return json.loads(data)


def error_of(fake: FakeGemini, payload: Any, status: int = 400, **kwargs: Any) -> str:
    got, headers, data = post(fake, payload, **kwargs)
    assert got == status, data
    assert headers["content-type"].startswith("application/json")
    error = json.loads(data)["error"]
    assert error["code"] == status
    assert error["status"] == GOOGLE_STATUSES.get(status, error["status"])
    return error["message"]


def sse_events(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in SSEParser().feed(data)]


def parts_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    return response["candidates"][0]["content"]["parts"]


# -- answers ---------------------------------------------------------------------------------


def test_echo_with_usage_and_recording(fake: FakeGemini) -> None:
    payload = body(
        "tell me something",
        systemInstruction={"parts": [{"text": "You are terse."}]},
        generationConfig={"temperature": 0.2, "topP": 0.9, "seed": 3},
    )
    out = answer(fake, payload)
    assert out["candidates"] == [
        {
            "content": {"parts": [{"text": "Echo: tell me something"}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ]
    usage = out["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"]) == (6, 4)
    assert usage["totalTokenCount"] == 10
    assert out["modelVersion"] == "gemini-test" and out["responseId"]
    [recorded] = fake.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1beta/models/gemini-test:generateContent"
    assert recorded.headers["x-goog-api-key"] == KEY
    assert recorded.json() == payload


def test_snake_case_fields_prefix_paths_and_query_key(fake: FakeGemini) -> None:
    payload = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "system_instruction": {"parts": [{"text": "sys"}]},
        "generation_config": {"max_output_tokens": 1},
    }
    out = answer(
        fake, payload, prefix="/proxy", query=f"?key={KEY}", headers={"x-goog-api-key": ""}
    )
    assert parts_of(out) == [{"text": "Echo:"}]
    assert out["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_generation_controls(fake: FakeGemini) -> None:
    out = answer(fake, body("alpha beta STOP gamma", generationConfig={"stopSequences": ["STOP"]}))
    assert parts_of(out) == [{"text": "Echo: alpha beta "}]
    assert out["candidates"][0]["finishReason"] == "STOP"
    out = answer(fake, body("two", generationConfig={"candidateCount": 3}))
    assert [c["index"] for c in out["candidates"]] == [0, 1, 2]
    json_out = answer(fake, body("q", generationConfig={"responseMimeType": "application/json"}))
    assert json.loads(parts_of(json_out)[0]["text"]) == {"echo": "q"}
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    config = {"responseMimeType": "application/json", "responseSchema": schema}
    shaped = answer(fake, body("q", generationConfig=config))
    assert json.loads(parts_of(shaped)[0]["text"]) == {"n": 1, "tags": ["q"]}


def test_safety_outcomes(fake: FakeGemini) -> None:
    blocked = answer(fake, body("please [blocked]"))
    assert "candidates" not in blocked
    assert blocked["promptFeedback"] == {"blockReason": "SAFETY"}
    unsafe = answer(fake, body("please [unsafe]"))
    assert unsafe["candidates"] == [{"finishReason": "SAFETY", "index": 0}]


def test_images_are_accepted(fake: FakeGemini) -> None:
    payload = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "what is it"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG}},
                    {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a.png"}},
                ],
            }
        ]
    }
    out = answer(fake, payload)
    assert parts_of(out) == [{"text": "Echo: what is it"}]
    assert out["usageMetadata"]["promptTokenCount"] == 3 + 2 * 258


# -- function calling ------------------------------------------------------------------------


def test_function_call_from_the_required_parameters(fake: FakeGemini) -> None:
    out = answer(fake, body("Weather in Oslo?", tools=[{"functionDeclarations": [WEATHER, STOCK]}]))
    [part] = parts_of(out)
    assert part["functionCall"] == {
        "name": "get_weather",
        "args": {"city": "Weather in Oslo?", "unit": "celsius", "detail": {"hourly": True}},
    }
    assert isinstance(part["thoughtSignature"], str) and part["thoughtSignature"]
    assert out["candidates"][0]["finishReason"] == "STOP"  # Gemini says STOP for calls too


def test_function_choice_by_name_mode_and_allowed_names(fake: FakeGemini) -> None:
    tools = [{"functionDeclarations": [WEATHER, STOCK]}]
    named = answer(fake, body("please lookup_stock now", tools=tools))
    assert parts_of(named)[0]["functionCall"]["name"] == "lookup_stock"
    plain = answer(fake, body("hello", tools=tools))
    assert parts_of(plain) == [{"text": "Echo: hello"}]
    config = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup_stock"]}}
    forced = answer(fake, body("hello", tools=tools, toolConfig=config))
    assert parts_of(forced)[0]["functionCall"] == {"name": "lookup_stock", "args": {}}
    none = answer(
        fake, body("weather?", tools=tools, toolConfig={"functionCallingConfig": {"mode": "NONE"}})
    )
    assert parts_of(none) == [{"text": "Echo: weather?"}]


def test_function_response_is_answered(fake: FakeGemini) -> None:
    payload = {
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "22C"}}}
                ],
            },
        ],
        "tools": [{"functionDeclarations": [WEATHER]}],
    }
    assert parts_of(answer(fake, payload)) == [{"text": "The tool said: 22C"}]
    payload["contents"][2]["parts"][0]["functionResponse"]["response"] = {"temp": 22}
    assert parts_of(answer(fake, payload)) == [{"text": 'The tool said: {"temp":22}'}]
    # Gemini 3 wants the call turn's thought signature back.
    assert "thought_signature" in error_of(fake, payload, model="gemini-3-pro")
    payload["contents"][1]["parts"][0]["thoughtSignature"] = "skip_thought_signature_validator"
    assert answer(fake, payload, model="gemini-3-pro")["candidates"]


# -- validation ------------------------------------------------------------------------------

CALL_TURN = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}] * 2}


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({}, "contents is not specified"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user"}]}, "parts must not be empty"),
        ({"contents": [{"role": "user", "parts": []}]}, "parts must not be empty"),
        ({"contents": [{"role": "user", "parts": [{"txt": "x"}]}]}, 'Unknown name "txt"'),
        ({"contents": [{"role": "user", "parts": [{}]}]}, "oneof field 'data'"),
        ({"contents": [{"parts": [{"text": "a", "inlineData": {}}]}]}, "already set"),
        ({"contents": [{"parts": [{"text": 5}]}]}, "TYPE_STRING"),
        ({"contents": [{"content": "x"}]}, 'Unknown name "content"'),
        ({**body(), "messages": []}, 'Unknown name "messages"'),
        ({**body(), "generationConfig": {"maxOutputTokens": "10"}}, "max_output_tokens"),
        ({**body(), "generationConfig": {"temperature": 3}}, "temperature"),
        ({**body(), "generationConfig": {"max_tokens": 3}}, 'Unknown name "max_tokens"'),
        ({**body(), "generationConfig": {"responseMimeType": "text/html"}}, "mimetypes"),
        ({**body(), "generationConfig": {"responseSchema": {"type": "object"}}}, "response_mime"),
        (
            {**body(), "generationConfig": {"candidateCount": True}},
            "candidate_count' (TYPE_INT32)",
        ),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "@@"}}]}]},
            "Base64",
        ),
        ({"contents": [{"parts": [{"text": "x", "thoughtSignature": "no way!"}]}]}, "Base64"),
        (
            {
                **body(),
                "tools": [
                    {
                        "functionDeclarations": [
                            {
                                "name": "f",
                                "parameters": {"type": "object", "additionalProperties": False},
                            }
                        ]
                    }
                ],
            },
            'Unknown name "additionalProperties"',
        ),
        (
            {
                **body(),
                "tools": [
                    {"functionDeclarations": [{"name": "f", "parameters": {"type": "object"}}]}
                ],
            },
            "should be non-empty for OBJECT type",
        ),
        ({**body(), "tools": [{"functionDeclarations": [{"name": "9lives"}]}]}, "function name"),
        (
            {**body(), "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
            "SOMETIMES",
        ),
        (
            {
                **body(),
                "tools": [{"functionDeclarations": [{"name": "f"}]}],
                "toolConfig": {
                    "functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}
                },
            },
            "only be set when mode is ANY",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    CALL_TURN,
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": {}}}],
                    },
                ]
            },
            "number of function response parts",
        ),
    ],
)
def test_validation_like_google(fake: FakeGemini, payload: dict[str, Any], needle: str) -> None:
    assert needle in error_of(fake, payload)


def test_not_json_and_unknown_routes(fake: FakeGemini) -> None:
    assert "Invalid JSON" in error_of(fake, b"{nope")
    assert "Invalid JSON" not in error_of(fake, body(), 404, method="countTokens")


# -- streaming -------------------------------------------------------------------------------


def test_sse_stream(fake: FakeGemini) -> None:
    status, headers, data = post(
        fake, body("one two three four five"), method="streamGenerateContent", query="?alt=sse"
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert data.startswith(b"data: {") and data.endswith(b"}\r\n\r\n")  # Google's framing
    events = sse_events(data)
    assert len(events) == 3
    text = "".join(p["text"] for e in events for p in e["candidates"][0]["content"]["parts"])
    assert text == "Echo: one two three four five"
    assert [e["candidates"][0].get("finishReason") for e in events] == [None, None, "STOP"]
    assert ["usageMetadata" in e for e in events] == [False, False, True]
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 6
    assert len({e["responseId"] for e in events}) == 1


def test_stream_without_alt_sse_is_a_json_array(fake: FakeGemini) -> None:
    status, headers, data = post(fake, body("a b c"), method="streamGenerateContent")
    assert status == 200 and headers["content-type"].startswith("application/json")
    events = json.loads(data)
    assert isinstance(events, list) and events[-1]["candidates"][0]["finishReason"] == "STOP"


def test_stream_function_call_and_truncation(fake: FakeGemini) -> None:
    tools = [{"functionDeclarations": [WEATHER]}]
    raw = post(
        fake, body("weather?", tools=tools), method="streamGenerateContent", query="?alt=sse"
    )
    [event] = sse_events(raw[2])
    assert event["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert event["candidates"][0]["finishReason"] == "STOP"
    fake.truncate_streams = 2
    for text in ("a b c d e f g h", "short"):
        cut = sse_events(
            post(fake, body(text), method="streamGenerateContent", query="?alt=sse")[2]
        )
        assert cut and all("finishReason" not in e["candidates"][0] for e in cut)
        assert all("usageMetadata" not in e for e in cut)
    whole = sse_events(post(fake, body("x"), method="streamGenerateContent", query="?alt=sse")[2])
    assert whole[-1]["candidates"][0]["finishReason"] == "STOP"  # used up


async def test_stream_events_arrive_as_separate_writes() -> None:
    async with FakeGemini() as fake:
        url = fake.url + "/v1beta/models/m:streamGenerateContent?alt=sse"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body("one two three four five six seven eight nine")) as resp,
        ):
            chunks = [chunk async for chunk in resp.content.iter_any()]
        assert len(chunks) > 3
        assert b"".join(chunks).endswith(b"}\r\n\r\n")


# -- auth and failures -----------------------------------------------------------------------


def test_auth_like_google(fake: FakeGemini) -> None:
    message = error_of(fake, body(), 403, headers={"x-goog-api-key": ""})
    assert "unregistered callers" in message
    status, _, data = post(fake, body(), headers={"x-goog-api-key": "AIza-wrong"})
    error = json.loads(data)["error"]
    # Google answers a wrong API key with 400, not 401.
    assert (status, error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize("status", sorted(GOOGLE_STATUSES))
def test_fail_next_default_bodies(fake: FakeGemini, status: int) -> None:
    fake.fail_next(status)
    assert "simulated failure" in error_of(fake, body(), status)
    assert post(fake, body())[0] == 200


def test_status_table_is_googles() -> None:
    assert {k: v for k, v in STATUSES.items() if k in GOOGLE_STATUSES} == GOOGLE_STATUSES
    assert (status_for(502), status_for(418)) == ("INTERNAL", "FAILED_PRECONDITION")


def test_fail_next_custom_and_reset(fake: FakeGemini) -> None:
    fake.fail_next(429, 2, headers={"retry-after": "7"})
    for _ in range(2):
        status, headers, _ = post(fake, body())
        assert (status, headers["retry-after"]) == (429, "7")
    assert post(fake, body())[0] == 200
    fake.fail_next(503, body={"custom": True})
    status, _, data = post(fake, body())
    assert (status, json.loads(data)) == (503, {"custom": True})
    fake.fail_next(500)
    assert error_of(fake, {"bad": "request"}, 500)  # failures come before validation
    fake.fail_next(500, 3)
    fake.reset()
    assert fake.requests == []
    assert post(fake, body())[0] == 200
    with pytest.raises(ValueError):
        fake.fail_next(999)


async def test_models_list_delay_and_lifecycle() -> None:
    async with FakeGemini(name="solo", models=["gemini-ok"]) as fake:
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        base = fake.url + "/v1beta/models/"
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "gemini-ok:generateContent", json=body("ping")) as resp:
                assert (await resp.json())["candidates"][0]["content"]["parts"][0]["text"] == (
                    "Echo: ping"
                )
            async with session.post(base + "other:generateContent", json=body()) as resp:
                error = (await resp.json())["error"]
                assert (resp.status, error["status"]) == (404, "NOT_FOUND")
                assert "models/other is not found" in error["message"]
            fake.delay_s = 1.0
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(
                    base + "gemini-ok:generateContent",
                    json=body(),
                    timeout=aiohttp.ClientTimeout(total=0.1),
                ):
                    pass
        assert len(fake.requests) == 3
    with pytest.raises(RuntimeError):
        async with fake, fake:
            pass


# -- the codec against the fake ---------------------------------------------------------------


def test_codec_tool_loop_against_the_fake(fake: FakeGemini) -> None:
    """The codec's requests pass Google's validation, and its answers close the loop."""
    codec = CODEC
    model = "gemini-3-flash"  # the strict one: thought signatures must come back
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"]}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    chat: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Rome?"}, image]},
        ],
        "tools": [tool, {"type": "function", "function": {"name": "now"}}],
        "tool_choice": "auto",
        "max_tokens": 100,
        "stop": ["\n\n"],
        "response_format": {"type": "text"},
    }
    first = codec.response_to_chat(
        answer(fake, codec.request_from_chat(chat, model), model=model), model
    )
    message = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    [call] = message["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Weather in Rome?"}
    chat["messages"] += [message, {"role": "tool", "tool_call_id": call["id"], "content": "22C"}]
    final = codec.response_to_chat(
        answer(fake, codec.request_from_chat(chat, model), model=model), model
    )
    assert final["choices"][0]["message"]["content"] == "The tool said: 22C"
    assert final["usage"]["total_tokens"] > 0
    # A history from elsewhere (no signature) still passes, thanks to the sentinel.
    del chat["messages"][2]["tool_calls"][0]["extra_content"]
    assert answer(fake, codec.request_from_chat(chat, model), model=model)["candidates"]


def test_codec_stream_against_the_fake(fake: FakeGemini) -> None:
    codec = CODEC
    chat = {"messages": [{"role": "user", "content": "stream this please now"}], "stream": True}
    _, _, raw = post(
        fake, codec.request_from_chat(chat, "g"), method="streamGenerateContent", query="?alt=sse"
    )
    tr = codec.stream_to_chat("g", include_usage=True)
    assert isinstance(tr, GeminiStreamToChat)
    out = b"".join(tr.feed(raw[i : i + 13]) for i in range(0, len(raw), 13)) + tr.finish()
    events = SSEParser().feed(out)
    assert events[-1].data == "[DONE]" and tr.finished
    chunks = [json.loads(e.data) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Echo: stream this please now"
    assert chunks[-1]["usage"] == tr.usage and tr.usage["completion_tokens"] == 5
