"""Fuzzing: no input bytes make the API layer raise anything but ApiError."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint, ParsedRequest, is_complete_response, parse_request
from edge_agent.api.sse import SSEParser, StreamAssembler, replay_stream

PARSED = (Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS)
# Budgets keep the whole API unit suite within ~10 s (a deeper run: see the report).
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_HEAVY = settings(FUZZ, max_examples=60)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1, 2, 128, 129, -1, 0.5, 2.0, 1e30, "", "user", "assistant", "tool"])
    | st.text(max_size=20)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

_FIELDS = [
    "stream", "stream_options", "temperature", "top_p", "n", "max_tokens",
    "max_completion_tokens", "stop", "presence_penalty", "frequency_penalty", "seed", "tools",
    "tool_choice", "response_format", "logprobs", "top_logprobs", "user", "echo", "best_of",
    "suffix", "encoding_format", "dimensions",
]  # fmt: skip


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Mostly well-formed values so validation runs deep, with enough bad ones to probe it.
    # (one_of would not do: it does not weight repeated branches.)
    return st.sampled_from(range(7)).flatmap(lambda k: good if k else bad)


_text = st.text(max_size=10)
_part = st.fixed_dictionaries(
    {"type": _mostly(st.sampled_from(["text", "image_url"]), _scalars)},
    optional={"text": _mostly(_text, _json)},
)
_message = st.fixed_dictionaries(
    {"role": _mostly(st.sampled_from(["system", "user", "assistant", "tool", "function"]), _json)},
    optional={
        "content": _mostly(_text | st.lists(_mostly(_part, _json), max_size=2), _json),
        "tool_calls": _mostly(st.lists(st.dictionaries(_text, _scalars), max_size=2), _json),
        "function_call": _mostly(st.dictionaries(_text, _text, max_size=2), _json),
        "refusal": _mostly(_text, _json),
        "tool_call_id": _mostly(_text, _scalars),
        "name": _mostly(_text, _scalars),
    },
)
_tokens = st.lists(_mostly(st.integers(min_value=0, max_value=50_000), _scalars), max_size=4)
_inputs = _mostly(
    _text
    | st.lists(_mostly(_text, _scalars), max_size=4)
    | _tokens
    | st.lists(_tokens, max_size=3),
    _json,
)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {**base, **extra}


# Bodies that are nearly valid, so validation gets past the first checks; model errors are
# covered by the arbitrary-JSON test.
_body = st.builds(
    _merge,
    st.fixed_dictionaries(
        {
            "model": st.just("gpt-4o"),
            "messages": _mostly(st.lists(_mostly(_message, _json), min_size=1, max_size=3), _json),
            "prompt": _inputs,
            "input": _inputs,
        },
    ),
    st.dictionaries(st.sampled_from(_FIELDS), _scalars | _json, max_size=3),
)


def _dumps(value: Any) -> bytes:
    # stdlib json: unlike orjson.dumps it writes integers beyond 64 bits, which clients may send.
    return json.dumps(value, ensure_ascii=False).encode()


def _check(endpoint: Endpoint, raw: bytes) -> None:
    try:
        parsed = parse_request(endpoint, raw)
    except ApiError as err:
        assert err.status == 400
        decoded = orjson.loads(err.body())
        assert decoded["error"]["message"]
    else:
        assert isinstance(parsed, ParsedRequest)
        assert isinstance(parsed.model, str) and parsed.model
        assert type(parsed.n) is int
        assert parsed.temperature is None or type(parsed.temperature) is float


@FUZZ
@given(st.sampled_from(PARSED), st.binary(max_size=300))
def test_parse_request_arbitrary_bytes(endpoint: Endpoint, raw: bytes) -> None:
    _check(endpoint, raw)


@FUZZ
@given(st.sampled_from(PARSED), _json)
def test_parse_request_arbitrary_json(endpoint: Endpoint, value: Any) -> None:
    _check(endpoint, _dumps(value))


@FUZZ
@given(st.sampled_from(PARSED), _body)
def test_parse_request_nearly_valid_bodies(endpoint: Endpoint, body: dict[str, Any]) -> None:
    _check(endpoint, _dumps(body))


@FUZZ_HEAVY
@given(st.sampled_from(PARSED), _body, st.integers(min_value=0, max_value=400), st.binary())
def test_parse_request_corrupted_bodies(
    endpoint: Endpoint, body: dict[str, Any], at: int, noise: bytes
) -> None:
    raw = _dumps(body)
    at %= len(raw) + 1
    _check(endpoint, raw[:at] + noise + raw[at:])


_sse_bytes = st.lists(
    st.binary(max_size=40)
    | st.sampled_from(
        [
            b"data: ",
            b"data: [DONE]",
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            b":",
            b"event: error\n",
            b"\xef\xbb\xbf",
            b"\xff",
            b"id: 1\x00\n",
            b"retry: 9\n",
            b'data: {"choices": [',
        ]
    ),
    max_size=20,
)


@FUZZ
@given(_sse_bytes)
def test_sse_parser_never_raises(pieces: list[bytes]) -> None:
    parser = SSEParser()
    for piece in pieces:
        for event in parser.feed(piece):
            assert isinstance(event.data, str)


_str_or_none = st.none() | _text
_tool_call_delta = st.fixed_dictionaries(
    {},
    optional={
        "index": _mostly(st.integers(min_value=0, max_value=2), _scalars),
        "id": _mostly(_str_or_none, _scalars),
        "type": _mostly(st.just("function"), _scalars),
        "function": _mostly(
            st.fixed_dictionaries(
                {}, optional={"name": _mostly(_text, _scalars), "arguments": _mostly(_text, _json)}
            ),
            _json,
        ),
    },
)
_delta = st.fixed_dictionaries(
    {},
    optional={
        "role": _mostly(st.just("assistant"), _scalars),
        "content": _mostly(_str_or_none, _json),
        "refusal": _mostly(_str_or_none, _json),
        "function_call": _mostly(st.fixed_dictionaries({}, optional={"name": _text}), _json),
        "tool_calls": _mostly(st.lists(_mostly(_tool_call_delta, _json), max_size=2), _json),
    },
)
_logprobs = st.none() | st.fixed_dictionaries(
    {},
    optional={
        key: _mostly(st.lists(_scalars, max_size=2), _json)
        for key in ("content", "refusal", "tokens", "token_logprobs", "top_logprobs", "text_offset")
    },
)
_choice = st.fixed_dictionaries(
    {
        "index": _mostly(st.integers(min_value=0, max_value=2), _scalars),
        "finish_reason": _mostly(st.sampled_from([None, None, "stop", "length"]), _scalars),
    },
    optional={
        "text": _mostly(_text, _json),
        "delta": _mostly(_delta, _json),
        "logprobs": _mostly(_logprobs, _json),
    },
)
# Mostly well-formed OpenAI chunks, so merging runs deep and some streams complete.
_chunk_json = _mostly(
    st.fixed_dictionaries(
        {"choices": _mostly(st.lists(_mostly(_choice, _json), max_size=2), _json)},
        optional={
            "id": _mostly(_text, _scalars),
            "created": _mostly(st.integers(min_value=0, max_value=2**40), _scalars),
            "model": _mostly(_text, _scalars),
            "system_fingerprint": _mostly(_str_or_none, _scalars),
            "usage": _mostly(st.none() | st.dictionaries(_text, st.integers()), _json),
        },
    ),
    _json | st.fixed_dictionaries({"error": _json}),
)


@FUZZ_HEAVY
@given(
    st.sampled_from([Endpoint.CHAT, Endpoint.COMPLETIONS]),
    st.lists(_chunk_json, max_size=8),
    st.booleans(),
)
def test_stream_assembler_structured_chunks(
    endpoint: Endpoint, chunks: list[Any], done: bool
) -> None:
    assembler = StreamAssembler(endpoint)
    for chunk in chunks:
        assembler.feed(b"data: " + _dumps(chunk) + b"\n\n")
    if done:
        assembler.feed(b"data: [DONE]\n\n")
    result = assembler.result()
    if result is None:
        return
    assert done and not assembler.failed
    assert is_complete_response(endpoint, result)
    # Whatever was assembled replays and re-assembles to itself: the cache round trip.
    again = StreamAssembler(endpoint)
    again.feed(replay_stream(endpoint, result, include_usage="usage" in result))
    assert again.result() == result


@FUZZ
@given(st.sampled_from([Endpoint.CHAT, Endpoint.COMPLETIONS]), _sse_bytes)
def test_stream_assembler_arbitrary_bytes(endpoint: Endpoint, pieces: list[bytes]) -> None:
    assembler = StreamAssembler(endpoint)
    for piece in pieces:
        assembler.feed(piece)
    assembler.result()
