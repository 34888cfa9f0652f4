"""The Bedrock Converse codec and adapter: mapping, refusals, usage, errors, SigV4, streams."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

import botocore.session
import orjson
import pytest
from botocore.validate import validate_parameters

from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint
from edge_agent.api.sse import SSEParser
from edge_agent.config import Provider
from edge_agent.providers.bedrock import BedrockAdapter, region_of
from edge_agent.translate.anthropic_stream import ChatStreamToMessages
from edge_agent.translate.bedrock import CODEC, ConverseStreamToChat
from edge_agent.translate.stream import Chain
from tests.fakes.bedrock import encode_frame

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5E"
    "rkJggg=="
)
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER_PARAMS,
    },
}
# AWS's published SigV4 test suite (get-vanilla / post-vanilla): an anchor that does not
# depend on this project's signer.
AWS_KEY_ID = "AKIDEXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
AWS_VECTOR_TIME = dt.datetime(2015, 8, 30, 12, 36, tzinfo=dt.UTC)
GET_VANILLA = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
POST_VANILLA = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"

codec = CODEC


def provider(**kw: Any) -> Provider:
    fields: dict[str, Any] = {
        "name": "bedrock",
        "type": "bedrock",
        "base_url": "https://bedrock-runtime.eu-west-3.amazonaws.com",
    }
    fields.update(kw)
    # Built without validation: the config may not list "bedrock" as implemented yet.
    return Provider.model_construct(**fields)


def convert(**chat: Any) -> dict[str, Any]:
    chat.setdefault("model", "client-model")
    chat.setdefault("messages", [{"role": "user", "content": "hi"}])
    return codec.request_from_chat(chat, MODEL)


def refusal(**chat: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        convert(**chat)
    assert caught.value.status == 400
    return caught.value


@pytest.fixture(scope="module")
def converse_input() -> Any:
    # The official service model: what botocore would accept for Converse.
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    return model.operation_model("Converse").input_shape


# ---- requests ---------------------------------------------------------------------------


def test_full_conversation_maps_to_converse(converse_input: Any) -> None:
    chat = {
        "model": "client-model",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {"role": "user", "content": "And the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER],
        "tool_choice": "auto",
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
    }
    body = codec.request_from_chat(chat, MODEL)
    assert body == {
        "system": [{"text": "Be brief."}, {"text": "Use tools."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "What is this?"},
                    {"image": {"format": "png", "source": {"bytes": PNG}}},
                    {"text": "And the weather in Paris?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "toolUse": {
                            "toolUseId": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C, sunny"}]}},
                    {"text": "Thanks"},
                ],
            },
        ],
        "inferenceConfig": {
            "maxTokens": 50,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "inputSchema": {"json": WEATHER_PARAMS},
                    }
                }
            ],
            "toolChoice": {"auto": {}},
        },
    }
    # The official model accepts it (modelId travels in the path).
    validate_parameters({**body, "modelId": MODEL}, converse_input)


def test_minimal_request_has_no_optional_sections() -> None:
    body = convert()
    assert body == {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def test_max_completion_tokens_wins_and_stop_list_passes() -> None:
    body = convert(max_completion_tokens=7, max_tokens=99, stop=["a", "b"])
    assert body["inferenceConfig"] == {"maxTokens": 7, "stopSequences": ["a", "b"]}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"tool": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    body = convert(tools=[WEATHER], tool_choice=choice)
    assert body["toolConfig"].get("toolChoice") == expected


def test_tool_choice_none_drops_the_tools_when_history_has_none() -> None:
    body = convert(tools=[WEATHER], tool_choice="none")
    assert "toolConfig" not in body


def test_tool_choice_none_with_tool_history_is_refused() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    err = refusal(messages=messages, tools=[WEATHER], tool_choice="none")
    assert err.param == "tool_choice"


def test_empty_tool_result_is_still_a_valid_block() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": ""},
    ]
    body = convert(messages=messages, tools=[WEATHER])
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "c1", "name": "f", "input": {}}}
    ]
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "c1", "content": [{"json": {}}]}}
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 2),
        ("frequency_penalty", 0.5),
        ("presence_penalty", -1),
        ("logit_bias", {"50256": -100}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("parallel_tool_calls", False),
        ("reasoning_effort", "high"),
    ],
)
def test_untranslatable_fields_are_refused(field: str, value: Any) -> None:
    err = refusal(**{field: value})
    assert err.param == field
    assert err.code == "untranslatable_parameter"


def test_harmless_defaults_pass() -> None:
    body = convert(n=1, logprobs=False, frequency_penalty=0, response_format={"type": "text"})
    assert body == {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def test_http_image_url_is_refused() -> None:
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    err = refusal(messages=[{"role": "user", "content": content}])
    assert err.param == "messages[0].content[0].image_url.url"


def test_unsupported_image_type_is_refused() -> None:
    content = [{"type": "image_url", "image_url": {"url": f"data:image/bmp;base64,{PNG}"}}]
    assert "bmp" in refusal(messages=[{"role": "user", "content": content}]).message


def test_other_refusals() -> None:
    assert refusal(temperature=1.5).param == "temperature"
    audio = [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]
    assert refusal(messages=[{"role": "user", "content": audio}]).param == "messages[0].content[0]"
    bad_args = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
        },
    ]
    assert refusal(messages=bad_args).param == "messages[1].tool_calls[0].function.arguments"
    assert refusal(messages=[{"role": "function", "content": "x"}]).param == "messages[0].role"
    assert refusal(tool_choice="required").param == "tool_choice"  # no tools to require


# ---- answers ----------------------------------------------------------------------------


def test_answer_with_text_and_tool_use() -> None:
    body = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
                    {"text": "Let me "},
                    {"text": "check."},
                    {
                        "toolUse": {
                            "toolUseId": "tu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    },
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15},
        "metrics": {"latencyMs": 100},
    }
    out = codec.response_to_chat(body, MODEL)
    assert out["object"] == "chat.completion"
    assert out["model"] == MODEL
    assert out["id"].startswith("chatcmpl-")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["reasoning_content"] == "hmm"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "tu_1"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    body = {"output": {"message": {"role": "assistant", "content": []}}, "stopReason": reason}
    out = codec.response_to_chat(body, MODEL)
    assert out["choices"][0]["finish_reason"] == finish
    assert out["choices"][0]["message"]["content"] is None
    assert "usage" not in out


def test_cached_tokens_count_in_the_prompt() -> None:
    usage = {
        "inputTokens": 10,
        "outputTokens": 4,
        "totalTokens": 114,
        "cacheReadInputTokens": 100,
        "cacheWriteInputTokens": 0,
    }
    body = {
        "output": {"message": {"content": [{"text": "x"}]}},
        "stopReason": "end_turn",
        "usage": usage,
    }
    assert codec.response_to_chat(body, MODEL)["usage"] == {
        "prompt_tokens": 110,
        "completion_tokens": 4,
        "total_tokens": 114,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (
            400,
            b'{"message":"Malformed input request"}',
            "invalid_request_error",
            "Malformed input request",
        ),
        (
            403,
            b'{"Message":"User is not authorized"}',
            "permission_error",
            "User is not authorized",
        ),
        (429, b'{"message":"Too many requests"}', "rate_limit_error", "Too many requests"),
        (503, b"Service Unavailable", "api_error", "The provider answered: Service Unavailable"),
        (500, b"", "api_error", "The provider answered an error."),
    ],
)
def test_errors(status: int, body: bytes, kind: str, message: str) -> None:
    out = orjson.loads(codec.error_to_chat(status, body))
    assert out == {"error": {"message": message, "type": kind, "param": None, "code": None}}


# ---- adapter: paths, region, credentials --------------------------------------------------


def test_paths() -> None:
    adapter = BedrockAdapter(provider())
    assert adapter.schema == "bedrock"
    assert adapter.endpoints == frozenset()
    assert adapter.upstream_path(Endpoint.CHAT, MODEL) == (
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    )
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v1"
    assert adapter.upstream_path(Endpoint.CHAT, arn, "x=1", stream=True) == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile"
        "%2Fus.anthropic.claude-v1/converse-stream"
    )
    prefixed = BedrockAdapter(provider(base_url="http://127.0.0.1:9000/bedrock/"))
    assert prefixed.upstream_path(Endpoint.CHAT, "m") == "/bedrock/model/m/converse"


@pytest.mark.parametrize(
    ("base_url", "region"),
    [
        ("https://bedrock-runtime.eu-west-3.amazonaws.com", "eu-west-3"),
        ("https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("https://bedrock-runtime.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        (
            "https://vpce-0a1b-c2d3.bedrock-runtime.ap-southeast-2.vpce.amazonaws.com",
            "ap-southeast-2",
        ),
        ("http://127.0.0.1:8000", None),
        ("https://bedrock.example.com", None),
    ],
)
def test_region_from_host(base_url: str, region: str | None) -> None:
    assert region_of(provider(base_url=base_url)) == region


def test_configured_region_wins() -> None:
    assert region_of(provider(region="us-west-2")) == "us-west-2"


def sigv4_provider(**kw: Any) -> Provider:
    return provider(
        aws_access_key_id_env="AK",
        aws_secret_access_key_env="SK",
        **kw,
    )


ENV = {"AK": "AKIDTEST", "SK": "secret/key+1\n", "ST": "session-token"}


def test_api_key_is_a_bearer_token() -> None:
    adapter = BedrockAdapter(sigv4_provider(), ENV)
    assert adapter.auth_headers("bedrock-api-key", path="/model/m/converse", body=b"{}") == [
        ("authorization", "Bearer bedrock-api-key")
    ]


def test_no_credentials_no_headers() -> None:
    assert BedrockAdapter(provider()).auth_headers(None, path="/p", body=b"") == []


def test_missing_aws_variables_are_a_problem_not_a_crash() -> None:
    adapter = BedrockAdapter(sigv4_provider(aws_session_token_env="ST"), {"AK": "x"})
    assert adapter.problem is not None
    assert "SK" in adapter.problem and "ST" in adapter.problem
    assert adapter.auth_headers(None, path="/p", body=b"") == []


def test_sigv4_needs_a_region() -> None:
    with pytest.raises(ValueError, match="region"):
        BedrockAdapter(sigv4_provider(base_url="http://127.0.0.1:8000"), ENV)


def received(headers: list[tuple[str, str]], host: str) -> dict[str, str]:
    """What the upstream sees: the set headers plus Host (Envoy's auto_host_rewrite)."""
    return {"host": host, "content-type": "application/json", **dict(headers)}


def verify(headers: dict[str, str], path: str, body: bytes, **kw: Any) -> str | None:
    args: dict[str, Any] = {
        "access_key_id": "AKIDTEST",
        "secret_access_key": "secret/key+1",
        "region": "eu-west-3",
    }
    args.update(kw)
    return BedrockAdapter.verify_sigv4("POST", path, headers, body, **args)


def test_sigv4_signature_verifies_and_covers_host_path_and_body() -> None:
    adapter = BedrockAdapter(sigv4_provider(), ENV)
    path = adapter.upstream_path(Endpoint.CHAT, MODEL)
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    headers = adapter.auth_headers(None, path=path, body=body)
    names = [name for name, _ in headers]
    assert names == ["authorization", "x-amz-date"]
    auth = dict(headers)["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert "/eu-west-3/bedrock/aws4_request" in auth
    assert "SignedHeaders=host;x-amz-date," in auth
    host = "bedrock-runtime.eu-west-3.amazonaws.com"
    assert verify(received(headers, host), path, body) is None
    assert verify(received(headers, host), path, body + b" ") == "the signature does not match"
    assert verify(received(headers, host), path.replace("converse", "converse-stream"), body)
    assert verify(received(headers, "evil.example.com"), path, body)
    assert verify(received(headers, host), path, body, secret_access_key="other")
    assert verify(received(headers, host), path, body, region="us-east-1")
    assert verify(received(headers, host), path, body, service="s3")
    assert verify(received(headers, host), path, body, access_key_id="AKIDOTHER")


def test_sigv4_signs_a_non_default_port_and_the_session_token() -> None:
    adapter = BedrockAdapter(
        sigv4_provider(
            base_url="http://127.0.0.1:8123", region="us-east-2", aws_session_token_env="ST"
        ),
        ENV,
    )
    body = b"{}"
    headers = adapter.auth_headers(None, path="/model/m/converse", body=body)
    assert dict(headers)["x-amz-security-token"] == "session-token"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in dict(headers)["authorization"]
    got = received(headers, "127.0.0.1:8123")
    assert (
        verify(got, "/model/m/converse", body, region="us-east-2", session_token="session-token")
        is None
    )
    assert verify(got, "/model/m/converse", body, region="us-east-2", session_token="other")
    assert verify(received(headers, "127.0.0.1"), "/model/m/converse", body, region="us-east-2")


def test_verifier_matches_the_aws_test_suite() -> None:
    def check(method: str, signature: str, **kw: Any) -> str | None:
        headers = {
            "host": "example.amazonaws.com",
            "x-amz-date": "20150830T123600Z",
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
            f"aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}",
        }
        args: dict[str, Any] = {
            "access_key_id": AWS_KEY_ID,
            "secret_access_key": AWS_SECRET,
            "region": "us-east-1",
            "service": "service",
            "now": AWS_VECTOR_TIME,
        }
        args.update(kw)
        return BedrockAdapter.verify_sigv4(method, "/", headers, b"", **args)

    assert check("GET", GET_VANILLA) is None
    assert check("POST", POST_VANILLA) is None
    assert check("POST", GET_VANILLA) == "the signature does not match"
    expired = check("GET", GET_VANILLA, now=AWS_VECTOR_TIME + dt.timedelta(minutes=6))
    assert expired is not None and "expired" in expired


def test_verifier_rejects_malformed_authorization() -> None:
    base = {"host": "h", "x-amz-date": "20150830T123600Z"}
    args: dict[str, Any] = {"access_key_id": "A", "secret_access_key": "S", "region": "us-east-1"}
    assert BedrockAdapter.verify_sigv4("POST", "/", base, b"", **args)
    bearer = {**base, "authorization": "Bearer x"}
    assert BedrockAdapter.verify_sigv4("POST", "/", bearer, b"", **args)
    no_host = {
        **base,
        "authorization": "AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=x-amz-date, Signature=00",
    }
    assert BedrockAdapter.verify_sigv4("POST", "/", no_host, b"", **args) == (
        "the host header is not signed"
    )


# ---- streams ----------------------------------------------------------------------------


def event(name: str, data: dict[str, Any]) -> bytes:
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    return encode_frame(headers, orjson.dumps({**data, "p": "abcd"}))


def exception(name: str, message: str) -> bytes:
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_frame(headers, orjson.dumps({"message": message}))


USAGE = {"inputTokens": 12, "outputTokens": 9, "totalTokens": 21, "cacheReadInputTokens": 2}
FRAMES = [
    event("messageStart", {"role": "assistant"}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me"}}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " check."}}),
    event("contentBlockStop", {"contentBlockIndex": 0}),
    event(
        "contentBlockStart",
        {
            "contentBlockIndex": 1,
            "start": {"toolUse": {"toolUseId": "tu_1", "name": "get_weather"}},
        },
    ),
    event(
        "contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":'}}}
    ),
    event(
        "contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Paris"}'}}}
    ),
    event("contentBlockStop", {"contentBlockIndex": 1}),
    event("messageStop", {"stopReason": "tool_use"}),
    event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 5}}),
]
STREAM = b"".join(FRAMES)


