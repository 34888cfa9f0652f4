"""OpenAI chat ⇄ Gemini generateContent: requests, answers, errors, streams, the adapter."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint
from edge_agent.api.sse import SSEParser
from edge_agent.config import Provider
from edge_agent.providers.gemini import GeminiAdapter
from edge_agent.translate.gemini import CODEC, SKIP_SIGNATURE, GeminiStreamToChat

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def to_gemini(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return CODEC.request_from_chat({"model": "smart", **body}, "gemini-2.5-flash")


def refused(**body: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        to_gemini(**body)
    assert info.value.status == 400
    assert info.value.code == "untranslatable_parameter"
    return info.value


def call(call_id: str, name: str, args: str, signature: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": args},
    }
    if signature is not None:
        out["extra_content"] = {"google": {"thought_signature": signature}}
    return out


# =========================================================================== requests


def test_system_turns_and_generation_config() -> None:
    out = to_gemini(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "assistant", "content": ""},  # empty: carries nothing
            {"role": "user", "content": "Bye"},
        ],
        max_completion_tokens=50,
        max_tokens=999,
        temperature=1.5,
        top_p=0.5,
        stop="END",
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        user="u-1",
        stream=True,
    )
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "Hello"}, {"text": "Again"}]},  # merged
        {"role": "model", "parts": [{"text": "Bonjour"}]},
        {"role": "user", "parts": [{"text": "Bye"}]},
    ]
    assert out["generationConfig"] == {
        "maxOutputTokens": 50,
        "temperature": 1.5,
        "topP": 0.5,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "stopSequences": ["END"],
    }
    assert set(out) == {"contents", "systemInstruction", "generationConfig"}  # no model, stream


def test_minimal_request_has_no_optional_sections() -> None:
    out = to_gemini(stop=["a", "b"])
    assert out == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"stopSequences": ["a", "b"]},
    }
    assert to_gemini() == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, None),
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tools_and_tool_choice(choice: Any, config: dict[str, Any] | None) -> None:
    no_params = {"type": "function", "function": {"name": "now"}}
    empty = {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}
    out = to_gemini(tools=[TOOL, no_params, empty], tool_choice=choice)
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    # additionalProperties: false is what Gemini does anyway: dropped.
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
                {"name": "now"},
                {"name": "ping"},  # Gemini refuses an OBJECT without properties
            ]
        }
    ]
    if config is None:
        assert "toolConfig" not in out
    else:
        assert out["toolConfig"] == {"functionCallingConfig": config}


def test_tool_results_find_their_function_by_call_id() -> None:
    out = to_gemini(
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    call("call_0", "get_weather", '{"city":"Paris"}', "c2lnMQ=="),
                    call("call_1", "get_time", '{"city":"Rome"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
            {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 18}'},
            {"role": "user", "content": "And tomorrow?"},
            # A later turn reuses the id "call_0": the latest call with that id names it.
            {"role": "assistant", "tool_calls": [call("call_0", "forecast", "")]},
            {
                "role": "tool",
                "tool_call_id": "call_0",
                "content": [{"type": "text", "text": "[1]"}],
            },
        ],
        tools=[TOOL],
    )
    contents = out["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
    assert contents[1]["parts"] == [
        {"text": "Checking."},
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": "c2lnMQ==",
        },
        {"functionCall": {"name": "get_time", "args": {"city": "Rome"}}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
        {"functionResponse": {"name": "get_weather", "response": {"output": {"temp": 18}}}},
        {"text": "And tomorrow?"},
    ]
    # Calls from elsewhere carry no signature: the documented sentinel keeps Gemini 3 happy.
    assert contents[3]["parts"] == [
        {"functionCall": {"name": "forecast", "args": {}}, "thoughtSignature": SKIP_SIGNATURE}
    ]
    assert contents[4]["parts"] == [
        {"functionResponse": {"name": "forecast", "response": {"output": "[1]"}}}  # not an object
    ]


def test_tool_result_without_an_earlier_call_is_refused() -> None:
    error = refused(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_9", "content": "x"},
        ]
    )
    assert error.param == "messages[1].tool_call_id"


def test_images_audio_and_files() -> None:
    out = to_gemini(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x.test/a/cat.JPG?sig=1"}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBERi0=",
                            "filename": "a",
                        },
                    },
                ],
            }
        ]
    )
    assert out["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/a/cat.JPG?sig=1"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://x.test/image",  # no extension: Gemini's fileData needs the media type
        "https://x.test/doc.svg",
        "http://x.test/cat.png",  # not https
        "data:image/png,rawbytes",  # not base64
        "ftp://x.test/cat.png",
    ],
)
def test_image_urls_gemini_cannot_take_are_refused(url: str) -> None:
    error = refused(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    )
    assert error.param == "messages[0].content[0].image_url.url"


def test_json_modes() -> None:
    assert to_gemini(response_format={"type": "json_object"})["generationConfig"] == {
        "responseMimeType": "application/json"
    }
    assert "generationConfig" not in to_gemini(response_format={"type": "text"})
    schema = {
        "$defs": {"Step": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "type": "object",
        "properties": {
            "answer": {"type": ["string", "null"], "description": "the answer"},
            "when": {"type": "string", "format": "date-time"},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "steps": {"type": "array", "items": {"$ref": "#/$defs/Step", "title": "Step"}},
            "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
        },
        "required": ["answer"],
        "additionalProperties": False,
    }
    out = to_gemini(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "reply", "strict": True, "schema": schema},
        }
    )
    assert out["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {
                "answer": {"type": "string", "nullable": True, "description": "the answer"},
                "when": {"type": "string", "format": "date-time"},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "steps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"n": {"type": "integer"}},
                        "title": "Step",
                    },
                },
                "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
            },
            "required": ["answer"],
        },
    }


@pytest.mark.parametrize(
    ("schema", "param"),
    [
        ({"type": "object", "oneOf": []}, "schema.oneOf"),
        ({"type": "object", "additionalProperties": True}, "schema.additionalProperties"),
        (
            {"type": "object", "additionalProperties": {"type": "string"}},
            "schema.additionalProperties",
        ),
        ({"type": ["string", "integer"]}, "schema.type"),
        ({"type": "string", "format": "uri"}, "schema.format"),
        ({"type": "integer", "enum": [1, 2]}, "schema.enum"),
        ({"type": "string", "const": "x"}, "schema.const"),
        ({"$ref": "https://example.com/s.json"}, "schema.$ref"),
        (
            {
                "$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}},
                "$ref": "#/$defs/N",
            },
            "schema.properties.n.$ref",
        ),
    ],
)
def test_schemas_outside_geminis_subset_are_refused(schema: dict[str, Any], param: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert refused(response_format=fmt).param == f"response_format.json_schema.{param}"


def test_tool_parameters_outside_the_subset_are_refused() -> None:
    bad = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "not": {}}},
    }
    assert refused(tools=[bad]).param == "tools[0].function.parameters.not"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"audio": {"voice": "x"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "grammar"}}, "response_format.type"),
        ({"tools": [TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
        ),
        ({"messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video", "v": 1}]}]},
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [call("c", "f", "[1]")]}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [call("c", "f", "{")]}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_what_gemini_cannot_express_is_refused_not_dropped(
    body: dict[str, Any], param: str
) -> None:
    error = refused(**body)
    assert error.param == param
    assert "Gemini API" in error.message


def test_harmless_values_of_refusable_fields_pass() -> None:
    out = to_gemini(
        n=1, logprobs=False, modalities=["text"], tools=[TOOL], parallel_tool_calls=True
    )
    assert "generationConfig" not in out
    out = to_gemini(tools=[TOOL], tool_choice="none", parallel_tool_calls=False)
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}


# =========================================================================== responses


def gemini_answer(
    parts: list[dict[str, Any]], finish: str = "STOP", **extra: Any
) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8},
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "resp1",
        **extra,
    }


def test_text_answer() -> None:
    out = CODEC.response_to_chat(gemini_answer([{"text": "Hello "}, {"text": "there"}]), "gf")
    assert out["id"] == "chatcmpl-resp1"
    assert out["object"] == "chat.completion" and out["model"] == "gf"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_function_calls_thoughts_and_signatures() -> None:
    parts = [
        {"text": "Let me think.", "thought": True},
        {"text": "Checking."},
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
            "thoughtSignature": "c2ln",
        },
        {"functionCall": {"id": "abc", "name": "get_time", "args": {}}},
    ]
    message = CODEC.response_to_chat(gemini_answer(parts), "gf")["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"] == {
        "role": "assistant",
        "content": "Checking.",
        "reasoning_content": "Let me think.",
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                "extra_content": {"google": {"thought_signature": "c2ln"}},
            },
            {
                "id": "abc",  # Gemini's own id wins
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    }
    # What came out goes back in: the signature returns to its part.
    back = to_gemini(
        messages=[
            {"role": "user", "content": "weather?"},
            message["message"],
            {"role": "tool", "tool_call_id": "call_0", "content": "cold"},
            {"role": "tool", "tool_call_id": "abc", "content": "noon"},
        ]
    )
    assert back["contents"][1]["parts"] == [
        {"text": "Checking."},  # the thought text is not sent back: the signature stands for it
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
            "thoughtSignature": "c2ln",
        },
        {"functionCall": {"name": "get_time", "args": {}}},
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    out = CODEC.response_to_chat(gemini_answer([{"text": "x"}], reason), "gf")
    assert out["choices"][0]["finish_reason"] == finish


def test_usage_counts_thoughts_tool_prompts_and_cache() -> None:
    body = gemini_answer([{"text": "x"}])
    body["usageMetadata"] = {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 60,
        "toolUsePromptTokenCount": 10,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 160,
    }
    assert CODEC.response_to_chat(body, "gf")["usage"] == {
        "prompt_tokens": 110,
        "completion_tokens": 50,
        "total_tokens": 160,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    del body["usageMetadata"]
    assert "usage" not in CODEC.response_to_chat(body, "gf")


def test_blocked_prompt_is_an_empty_filtered_completion() -> None:
    body = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
        "responseId": "r",
    }
    out = CODEC.response_to_chat(body, "gf")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": ""}
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4}
    # A candidate stopped for safety with no content at all.
    empty = {"candidates": [{"finishReason": "SAFETY", "index": 0}]}
    choice = CODEC.response_to_chat(empty, "gf")["choices"][0]
    assert choice["message"]["content"] is None and choice["finish_reason"] == "content_filter"


# =========================================================================== errors


def error_of(status: int, body: bytes) -> dict[str, Any]:
    return orjson.loads(CODEC.error_to_chat(status, body))["error"]


@pytest.mark.parametrize(
    ("status", "google", "kind"),
    [
        (400, "INVALID_ARGUMENT", "invalid_request_error"),
        (400, "FAILED_PRECONDITION", "invalid_request_error"),
        (401, "UNAUTHENTICATED", "authentication_error"),
        (403, "PERMISSION_DENIED", "permission_error"),
        (404, "NOT_FOUND", "not_found_error"),
        (429, "RESOURCE_EXHAUSTED", "rate_limit_error"),
        (500, "INTERNAL", "api_error"),
        (503, "UNAVAILABLE", "api_error"),
        (504, "DEADLINE_EXCEEDED", "api_error"),
    ],
)
def test_google_errors_become_openai_errors(status: int, google: str, kind: str) -> None:
    body = orjson.dumps({"error": {"code": status, "message": "boom", "status": google}})
    assert error_of(status, body) == {
        "message": "boom",
        "type": kind,
        "param": None,
        "code": google.lower(),
    }


def test_invalid_key_and_odd_error_bodies() -> None:
    bad_key = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            ],
        }
    }
    error = error_of(400, orjson.dumps(bad_key))
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    # streamGenerateContent without alt=sse wraps everything in a JSON array.
    listed = error_of(429, orjson.dumps([{"error": {"code": 429, "message": "slow down"}}]))
    assert (listed["message"], listed["type"], listed["code"]) == (
        "slow down",
        "rate_limit_error",
        None,
    )
    plain = error_of(502, b"<html>Bad Gateway</html>")
    assert plain["type"] == "api_error" and "Bad Gateway" in plain["message"]
    assert error_of(500, b"")["message"] == "The provider answered an error."


# =========================================================================== streams


def gemini_stream() -> bytes:
    events: list[dict[str, Any]] = [
        {
            "candidates": [{"content": {"parts": [{"text": "Hi "}], "role": "model"}, "index": 0}],
            "responseId": "s1",
            "usageMetadata": {"promptTokenCount": 7},
        },
        {
            "candidates": [
                {"content": {"parts": [{"text": "thinking", "thought": True}]}, "index": 0}
            ]
        },
        {"candidates": [{"content": {"parts": [{"text": "thére"}], "role": "model"}, "index": 0}]},
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {
                                "functionCall": {"name": "w", "args": {"city": "Oslo"}},
                                "thoughtSignature": "c2ln",
                            },
                            {"functionCall": {"name": "t", "args": {}}},
                        ],
                        "role": "model",
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 7,
                "candidatesTokenCount": 9,
                "totalTokenCount": 16,
            },
        },
    ]
    return b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)


def run(raw: bytes, size: int, include_usage: bool = True) -> tuple[bytes, GeminiStreamToChat]:
    tr = GeminiStreamToChat("gf", include_usage, now=lambda: 1.0)
    out = bytearray()
    for i in range(0, len(raw), size):
        out += tr.feed(raw[i : i + size])
    out += tr.finish()
    out += tr.finish()  # a second finish owes nothing
    return bytes(out), tr


def chunks_of(raw: bytes) -> list[Any]:
    return [e.data if e.data == "[DONE]" else orjson.loads(e.data) for e in SSEParser().feed(raw)]


def test_stream_becomes_openai_chunks_split_anywhere() -> None:
    raw = gemini_stream()
    whole, _ = run(raw, len(raw))
    for size in (1, 2, 3, 5, 7, 64):  # boundaries inside events, inside \r\n, inside UTF-8
        assert run(raw, size)[0] == whole
    chunks = chunks_of(whole)
    assert chunks[-1] == "[DONE]"
    assert all(c["id"] == "chatcmpl-s1" and c["created"] == 1 for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-2]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Hi thére"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "thinking"
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert calls == [
        {
            "index": 0,
            "id": "call_0",
            "type": "function",
            "function": {"name": "w", "arguments": '{"city":"Oslo"}'},
            "extra_content": {"google": {"thought_signature": "c2ln"}},
        },
        {
            "index": 1,
            "id": "call_1",
            "type": "function",
            "function": {"name": "t", "arguments": "{}"},
        },
    ]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-2]]
    assert finishes[-1] == "tool_calls" and finishes[:-1] == [None] * (len(finishes) - 1)
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"] == {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}


def test_stream_usage_without_the_usage_chunk() -> None:
    out, tr = run(gemini_stream(), 11, include_usage=False)
    chunks = chunks_of(out)
    assert chunks[-1] == "[DONE]" and all(c["choices"] for c in chunks[:-1])
    assert tr.finished
    assert tr.usage == {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}


def test_truncated_stream_gets_no_done() -> None:
    raw = gemini_stream()
    cut = raw[: raw.rindex(b"data: ")]  # everything before the event with the finishReason
    out, tr = run(cut, 9)
    chunks = chunks_of(out)
    assert chunks and "[DONE]" not in chunks
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert not tr.finished


def test_stream_error_event_and_blocked_prompt() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    out, tr = run(b"data: " + orjson.dumps(error) + b"\r\n\r\n", 4)
    assert chunks_of(out) == [
        {
            "error": {
                "message": "The model is overloaded.",
                "type": "api_error",
                "param": None,
                "code": "unavailable",
            }
        }
    ]
    assert not tr.finished
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "responseId": "b"}
    chunks = chunks_of(run(b"data: " + orjson.dumps(blocked) + b"\n\n", 3)[0])
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, "content_filter"]
    assert chunks[-1] == "[DONE]"


def test_stream_max_tokens_and_garbage() -> None:
    events = [
        b"data: not json\r\n\r\n",
        b"data: [1, 2]\r\n\r\n",
        b": keep-alive comment\r\n\r\n",
        b'data: {"candidates": [{"content": {"parts": [{"text": "a"}]}, '
        b'"finishReason": "MAX_TOKENS"}]}\r\n\r\n',
    ]
    chunks = chunks_of(run(b"".join(events), 5)[0])
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, "length"]


# =========================================================================== adapter


def adapter(base_url: str) -> GeminiAdapter:
    # model_construct: the config may not list the gemini type yet; the adapter reads base_url.
    return GeminiAdapter(Provider.model_construct(name="g", type="gemini", base_url=base_url))


def test_adapter_paths_and_credentials() -> None:
    a = adapter("https://generativelanguage.googleapis.com")
    assert (a.schema, a.endpoints, a.codec is CODEC) == (
        "gemini",
        frozenset(),
        True,
    )
    assert (
        a.upstream_path(Endpoint.CHAT, "gemini-2.5-flash")
        == "/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert (
        a.upstream_path(Endpoint.CHAT, "gemini-2.5-flash", "key=client&x=1", stream=True)
        == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert (
        adapter("http://127.0.0.1:9/proxy/google/v1beta/").upstream_path(Endpoint.CHAT, "m")
        == "/proxy/google/v1beta/models/m:generateContent"
    )
    assert (
        a.upstream_path(Endpoint.CHAT, "tunedModels/my-tune")
        == "/v1beta/tunedModels/my-tune:generateContent"
    )
    assert a.upstream_path(Endpoint.CHAT, "a b") == "/v1beta/models/a%20b:generateContent"
    assert a.auth_headers("AIza-secret") == [("x-goog-api-key", "AIza-secret")]
    assert a.auth_headers(None) == []
