"""Cohere v2 chat ⇄ OpenAI chat: requests, refusals, answers, errors, streams, the adapter."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint
from edge_agent.api.sse import SSEParser, StreamAssembler
from edge_agent.config import Provider
from edge_agent.providers.cohere import CohereAdapter
from edge_agent.translate.cohere import CODEC, CohereStreamToChat
from tests.fakes.cohere import TEMPLATE_TOKENS, FakeCohere, FakeCohereThread

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
STOCK = {"type": "function", "function": {"name": "lookup_stock", "parameters": {}}}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "smart", "messages": [{"role": "user", "content": "hi"}], **extra}


def provider(base_url: str) -> Provider:
    # "cohere" is still a planned type in config.py; construct without validation.
    return Provider.model_construct(name="co", type="cohere", base_url=base_url)


# =========================================================================== requests


def test_request_maps_roles_tools_and_parameters() -> None:
    body = {
        "model": "smart",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": [{"type": "text", "text": "18C"}],
            },
            {"role": "system", "content": "Use metric units."},
            {"role": "assistant", "content": [{"type": "text", "text": "It is 18C."}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER],
        "tool_choice": "required",
        "max_completion_tokens": 50,
        "max_tokens": 999,  # max_completion_tokens wins, as in OpenAI
        "temperature": 0.2,
        "top_p": 0.5,
        "stop": "END",
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-7",  # no counterpart, does not change the answer
    }
    out = CODEC.request_from_chat(body, "command-a-03-2025")
    assert out == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be brief.\n\nUse metric units."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
                "tool_plan": "Let me look.",
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "assistant", "content": "It is 18C."},
            {"role": "user", "content": "Thanks"},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "frequency_penalty": 0.1,
        "presence_penalty": 0,
        "p": 0.5,
        "stop_sequences": ["END"],
        "seed": 7,
        "tools": [WEATHER],
        "tool_choice": "REQUIRED",
        "stream": True,
    }


def test_images_pass_as_v2_image_url_parts() -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    out = CODEC.request_from_chat(chat(messages=[{"role": "user", "content": content}]), "m")
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"top_p": 1}, 0.99),  # Cohere's p stops at 0.99
        ({"top_p": 0}, 0.01),
        ({"top_p": 0.3}, 0.3),
    ],
)
def test_top_p_is_clamped_into_cohere_range(extra: dict[str, Any], expected: float) -> None:
    assert CODEC.request_from_chat(chat(**extra), "m")["p"] == expected


@pytest.mark.parametrize(
    ("choice", "tools", "expected"),
    [
        (None, [WEATHER], None),
        ("auto", [WEATHER], None),
        ("none", [WEATHER], "NONE"),
        ("required", [WEATHER, STOCK], "REQUIRED"),
        ({"type": "function", "function": {"name": "get_weather"}}, [WEATHER], "REQUIRED"),
    ],
)
def test_tool_choice(choice: Any, tools: list[dict[str, Any]], expected: str | None) -> None:
    extra: dict[str, Any] = {"tools": tools}
    if choice is not None:
        extra["tool_choice"] = choice
    out = CODEC.request_from_chat(chat(**extra), "m")
    assert out.get("tool_choice") == expected
    assert [t["function"]["name"] for t in out["tools"]] == [t["function"]["name"] for t in tools]
    assert out["tools"][-1]["function"]["parameters"] == (
        tools[-1]["function"]["parameters"] or {"type": "object", "properties": {}}
    )


def test_response_formats_and_strict_tools() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    out = CODEC.request_from_chat(
        chat(
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        ),
        "m",
    )
    assert out["response_format"] == {"type": "json_object", "json_schema": schema}
    out = CODEC.request_from_chat(chat(response_format={"type": "json_object"}), "m")
    assert out["response_format"] == {"type": "json_object"}
    assert "response_format" not in CODEC.request_from_chat(
        chat(response_format={"type": "text"}), "m"
    )
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    out = CODEC.request_from_chat(chat(tools=[strict]), "m")
    assert out["strict_tools"] is True
    assert "strict" not in out["tools"][0]["function"]  # Cohere's flag is request-wide
    assert "strict_tools" not in CODEC.request_from_chat(chat(tools=[WEATHER]), "m")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"temperature": 1.5}, "temperature"),
        ({"frequency_penalty": -0.5}, "frequency_penalty"),
        ({"presence_penalty": 1.2}, "presence_penalty"),
        (
            {
                "tools": [WEATHER, STOCK],
                "tool_choice": {"type": "function", "function": {"name": "lookup_stock"}},
            },
            "tool_choice",
        ),
        ({"tools": [WEATHER], "parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        (
            {
                "tools": [
                    WEATHER,
                    {"type": "function", "function": {**STOCK["function"], "strict": True}},
                ]
            },
            "tools",
        ),
        ({"response_format": {"type": "grammar"}}, "response_format.type"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "x"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "function", "name": "f", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_untranslatable_requests_are_refused(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as refused:
        CODEC.request_from_chat(chat(**extra), "m")
    assert refused.value.status == 400
    assert refused.value.param == param
    assert refused.value.code == "untranslatable_parameter"
    assert "Cohere" in refused.value.message


def test_neutral_values_are_not_refused() -> None:
    out = CODEC.request_from_chat(
        chat(n=1, logprobs=False, modalities=["text"], parallel_tool_calls=True, temperature=1),
        "m",
    )
    assert out["temperature"] == 1 and "logprobs" not in out and "n" not in out


# =========================================================================== answers


def cohere_answer(**extra: Any) -> dict[str, Any]:
    return {
        "id": "c0ffee",
        "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        "usage": {
            "billed_units": {"input_tokens": 5, "output_tokens": 2},
            "tokens": {"input_tokens": 71, "output_tokens": 3},
        },
        **extra,
    }


def test_text_answer_and_usage_from_tokens() -> None:
    out = CODEC.response_to_chat(cohere_answer(), "command-a")
    assert out["id"] == "chatcmpl-c0ffee"
    assert out["object"] == "chat.completion"
    assert out["model"] == "command-a"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert out["usage"] == {"prompt_tokens": 71, "completion_tokens": 3, "total_tokens": 74}


def test_usage_falls_back_to_billed_units_and_reports_cache() -> None:
    usage = {"billed_units": {"input_tokens": 5.0, "output_tokens": 2.0}, "cached_tokens": 4.0}
    out = CODEC.response_to_chat(cohere_answer(usage=usage), "m")
    assert out["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    assert "usage" not in CODEC.response_to_chat(cohere_answer(usage=None), "m")


def test_tool_call_answer_carries_the_tool_plan_as_content() -> None:
    message = {
        "role": "assistant",
        "tool_plan": "I will look up the weather.",
        "tool_calls": [
            {
                "id": "get_weather_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
        "citations": [{"start": 0, "end": 1, "text": "I", "sources": []}],
    }
    out = CODEC.response_to_chat(cohere_answer(message=message, finish_reason="TOOL_CALL"), "m")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "I will look up the weather.",
        "tool_calls": [
            {
                "id": "get_weather_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }


def test_thinking_becomes_reasoning_content() -> None:
    content = [{"type": "thinking", "thinking": "Hmm."}, {"type": "text", "text": "Yes."}]
    message = {"role": "assistant", "content": content}
    out = CODEC.response_to_chat(cohere_answer(message=message), "m")["choices"][0]["message"]
    assert out == {"role": "assistant", "content": "Yes.", "reasoning_content": "Hmm."}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("COMPLETE", "stop"),
        ("STOP_SEQUENCE", "stop"),
        ("MAX_TOKENS", "length"),
        ("TOOL_CALL", "tool_calls"),
        ("ERROR", "stop"),
        ("TIMEOUT", "stop"),
        ("SOMETHING_NEW", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(
    reason: str | None, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_agent.providers.cohere"):
        out = CODEC.response_to_chat(cohere_answer(finish_reason=reason), "m")
    assert out["choices"][0]["finish_reason"] == expected
    logged = any(str(reason) in r.getMessage() for r in caplog.records)
    assert logged == (reason in ("ERROR", "TIMEOUT"))


# =========================================================================== errors


@pytest.mark.parametrize(
    ("status", "body", "message", "kind"),
    [
        (400, b'{"id":"x","message":"invalid request: bad"}', "invalid request: bad", None),
        (401, b'{"message":"invalid api token"}', "invalid api token", "authentication_error"),
        (429, b'{"id":"r","message":"Trial key limit"}', "Trial key limit", "rate_limit_error"),
        (404, b'{"message":"model not found"}', "model not found", "not_found_error"),
        (500, b'{"message":"internal"}', "internal", "api_error"),
        (503, b"upstream connect error", "The provider answered: upstream connect error", None),
        (502, b"", "The provider answered an error.", "api_error"),
        (418, b'{"error":{"message":"proxied"}}', "proxied", "invalid_request_error"),
    ],
)
def test_errors_become_openai_envelopes(
    status: int, body: bytes, message: str, kind: str | None
) -> None:
    out = orjson.loads(CODEC.error_to_chat(status, body))
    assert set(out) == {"error"}
    assert out["error"]["message"] == message
    assert out["error"]["param"] is None and out["error"]["code"] is None
    expected = kind or ("api_error" if status >= 500 else "invalid_request_error")
    assert out["error"]["type"] == expected


# =========================================================================== streams


def _frame(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _cohere_stream(finish: str = "TOOL_CALL", end: bool = True) -> bytes:
    usage = {
        "billed_units": {"input_tokens": 7, "output_tokens": 9},
        "tokens": {"input_tokens": 20, "output_tokens": 9},
    }
    events: list[dict[str, Any]] = [
        {
            "id": "m-1",
            "type": "message-start",
            "delta": {"message": {"role": "assistant", "content": [], "tool_calls": []}},
        },
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will"}}},
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": " check."}}},
        {
            "type": "tool-call-start",
            "index": 0,
            "delta": {
                "message": {
                    "tool_calls": {
                        "id": "get_weather_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                }
            },
        },
        {
            "type": "tool-call-delta",
            "index": 0,
            "delta": {"message": {"tool_calls": {"function": {"arguments": '{"ci'}}}},
        },
        {
            "type": "tool-call-delta",
            "index": 0,
            "delta": {"message": {"tool_calls": {"function": {"arguments": 'ty":"Oslo"}'}}}},
        },
        {"type": "tool-call-end", "index": 0},
        {
            "type": "tool-call-start",
            "index": 1,
            "delta": {
                "message": {
                    "tool_calls": {
                        "id": "lookup_stock_2",
                        "type": "function",
                        "function": {"name": "lookup_stock", "arguments": "{}"},
                    }
                }
            },
        },
        {"type": "tool-call-end", "index": 1},
        {
            "type": "content-start",
            "index": 0,
            "delta": {"message": {"content": {"type": "text", "text": ""}}},
        },
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi "}}}},
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "🌧"}}}},
        {"type": "citation-start", "index": 0, "delta": {"message": {"citations": {}}}},
        {"type": "citation-end", "index": 0},
        {"type": "content-end", "index": 0},
        {"type": "debug", "prompt": "..."},
    ]
    if end:
        events.append({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}})
    return b"".join(_frame(e) for e in events)


def _events(raw: bytes) -> list[Any]:
    return [e.data if e.data == "[DONE]" else orjson.loads(e.data) for e in SSEParser().feed(raw)]


def _translate(raw: bytes, step: int, include_usage: bool = True) -> tuple[bytes, Any]:
    tr = CohereStreamToChat("command-a", include_usage, now=lambda: 1.0)
    out = bytearray()
    for i in range(0, len(raw), step):  # chunk boundaries inside events (and UTF-8) must not matter
        out += tr.feed(raw[i : i + step])
    out += tr.finish()
    return bytes(out), tr


@pytest.mark.parametrize("step", [1, 2, 5, 13, 64, 100_000])
def test_stream_becomes_openai_chunks_split_anywhere(step: int) -> None:
    raw, tr = _translate(_cohere_stream(), step)
    assert raw == _translate(_cohere_stream(), 100_000)[0]  # same bytes however it was split
    chunks = _events(raw)
    assert chunks[-1] == "[DONE]" and tr.finished
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["id"] == "chatcmpl-m-1" and c["model"] == "command-a" for c in chunks[:-1])
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    body = [c for c in chunks[:-1] if c["choices"]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body)
    assert text == "I will check.Hi 🌧"
    calls = [call for c in body for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "get_weather_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == (
        '{"city":"Oslo"}'
    )
    assert calls[-1]["index"] == 1 and calls[-1]["function"]["arguments"] == "{}"
    finishes = [c["choices"][0]["finish_reason"] for c in body]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    usage = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
    assert chunks[-2] == {
        "id": "chatcmpl-m-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "command-a",
        "choices": [],
        "usage": usage,
    }
    assert tr.usage == usage


def test_translated_stream_assembles_into_a_completion() -> None:
    raw, _ = _translate(_cohere_stream(), 3)
    assembler = StreamAssembler(Endpoint.CHAT)
    assembler.feed(raw)
    assert assembler.done and not assembler.failed
    result = assembler.result()
    assert result is not None
    message = result["choices"][0]["message"]
    assert message["content"] == "I will check.Hi 🌧"
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "lookup_stock"]
    assert result["usage"]["prompt_tokens"] == 20


def test_stream_without_include_usage_still_meters() -> None:
    raw, tr = _translate(_cohere_stream("COMPLETE"), 9, include_usage=False)
    chunks = _events(raw)
    assert chunks[-1] == "[DONE]"
    assert all(c["choices"] for c in chunks[:-1])  # no usage chunk
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert tr.usage == {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}


def test_truncated_stream_gets_no_done() -> None:
    raw, tr = _translate(_cohere_stream(end=False), 4)
    chunks = _events(raw)
    assert "[DONE]" not in chunks and not tr.finished and tr.usage is None
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    # cut in the middle of the final event: still nothing about an end
    full = _cohere_stream()
    raw, tr = _translate(full[: len(full) - 10], 4)
    assert b"[DONE]" not in raw and not tr.finished


@pytest.mark.parametrize("reason", ["ERROR", "TIMEOUT"])
def test_failed_generation_ends_with_an_error_event(reason: str) -> None:
    events = [
        {"id": "m", "type": "message-start", "delta": {"message": {"role": "assistant"}}},
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "par"}}}},
        {
            "type": "message-end",
            "delta": {
                "finish_reason": reason,
                "error": "model overloaded",
                "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 1}},
            },
        },
        # anything after the end is ignored
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "x"}}}},
    ]
    raw, tr = _translate(b"".join(_frame(e) for e in events), 7)
    chunks = _events(raw)
    assert "[DONE]" not in chunks and not tr.finished
    assert chunks[-1]["error"]["message"] == "The provider's stream failed: model overloaded"
    assert chunks[-1]["error"]["code"] == reason.lower()
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["", "par"]
    assert tr.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_stream_tolerates_noise_and_a_missing_message_start() -> None:
    raw = (
        b": keep-alive\n\n"
        b"data: not json\n\n"
        b"data: [1, 2]\n\n"
        b'event: content-delta\ndata: {"delta":{"message":{"content":{"thinking":"hm"}}}}\n\n'
        + _frame({"type": "content-delta", "delta": {"message": {"content": {"text": "ok"}}}})
        + _frame({"type": "message-end", "delta": {"finish_reason": "MAX_TOKENS"}})
        + b"data: [DONE]\n\n"
    )
    chunks, tr = _translate(raw, 1)
    events = _events(chunks)
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "hm"},  # typed by the `event:` line alone
        {"content": "ok"},
        {},
    ]
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1] == "[DONE]" and tr.finished and tr.usage is None


# =========================================================================== adapter


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.cohere.com", "/v2/chat"),
        ("https://api.cohere.com/", "/v2/chat"),
        ("https://api.cohere.com/v2", "/v2/chat"),
        ("https://api.cohere.com/v2/", "/v2/chat"),
        ("http://127.0.0.1:9000/proxy/cohere", "/proxy/cohere/v2/chat"),
        ("http://127.0.0.1:9000/proxy/v2", "/proxy/v2/chat"),
    ],
)
def test_adapter_paths(base_url: str, expected: str) -> None:
    adapter = CohereAdapter(provider(base_url))
    assert adapter.upstream_path(Endpoint.CHAT, "command-a") == expected
    assert adapter.upstream_path(Endpoint.CHAT, "command-a", stream=True) == expected
    assert adapter.upstream_path(Endpoint.CHAT, "m", "a=1") == f"{expected}?a=1"


def test_adapter_identity_and_credentials() -> None:
    adapter = CohereAdapter(provider("https://api.cohere.com"), {})
    assert adapter.schema == "cohere"
    assert adapter.endpoints == frozenset()
    assert adapter.codec is CODEC
    assert adapter.auth_headers("co-key") == [("authorization", "Bearer co-key")]
    assert adapter.auth_headers(None) == []


# =========================================================================== against the fake


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCohere]:
    with FakeCohereThread(api_key="co-key") as server:
        yield server


def _post(fake: FakeCohere, body: dict[str, Any]) -> tuple[int, bytes]:
    import http.client

    adapter = CohereAdapter(provider(fake.url))
    raw = orjson.dumps(body)
    headers = dict(adapter.auth_headers("co-key", body=raw))
    headers["content-type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request("POST", adapter.upstream_path(Endpoint.CHAT, "m"), raw, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_translated_tool_round_trip_is_accepted_by_the_fake(fake: FakeCohere) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Rome?"},
    ]
    status, data = _post(
        fake, CODEC.request_from_chat(chat(messages=messages, tools=[WEATHER]), "m")
    )
    assert status == 200, data
    first = CODEC.response_to_chat(orjson.loads(data), "m")
    message = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] == "I will use the get_weather tool."
    [call] = message["tool_calls"]
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Weather in Rome?"}
    messages += [message, {"role": "tool", "tool_call_id": call["id"], "content": "22C"}]
    status, data = _post(
        fake, CODEC.request_from_chat(chat(messages=messages, tools=[WEATHER]), "m")
    )
    assert status == 200, data
    final = CODEC.response_to_chat(orjson.loads(data), "m")
    assert final["choices"][0]["message"] == {"role": "assistant", "content": "The tool said: 22C"}
    billed = orjson.loads(data)["usage"]["billed_units"]["input_tokens"]
    assert final["usage"]["prompt_tokens"] == billed + TEMPLATE_TOKENS  # usage.tokens wins


def test_translated_stream_from_the_fake(fake: FakeCohere) -> None:
    request = CODEC.request_from_chat(
        chat(messages=[{"role": "user", "content": "a b c"}], stream=True), "m"
    )
    status, data = _post(fake, request)
    assert status == 200
    raw, tr = _translate(data, 11)
    chunks = _events(raw)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2])
    assert text == "Echo: a b c" and tr.finished
    assert chunks[-2]["usage"]["completion_tokens"] == 4


def test_fake_error_translates(fake: FakeCohere) -> None:
    status, data = _post(fake, CODEC.request_from_chat(chat(temperature=0.5), "m") | {"k": 900})
    assert status == 400
    error = orjson.loads(CODEC.error_to_chat(status, data))["error"]
    assert error["type"] == "invalid_request_error" and "k must be between" in error["message"]
