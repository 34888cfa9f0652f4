"""OpenAI chat ⇄ Anthropic Messages translation: requests, answers, errors, streams."""

from __future__ import annotations

import orjson
import pytest

from edge_agent.api.errors import ApiError
from edge_agent.api.sse import SSEParser, encode_event
from edge_agent.translate import anthropic as to_anthropic
from edge_agent.translate import anthropic_stream

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_chat_request_becomes_messages_with_system_tools_and_tool_results() -> None:
    body = {
        "model": "smart",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stop": "END",
        "max_completion_tokens": 50,
        "stream": True,
        "user": "u-7",
    }
    out = to_anthropic.chat_to_messages(body, "claude-x")
    assert out["model"] == "claude-x" and out["system"] == "Be brief."
    assert out["max_tokens"] == 50 and out["stop_sequences"] == ["END"] and out["stream"]
    assert out["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["metadata"] == {"user_id": "u-7"}
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "user"]  # tool result + "Thanks" merged
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "text", "text": "Thanks"},
    ]


def test_images_translate_both_ways() -> None:
    data_url = "data:image/png;base64,iVBORw0KGgo="
    chat = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}}]}
        ]
    }
    block = to_anthropic.chat_to_messages(chat, "c")["messages"][0]["content"][0]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    back = to_anthropic.messages_to_chat(
        {"max_tokens": 5, "messages": [{"role": "user", "content": [block]}]}, "g"
    )
    assert back["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": data_url}}]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("response_format", {"type": "json_object"}),
        ("response_format", "json"),  # malformed: refused, never a crash
        ("audio", {}),
    ],
)
def test_openai_only_fields_are_refused_not_dropped(field: str, value: object) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], field: value}
    with pytest.raises(ApiError) as err:
        to_anthropic.chat_to_messages(body, "c")
    assert err.value.status == 400 and err.value.param == field
    assert "cannot be translated" in err.value.message


def test_plain_text_response_format_passes() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}}
    assert to_anthropic.chat_to_messages(body, "c")["messages"]


def test_temperature_above_anthropic_range_is_refused() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 1.5}
    with pytest.raises(ApiError, match="0 to 1"):
        to_anthropic.chat_to_messages(body, "c")


def test_messages_request_becomes_chat() -> None:
    body = {
        "model": "m",
        "max_tokens": 20,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "-3C"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "tools": [{"name": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "w"},
        "stop_sequences": ["X"],
        "stream": True,
    }
    out = to_anthropic.messages_to_chat(body, "gpt")
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert out["messages"][2]["tool_calls"][0]["function"] == {
        "name": "w",
        "arguments": '{"city":"Oslo"}',
    }
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "-3C"}
    assert out["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert out["stop"] == ["X"] and out["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "body",
    [
        {"top_k": 5},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]},
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    ],
)
def test_anthropic_only_features_are_refused(body: dict) -> None:
    full = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(ApiError) as err:
        to_anthropic.messages_to_chat(full, "gpt")
    assert err.value.status == 400 and "cannot be translated" in err.value.message


def test_answers_translate_with_tool_calls_stop_reasons_and_usage() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4},
    }
    chat = to_anthropic.message_to_completion(message, "claude-x")
    choice = chat["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city":"Oslo"}'
    assert chat["usage"] == {
        "prompt_tokens": 14,
        "completion_tokens": 5,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    back = to_anthropic.completion_to_message(chat, "gpt")
    assert back["stop_reason"] == "tool_use"
    assert back["content"][1]["input"] == {"city": "Oslo"}
    assert back["usage"]["input_tokens"] == 10 and back["usage"]["cache_read_input_tokens"] == 4


def test_errors_keep_the_message_in_the_other_envelope() -> None:
    anthropic_error = b'{"type":"error","error":{"type":"overloaded_error","message":"Busy"}}'
    out = orjson.loads(to_anthropic.error_to_openai(529, anthropic_error))
    assert out["error"]["message"] == "Busy" and out["error"]["type"] == "overloaded_error"
    openai_error = b'{"error":{"message":"Slow down","type":"requests","code":"rate_limit"}}'
    out = orjson.loads(to_anthropic.error_to_anthropic(429, openai_error))
    assert out == {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}
    assert (
        "502 Bad Gateway"
        in orjson.loads(to_anthropic.error_to_openai(502, b"502 Bad Gateway"))["error"]["message"]
    )


def _anthropic_stream() -> list[bytes]:
    events = [
        ("message_start", {"message": {"id": "msg_9", "usage": {"input_tokens": 7}}}),
        ("ping", {}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi "}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "there"}}),
        ("content_block_stop", {"index": 0}),
        (
            "content_block_start",
            {
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t", "name": "w", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
        ),
        (
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ty":"Oslo"}'}},
        ),
        ("content_block_stop", {"index": 1}),
        ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ("message_stop", {}),
    ]
    return [encode_event(orjson.dumps({"type": name, **body}), name) for name, body in events]


def _chat_chunks(raw: bytes) -> list[object]:
    return [e.data if e.data == "[DONE]" else orjson.loads(e.data) for e in SSEParser().feed(raw)]


def test_anthropic_stream_becomes_openai_chunks_split_anywhere() -> None:
    raw = b"".join(_anthropic_stream())
    out = bytearray()
    tr = anthropic_stream.MessagesStreamToChat("claude-x", include_usage=True, now=lambda: 1.0)
    for i in range(0, len(raw), 7):  # chunk boundaries inside events must not matter
        out += tr.feed(raw[i : i + 7])
    chunks = _chat_chunks(bytes(out))
    assert chunks[-1] == "[DONE]" and tr.finished
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-2] if c["choices"])
    assert text == "Hi there"
    args = "".join(
        call["function"].get("arguments", "")
        for c in chunks[:-2]
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    )
    assert args == '{"city":"Oslo"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2] if c["choices"]][-1] == (
        "tool_calls"
    )
    assert chunks[-2]["usage"] == {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}


def test_openai_stream_becomes_anthropic_events() -> None:
    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        body: dict = {
            "id": "c1",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            body = {"id": "c1", "choices": [], "usage": usage}
        return encode_event(orjson.dumps(body))

    raw = b"".join(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "k", "function": {"name": "w", "arguments": ""}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}),
            chunk({}, "tool_calls"),
            chunk({}, usage={"prompt_tokens": 3, "completion_tokens": 4}),
            encode_event("[DONE]"),
        ]
    )
    tr = anthropic_stream.ChatStreamToMessages("gpt")
    events = [(e.event, orjson.loads(e.data)) for e in SSEParser().feed(tr.feed(raw))]
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[5][1]["content_block"]["name"] == "w"
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":1}'}
    assert events[8][1]["delta"]["stop_reason"] == "tool_use"
    assert events[8][1]["usage"]["output_tokens"] == 4 and tr.finished
