"""OpenAI request validation, the models list and the completeness check."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edge_agent.api.errors import ApiError
from edge_agent.api.openai import (
    ENDPOINT_BY_PATH,
    Endpoint,
    ParsedRequest,
    is_complete_response,
    models_list,
    parse_request,
)

CHAT, COMPLETIONS, EMBEDDINGS = Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS
USER = {"role": "user", "content": "Hello"}
_MISSING = object()  # marks a field to delete from the base body


def _base(endpoint: Endpoint) -> dict[str, Any]:
    if endpoint is CHAT:
        return {"model": "gpt-4o-mini", "messages": [USER]}
    if endpoint is COMPLETIONS:
        return {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}
    return {"model": "text-embedding-3-small", "input": "hello"}


def _with(endpoint: Endpoint, **fields: Any) -> dict[str, Any]:
    body = _base(endpoint)
    for key, value in fields.items():
        if value is _MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def _parse(endpoint: Endpoint, body: Any) -> ParsedRequest:
    return parse_request(endpoint, orjson.dumps(body))


def _refused(endpoint: Endpoint, body: Any) -> ApiError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(ApiError) as info:
        parse_request(endpoint, raw)
    err = info.value
    assert err.status == 400
    assert err.type == "invalid_request_error"
    return err


def _assert_names(err: ApiError, param: str | None, *fragments: str) -> None:
    assert err.param == param, err.message
    if param is not None:
        assert f"'{param}'" in err.message, err.message
    for fragment in fragments:
        assert fragment in err.message, err.message


# --------------------------------------------------------------------------- table


def test_endpoint_table() -> None:
    assert ENDPOINT_BY_PATH == {
        "/v1/chat/completions": CHAT,
        "/v1/completions": COMPLETIONS,
        "/v1/embeddings": EMBEDDINGS,
        "/v1/models": Endpoint.MODELS,
        "/v1/messages": Endpoint.MESSAGES,
    }
    assert Endpoint.CHAT == "chat.completions"


# --------------------------------------------------------------------------- body level


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "Request body is empty"),
        (b"{", "Request body is not valid JSON: unexpected end of data"),
        (b'{"model": "m",}', "Request body is not valid JSON"),
        (b'{"a": 1} trailing', "Request body is not valid JSON"),
        (b"NaN", "Request body is not valid JSON"),
        (b'{"temperature": 1e400}', "Request body is not valid JSON"),
        (b'{"model": "\xff"}', "invalid UTF-8 at byte 11"),
        (b"[1, 2]", "Request body must be a JSON object, got array"),
        (b'"text"', "Request body must be a JSON object, got string"),
        (b"null", "Request body must be a JSON object, got null"),
        (b"3", "Request body must be a JSON object, got number"),
        (b"[" * 5000, "Request body is not valid JSON"),
    ],
)
def test_body_must_be_a_json_object(raw: bytes, fragment: str) -> None:
    err = _refused(CHAT, raw)
    assert err.param is None
    assert err.code == "invalid_json"
    assert fragment in err.message


def test_json_error_names_the_position() -> None:
    err = _refused(CHAT, b'{"model": "m", "messages": [}')
    assert "char 28" in err.message


def test_models_endpoint_has_no_body_to_parse() -> None:
    assert _refused(Endpoint.MODELS, b"{}").status == 400


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS, EMBEDDINGS])
@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        (_MISSING, "Missing required parameter: 'model'."),
        (None, "expected a string, but got null instead"),
        (7, "expected a string, but got an integer instead"),
        (True, "but got a boolean instead"),
        (["m"], "but got an array instead"),
        ("", "non-empty model name"),
    ],
)
def test_model_is_required(endpoint: Endpoint, model: Any, fragment: str) -> None:
    _assert_names(_refused(endpoint, _with(endpoint, model=model)), "model", fragment)


# --------------------------------------------------------------------------- chat: accepted


def test_chat_minimal_defaults() -> None:
    body = _base(CHAT)
    parsed = _parse(CHAT, body)
    assert parsed == ParsedRequest(CHAT, body, "gpt-4o-mini", False, False, None, 1)


def test_chat_stream_usage_temperature_n() -> None:
    parsed = _parse(
        CHAT,
        _with(
            CHAT,
            stream=True,
            stream_options={"include_usage": True},
            temperature=0,
            n=3,
        ),
    )
    assert parsed.stream is True
    assert parsed.include_usage is True
    assert parsed.temperature == 0.0 and isinstance(parsed.temperature, float)
    assert parsed.n == 3


def test_chat_body_is_passed_through_unchanged() -> None:
    body = _with(CHAT, reasoning_effort="low", metadata={"a": "b"}, some_new_param=[1, {"x": 2}])
    assert _parse(CHAT, body).body == body


@pytest.mark.parametrize(
    "fields",
    [
        {"stream": False, "stream_options": None},
        {"stream_options": {"include_usage": False}},
        {"temperature": 2, "top_p": 0.0},
        {"temperature": 1.5, "top_p": 1},
        {"n": 1},
        {"n": 128},
        {"max_tokens": 1, "max_completion_tokens": 100000},
        {"stop": "\n"},
        {"stop": ["a", "b", "c", "d"]},
        {"stop": []},
        {"stop": None},
        {"presence_penalty": -2, "frequency_penalty": 2.0},
        {"seed": -(2**63)},
        {"seed": 2**63 - 1},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "auto"},
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        {"response_format": {"type": "json_object"}},
        {"logprobs": True, "top_logprobs": 0},
        {"top_logprobs": 20},
        {"user": "u-1"},
        # null on an optional field means "absent" (SDKs send it).
        {"temperature": None, "n": None, "max_tokens": None, "tools": None, "user": None},
    ],
)
def test_chat_optional_fields_accepted(fields: dict[str, Any]) -> None:
    _parse(CHAT, _with(CHAT, **fields))


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "Be brief."}, USER],
        [{"role": "developer", "content": "x"}, USER],
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}],
        [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "u", "detail": "low"}},
                    {"type": "input_audio", "input_audio": {"data": "AAA=", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "file-1"}},
                    # A server's own part type (vLLM) is the provider's to judge.
                    {"type": "video_url", "video_url": {"url": "v"}},
                ],
            }
        ],
        [USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}],
        [{"role": "user", "content": []}],
        [{"role": "user", "content": "hi", "name": "bob"}],
        [
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        [USER, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}],
        [USER, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}],
        [USER, {"role": "assistant", "content": None, "refusal": "I can't."}],
        [USER, {"role": "assistant", "content": "sure"}],
        [USER, {"role": "function", "name": "f", "content": "result"}],
        [{"role": "user", "content": "x", "unknown_extra": 1}],
    ],
)
def test_chat_messages_accepted(messages: list[Any]) -> None:
    _parse(CHAT, _with(CHAT, messages=messages))


# --------------------------------------------------------------------------- chat: refused


@pytest.mark.parametrize(
    ("messages", "param", "fragment"),
    [
        (_MISSING, "messages", "Missing required parameter: 'messages'."),
        (None, "messages", "but got null instead"),
        ({"role": "user"}, "messages", "expected an array of message objects"),
        ([], "messages", "non-empty array"),
        (["hi"], "messages[0]", "expected a message object, but got a string instead"),
        ([USER, 3], "messages[1]", "but got an integer instead"),
        ([{"content": "x"}], "messages[0].role", "Missing required parameter"),
        ([{"role": 1, "content": "x"}], "messages[0].role", "expected a string"),
        ([{"role": "robot", "content": "x"}], "messages[0].role", "but got 'robot'"),
        ([{"role": "User", "content": "x"}], "messages[0].role", "'system', 'developer'"),
        (
            [{"role": "user", "content": 5}],
            "messages[0].content",
            "Invalid type for 'messages[0].content': expected a string or an array of content "
            "parts, but got an integer instead.",
        ),
        ([{"role": "user", "content": True}], "messages[0].content", "but got a boolean"),
        ([{"role": "user", "content": {"type": "text"}}], "messages[0].content", "an object"),
        ([{"role": "user"}], "messages[0].content", "Missing required parameter"),
        ([{"role": "user", "content": None}], "messages[0].content", "but got null instead"),
        ([{"role": "system", "content": None}], "messages[0].content", "but got null"),
        (
            [USER, {"role": "assistant", "content": None}],
            "messages[1].content",
            "but got null",
        ),
        (
            [USER, {"role": "assistant"}],
            "messages[1].content",
            "may omit it only when they carry 'tool_calls'",
        ),
        (
            [USER, {"role": "assistant", "tool_calls": []}],
            "messages[1].content",
            "Missing required parameter",
        ),
        (
            [USER, {"role": "assistant", "tool_calls": {"id": "c"}}],
            "messages[1].tool_calls",
            "expected an array of tool calls",
        ),
        (
            [USER, {"role": "assistant", "tool_calls": ["c"]}],
            "messages[1].tool_calls[0]",
            "expected a tool call object",
        ),
        (
            [USER, {"role": "assistant", "function_call": "f"}],
            "messages[1].function_call",
            "expected an object",
        ),
        (
            [USER, {"role": "assistant", "refusal": 1}],
            "messages[1].refusal",
            "expected a string",
        ),
        (
            [{"role": "user", "content": ["hi"]}],
            "messages[0].content[0]",
            "expected a content part object, but got a string",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}],
            "messages[0].content[1].type",
            "Missing required parameter",
        ),
        (
            [{"role": "user", "content": [{"type": 3}]}],
            "messages[0].content[0].type",
            "expected a string, but got an integer",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": 0}]}],
            "messages[0].content[0].text",
            "expected a string, but got an integer",
        ),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            "messages[0].content[0].text",
            "Missing required parameter",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/a.png"}]}],
            "messages[0].content[0].image_url",
            "expected an object with a 'url'",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": None}}]}],
            "messages[0].content[0].image_url.url",
            "expected a string",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}],
            "messages[0].content[0].input_audio.format",
            "Missing required parameter",
        ),
        (
            [{"role": "user", "content": [{"type": "file", "file": {"file_id": 5}}]}],
            "messages[0].content[0].file.file_id",
            "expected a string",
        ),
        (
            [USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": []}]}],
            "messages[1].content[0].refusal",
            "expected a string",
        ),
        (
            [{"role": "tool", "content": "42"}],
            "messages[0].tool_call_id",
            "Missing required parameter",
        ),
        (
            [{"role": "tool", "content": "42", "tool_call_id": 7}],
            "messages[0].tool_call_id",
            "expected a string",
        ),
        ([{"role": "function", "content": "r"}], "messages[0].name", "Missing required"),
        ([{"role": "user", "content": "x", "name": 3}], "messages[0].name", "expected a string"),
    ],
)
def test_chat_messages_refused(messages: Any, param: str, fragment: str) -> None:
    _assert_names(_refused(CHAT, _with(CHAT, messages=messages)), param, fragment)


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"stream": "true"}, "stream", "expected a boolean, but got a string instead"),
        ({"stream": 1}, "stream", "expected a boolean, but got an integer instead"),
        ({"stream_options": True}, "stream_options", "expected an object"),
        (
            {"stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
            "expected a boolean, but got an integer",
        ),
        (
            {"temperature": 3},
            "temperature",
            "Invalid value for 'temperature': expected a number between 0 and 2, but got 3.",
        ),
        ({"temperature": -0.1}, "temperature", "but got -0.1"),
        ({"temperature": True}, "temperature", "expected a number, but got a boolean instead"),
        ({"temperature": "0.5"}, "temperature", "expected a number, but got a string"),
        ({"temperature": 1e300}, "temperature", "between 0 and 2"),
        ({"top_p": 1.01}, "top_p", "between 0 and 1"),
        ({"top_p": False}, "top_p", "got a boolean"),
        ({"n": 0}, "n", "expected an integer between 1 and 128, but got 0"),
        ({"n": 129}, "n", "between 1 and 128"),
        ({"n": 2.0}, "n", "expected an integer, but got a decimal number instead"),
        ({"n": True}, "n", "expected an integer, but got a boolean instead"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"max_tokens": "10"}, "max_tokens", "expected an integer"),
        ({"max_completion_tokens": -5}, "max_completion_tokens", "greater than or equal to 1"),
        ({"stop": 5}, "stop", "a string or an array of at most 4 strings"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "an array of 5 items"),
        ({"stop": ["a", 1]}, "stop[1]", "expected a string"),
        ({"presence_penalty": 2.5}, "presence_penalty", "between -2 and 2"),
        ({"frequency_penalty": -3}, "frequency_penalty", "between -2 and 2"),
        ({"frequency_penalty": True}, "frequency_penalty", "got a boolean"),
        ({"seed": 1.5}, "seed", "expected an integer"),
        ({"seed": True}, "seed", "got a boolean"),
        ({"seed": 2**64 - 1}, "seed", "between -9223372036854775808 and 9223372036854775807"),
        ({"tools": {"type": "function"}}, "tools", "expected an array of tool objects"),
        ({"tools": ["f"]}, "tools[0]", "expected a tool object"),
        ({"tools": [{"type": "function"}, {}]}, "tools[1].type", "Missing required parameter"),
        ({"tools": [{"type": 1}]}, "tools[0].type", "expected a string"),
        ({"tool_choice": 1}, "tool_choice", "a string or an object"),
        ({"response_format": "json"}, "response_format", "expected an object"),
        ({"logprobs": 1}, "logprobs", "expected a boolean"),
        ({"top_logprobs": 21}, "top_logprobs", "between 0 and 20"),
        ({"top_logprobs": -1}, "top_logprobs", "between 0 and 20"),
        ({"user": 5}, "user", "expected a string"),
    ],
)
def test_chat_optional_fields_refused(fields: dict[str, Any], param: str, fragment: str) -> None:
    _assert_names(_refused(CHAT, _with(CHAT, **fields)), param, fragment)


def test_huge_integer_is_reported_as_out_of_range() -> None:
    # orjson parses integers beyond 64 bits as floats; do not call them "decimal numbers".
    raw = (
        b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1' + b"0" * 30 + b"}"
    )
    err = _refused(CHAT, raw)
    _assert_names(err, "n", "outside the 64-bit integer range")


def test_first_problem_in_messages_wins_over_optional_fields() -> None:
    err = _refused(CHAT, _with(CHAT, messages=[], temperature=9))
    assert err.param == "messages"


# --------------------------------------------------------------------------- completions


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "hello"},
        {"prompt": ""},
        {"prompt": ["a", "b"]},
        {"prompt": [1, 2, 3]},
        {"prompt": [[1, 2], [3]]},
        {"prompt": []},
        {"echo": True, "max_tokens": 0, "logprobs": 0},
        {"logprobs": 5, "best_of": 3, "n": 2},
        {"logprobs": None, "suffix": None},
        {"suffix": " end", "seed": 1, "user": "u", "stop": ["\n"]},
        {"stream": True, "stream_options": {"include_usage": True}, "temperature": 0.7},
    ],
)
def test_completions_accepted(fields: dict[str, Any]) -> None:
    _parse(COMPLETIONS, _with(COMPLETIONS, **fields))


def test_completions_parsed_fields() -> None:
    parsed = _parse(
        COMPLETIONS, _with(COMPLETIONS, stream=True, temperature=1, n=2, stream_options=None)
    )
    assert (parsed.endpoint, parsed.stream, parsed.include_usage) == (COMPLETIONS, True, False)
    assert (parsed.temperature, parsed.n, parsed.model) == (1.0, 2, "gpt-3.5-turbo-instruct")


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"prompt": _MISSING}, "prompt", "Missing required parameter: 'prompt'."),
        ({"prompt": None}, "prompt", "but got null instead"),
        ({"prompt": 5}, "prompt", "expected a string, an array of strings, an array of"),
        ({"prompt": {"text": "x"}}, "prompt", "but got an object instead"),
        ({"prompt": ["a", 1]}, "prompt[1]", "expected a string, like 'prompt[0]'"),
        ({"prompt": [1, "a"]}, "prompt[1]", "expected an integer token id"),
        ({"prompt": [1, True]}, "prompt[1]", "but got a boolean instead"),
        ({"prompt": [1, 2.5]}, "prompt[1]", "but got a decimal number instead"),
        ({"prompt": [[1], 2]}, "prompt[1]", "expected an array of integer token ids"),
        ({"prompt": [[1], [2, "x"]]}, "prompt[1][1]", "expected an integer token id"),
        ({"prompt": [True]}, "prompt[0]", "but got a boolean instead"),
        ({"prompt": [None]}, "prompt[0]", "but got null instead"),
        ({"echo": "yes"}, "echo", "expected a boolean"),
        ({"best_of": 0}, "best_of", "greater than or equal to 1"),
        ({"logprobs": 6}, "logprobs", "between 0 and 5"),
        ({"logprobs": True}, "logprobs", "expected an integer, but got a boolean"),
        ({"suffix": 1}, "suffix", "expected a string"),
        ({"max_tokens": -1}, "max_tokens", "greater than or equal to 0"),
        ({"temperature": 2.5}, "temperature", "between 0 and 2"),
        ({"n": 0}, "n", "between 1 and 128"),
        ({"stop": [1]}, "stop[0]", "expected a string"),
        ({"stream": "yes"}, "stream", "expected a boolean"),
        ({"user": []}, "user", "expected a string"),
    ],
)
def test_completions_refused(fields: dict[str, Any], param: str, fragment: str) -> None:
    _assert_names(_refused(COMPLETIONS, _with(COMPLETIONS, **fields)), param, fragment)


# --------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize(
    "fields",
    [
        {"input": "hello"},
        {"input": ["a", "b"]},
        {"input": [1, 2]},
        {"input": [[1], [2, 3]]},
        {"encoding_format": "base64", "dimensions": 256, "user": "u"},
        {"encoding_format": "float"},
        {"stream": False},
        {"stream": None},
        {"temperature": "not validated for embeddings"},
    ],
)
def test_embeddings_accepted(fields: dict[str, Any]) -> None:
    parsed = _parse(EMBEDDINGS, _with(EMBEDDINGS, **fields))
    assert (parsed.stream, parsed.include_usage, parsed.temperature, parsed.n) == (
        False,
        False,
        None,
        1,
    )


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"input": _MISSING}, "input", "Missing required parameter: 'input'."),
        ({"input": ""}, "input", "expected a non-empty string, but got an empty string"),
        ({"input": []}, "input", "non-empty array"),
        ({"input": ["a", ""]}, "input[1]", "non-empty string"),
        ({"input": ["a", 2]}, "input[1]", "expected a string"),
        ({"input": [[1], []]}, "input[1]", "non-empty array of integer token ids"),
        ({"input": [[1], [False]]}, "input[1][0]", "but got a boolean"),
        ({"input": 3.5}, "input", "but got a decimal number instead"),
        ({"encoding_format": "int8"}, "encoding_format", "one of 'float', 'base64'"),
        ({"encoding_format": 1}, "encoding_format", "expected a string"),
        ({"dimensions": 0}, "dimensions", "greater than or equal to 1"),
        ({"dimensions": 1.0}, "dimensions", "expected an integer"),
        ({"user": 1}, "user", "expected a string"),
        ({"stream": True}, "stream", "stream is not supported for embeddings"),
        ({"stream": "no"}, "stream", "expected a boolean"),
    ],
)
def test_embeddings_refused(fields: dict[str, Any], param: str, fragment: str) -> None:
    _assert_names(_refused(EMBEDDINGS, _with(EMBEDDINGS, **fields)), param, fragment)


# --------------------------------------------------------------------------- models list


def test_models_list_format() -> None:
    body = orjson.loads(models_list([("gpt-4o", "openai"), ("claude", "anthropic")], 1700000000))
    assert body == {
        "object": "list",
        "data": [
            {"id": "gpt-4o", "object": "model", "created": 1700000000, "owned_by": "openai"},
            {"id": "claude", "object": "model", "created": 1700000000, "owned_by": "anthropic"},
        ],
    }
    assert orjson.loads(models_list([], 0)) == {"object": "list", "data": []}


# --------------------------------------------------------------------------- completeness

CHAT_OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
}
TEXT_OK = {"object": "text_completion", "choices": [{"text": "hi", "finish_reason": "length"}]}
EMB_OK = {"object": "list", "data": [{"object": "embedding", "embedding": [0.1], "index": 0}]}


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (CHAT, CHAT_OK, True),
        (CHAT, {**CHAT_OK, "error": None}, False),
        (CHAT, {"error": {"message": "x"}}, False),
        (CHAT, {**CHAT_OK, "choices": []}, False),
        (CHAT, {**CHAT_OK, "choices": None}, False),
        (CHAT, {**CHAT_OK, "choices": [{"message": {}, "finish_reason": None}]}, False),
        (CHAT, {**CHAT_OK, "choices": [{"message": "hi", "finish_reason": "stop"}]}, False),
        (CHAT, {**CHAT_OK, "choices": [{"finish_reason": "stop"}]}, False),
        (CHAT, {**CHAT_OK, "choices": ["x"]}, False),
        (CHAT, [CHAT_OK], False),
        (CHAT, None, False),
        (COMPLETIONS, TEXT_OK, True),
        (COMPLETIONS, {"choices": [{"text": None, "finish_reason": "stop"}]}, False),
        (COMPLETIONS, {"choices": [{"text": "a"}]}, False),
        (COMPLETIONS, CHAT_OK, False),
        (EMBEDDINGS, EMB_OK, True),
        (EMBEDDINGS, {**EMB_OK, "object": "embedding"}, False),
        (EMBEDDINGS, {**EMB_OK, "data": []}, False),
        (EMBEDDINGS, {**EMB_OK, "data": [{"index": 0}]}, False),
        (EMBEDDINGS, {**EMB_OK, "data": [3]}, False),
        (EMBEDDINGS, {**EMB_OK, "error": {}}, False),
        (Endpoint.MODELS, {"object": "list", "data": []}, True),
        (Endpoint.MODELS, {"object": "model"}, False),
    ],
)
def test_is_complete_response(endpoint: Endpoint, body: Any, expected: bool) -> None:
    assert is_complete_response(endpoint, body) is expected