def sse_data(raw: bytes) -> list[Any]:
    """Each event's data: JSON decoded, "[DONE]" kept as the string."""
    out: list[Any] = []
    for ev in SSEParser().feed(raw):
        out.append(ev.data if ev.data == "[DONE]" else orjson.loads(ev.data))
    return out


def run(
    pieces: Iterator[bytes] | list[bytes], include_usage: bool = True
) -> tuple[ConverseStreamToChat, bytes]:
    translator = ConverseStreamToChat(MODEL, include_usage, now=lambda: 1_700_000_000)
    out = b"".join(translator.feed(p) for p in pieces)
    return translator, out + translator.finish()


def test_stream_translation() -> None:
    translator, out = run([STREAM])
    events = sse_data(out)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert all(c["created"] == 1_700_000_000 for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Let me check."
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "tu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(call["index"] == 0 for call in calls)
    assert "".join(call["function"]["arguments"] for call in calls) == '{"city":"Paris"}'
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert finishes[-1] == "tool_calls"
    expected_usage = {
        "prompt_tokens": 14,
        "completion_tokens": 9,
        "total_tokens": 23,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == expected_usage
    assert translator.usage == expected_usage
    assert translator.finished


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    translator, out = run([STREAM], include_usage=False)
    events = sse_data(out)
    assert events[-1] == "[DONE]"
    assert all(e == "[DONE]" or e["choices"] for e in events)
    assert translator.usage is not None and translator.finished


def test_every_split_point_gives_the_same_output() -> None:
    _, whole = run([STREAM])
    reference = [e if e == "[DONE]" else {**e, "id": ""} for e in sse_data(whole)]
    for cut in range(1, len(STREAM)):
        translator, out = run([STREAM[:cut], STREAM[cut:]])
        got = [e if e == "[DONE]" else {**e, "id": ""} for e in sse_data(out)]
        assert got == reference, cut
        assert translator.finished


def test_random_chunking_and_single_bytes() -> None:
    _, whole = run([STREAM])
    reference = [e if e == "[DONE]" else {**e, "id": ""} for e in sse_data(whole)]
    rng = random.Random(7)
    for _ in range(50):
        pieces, at = [], 0
        while at < len(STREAM):
            size = rng.randint(0, 40)
            pieces.append(STREAM[at : at + size])
            at += size
        _, out = run(pieces)
        assert [e if e == "[DONE]" else {**e, "id": ""} for e in sse_data(out)] == reference
    _, out = run(STREAM[i : i + 1] for i in range(len(STREAM)))
    assert [e if e == "[DONE]" else {**e, "id": ""} for e in sse_data(out)] == reference


def test_truncated_stream_gets_no_done() -> None:
    cut = len(b"".join(FRAMES[:5])) + 7  # inside the sixth frame
    translator, out = run([STREAM[:cut]])
    events = sse_data(out)
    assert "[DONE]" not in events
    assert not translator.finished
    assert translator.usage is None
    # The part already received was translated.
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "Let me check."


def test_stream_ending_after_message_stop_without_metadata_is_not_finished() -> None:
    translator, out = run(FRAMES[:9])
    assert "[DONE]" not in sse_data(out)
    assert sse_data(out)[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not translator.finished


def test_exception_frame_becomes_an_error_event() -> None:
    translator, out = run([*FRAMES[:2], exception("throttlingException", "Too many tokens")])
    last = sse_data(out)[-1]
    assert last == {
        "error": {
            "message": "Too many tokens",
            "type": "rate_limit_error",
            "param": None,
            "code": "throttlingException",
        }
    }
    assert not translator.finished


def test_corrupt_frame_is_reported_once_and_stops_the_translation() -> None:
    bad = bytearray(FRAMES[1])
    bad[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    translator, out = run([FRAMES[0], bytes(bad), *FRAMES[2:]])
    events = sse_data(out)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "corrupt" in events[1]["error"]["message"]
    assert len(events) == 2
    assert not translator.finished


def test_chained_to_anthropic_events() -> None:
    # An Anthropic client in front of a Bedrock model: Converse → OpenAI chunks → Messages.
    chain = Chain(ConverseStreamToChat(MODEL, True), ChatStreamToMessages(MODEL))
    out = chain.feed(STREAM) + chain.finish()
    names = [e.event for e in SSEParser().feed(out)]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in names
    assert chain.finished
    assert chain.usage is not None and chain.usage["completion_tokens"] == 9
