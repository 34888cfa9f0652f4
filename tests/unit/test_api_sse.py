"""SSE parsing, OpenAI stream assembly and replay."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.api.openai import Endpoint, is_complete_response
from edge_agent.api.sse import (
    SSEEvent,
    SSEParser,
    StreamAssembler,
    encode_event,
    replay_stream,
)

CHAT, COMPLETIONS = Endpoint.CHAT, Endpoint.COMPLETIONS


def _parse_all(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: hello\n\n", [SSEEvent("hello")]),
        (b"data: a\ndata: b\n\n", [SSEEvent("a\nb")]),
        (b"data: a\r\n\r\n", [SSEEvent("a")]),
        (b"data: a\r\rdata: b\r\n\r\n", [SSEEvent("a"), SSEEvent("b")]),
        (b"data: a\r\ndata: b\rdata: c\n\n", [SSEEvent("a\nb\nc")]),
        (b": keep-alive\n\ndata: x\n\n", [SSEEvent("x")]),
        (b"data: x\n: comment inside\ndata: y\n\n", [SSEEvent("x\ny")]),
        (b"event: error\ndata: {}\n\n", [SSEEvent("{}", "error")]),
        (b"event: ping\n\ndata: y\n\n", [SSEEvent("y")]),  # type resets with no data
        (b"event:\ndata: y\n\n", [SSEEvent("y")]),
        (b"data:x\n\n", [SSEEvent("x")]),
        (b"data:  x\n\n", [SSEEvent(" x")]),  # only one leading space is removed
        (b"data\n\n", [SSEEvent("")]),
        (b"data:\n\n", [SSEEvent("")]),
        (b"data:\ndata:\n\n", [SSEEvent("\n")]),
        (b"\n\n\n", []),
        (b"foo: bar\ndata: z\n\n", [SSEEvent("z")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [SSEEvent("bom")]),
        (b"data: \xff\xfe\n\n", [SSEEvent("\ufffd\ufffd")]),
        (b"data: a:b: c\n\n", [SSEEvent("a:b: c")]),
        (b"data: unterminated\n", []),  # an event without its blank line is not dispatched
        (b"data: [DONE]\n\n", [SSEEvent("[DONE]")]),
    ],
)
def test_parser_cases(stream: bytes, expected: list[SSEEvent]) -> None:
    assert _parse_all(stream) == expected
    # the same bytes one at a time must give the same events
    assert _parse_all(*(stream[i : i + 1] for i in range(len(stream)))) == expected


def test_crlf_split_across_feeds_is_one_line_end() -> None:
    # If the trailing \r were not remembered, the \n would read as a blank line and
    # dispatch "a" alone.
    assert _parse_all(b"data: a\r", b"\ndata: b\n\n") == [SSEEvent("a\nb")]
    assert _parse_all(b"data: a\r", b"\n", b"\r\n") == [SSEEvent("a")]
    assert _parse_all(b"data: a\r", b"", b"\n", b"\n") == [SSEEvent("a")]


def test_multibyte_utf8_split_across_feeds() -> None:
    raw = "data: héllo 🌍\n\n".encode()
    assert _parse_all(raw[:8], raw[8:17], raw[17:]) == [SSEEvent("héllo 🌍")]


def test_id_and_retry_fields() -> None:
    parser = SSEParser()
    parser.feed(b"id: 42\nretry: 1500\nretry: soon\ndata: x\n\n")
    assert parser.last_event_id == "42"
    assert parser.retry == 1500
    parser.feed(b"id: bad\x00id\n\n")
    assert parser.last_event_id == "42"


def test_long_line_in_many_small_feeds() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: ") == []
    for _ in range(1000):
        assert parser.feed(b"x" * 10) == []
    assert parser.feed(b"\n\n") == [SSEEvent("x" * 10000)]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([None, "message", "error"]), st.text(max_size=40)),
        max_size=6,
    ),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_parser_any_split_same_events(
    events: list[tuple[str | None, str]], cuts: list[int], newline: bytes
) -> None:
    stream = b"".join(encode_event(data, event) for event, data in events)
    stream = stream.replace(b"\n", newline)
    expected = [
        SSEEvent(data.replace("\r\n", "\n").replace("\r", "\n"), event) for event, data in events
    ]
    assert _parse_all(stream) == expected
    assert _parse_all(*_split(stream, cuts)) == expected


# --------------------------------------------------------------------------- encode_event


def test_encode_event() -> None:
    assert encode_event("hi") == b"data: hi\n\n"
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event("x", "error") == b"event: error\ndata: x\n\n"
    assert encode_event("a\nb\r\nc") == b"data: a\ndata: b\ndata: c\n\n"
    assert encode_event("") == b"data: \n\n"
    assert encode_event("a\n") == b"data: a\ndata: \n\n"
    with pytest.raises(ValueError):
        encode_event("x", "two\nlines")


# --------------------------------------------------------------------------- assembler

HEAD = {
    "id": "chatcmpl-AbC123",
    "object": "chat.completion.chunk",
    "created": 1731000000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_0ba0d124f1",
}
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def _chunk(*choices: dict[str, Any], usage: Any = None, **extra: Any) -> dict[str, Any]:
    return {**HEAD, "choices": list(choices), "usage": usage, **extra}


def _delta(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _sse(*chunks: Any, done: bool = True) -> bytes:
    """Frame chunks as OpenAI does; bytes are sent verbatim (for malformed data)."""
    body = b"".join(
        b"data: " + (c if isinstance(c, bytes) else orjson.dumps(c)) + b"\n\n" for c in chunks
    )
    return body + (b"data: [DONE]\n\n" if done else b"")


def _assemble(endpoint: Endpoint, *pieces: bytes) -> StreamAssembler:
    assembler = StreamAssembler(endpoint)
    for piece in pieces:
        assembler.feed(piece)
    return assembler


CONTENT_STREAM = _sse(
    _chunk(_delta(role="assistant", content="", refusal=None)),
    _chunk(_delta(content="Hello")),
    _chunk(_delta(content=", wörld")),
    _chunk(_delta(content="!\n")),
    _chunk(_delta(finish="stop")),
    {**HEAD, "choices": [], "usage": USAGE},
)

CONTENT_RESULT = {
    "id": "chatcmpl-AbC123",
    "object": "chat.completion",
    "created": 1731000000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_0ba0d124f1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, wörld!\n"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
}


def test_assembles_content_stream_with_usage() -> None:
    assembler = _assemble(CHAT, CONTENT_STREAM)
    assert assembler.done and not assembler.failed
    assert assembler.result() == CONTENT_RESULT
    assert is_complete_response(CHAT, assembler.result())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(CONTENT_STREAM)), max_size=20))
def test_assembler_any_split(cuts: list[int]) -> None:
    assert _assemble(CHAT, *_split(CONTENT_STREAM, cuts)).result() == CONTENT_RESULT


def test_keepalive_comments_and_crlf_do_not_matter() -> None:
    stream = b": ping\r\n\r\n" + CONTENT_STREAM.replace(b"\n\n", b"\r\n\r\n") + b": bye\n\n"
    assert _assemble(CHAT, stream).result() == CONTENT_RESULT


TOOL_STREAM = _sse(
    _chunk(
        _delta(
            role="assistant",
            content=None,
            tool_calls=[
                {
                    "index": 0,
                    "id": "call_aaa",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
            refusal=None,
        )
    ),
    _chunk(_delta(tool_calls=[{"index": 0, "function": {"arguments": '{"lo'}}])),
    _chunk(_delta(tool_calls=[{"index": 0, "function": {"arguments": 'cation": "Paris"}'}}])),
    _chunk(
        _delta(
            tool_calls=[
                {
                    "index": 1,
                    "id": "call_bbb",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        )
    ),
    _chunk(_delta(tool_calls=[{"index": 1, "function": {"arguments": "{}"}}])),
    _chunk(_delta(finish="tool_calls")),
)


def test_assembles_tool_calls_split_over_chunks() -> None:
    result = _assemble(CHAT, TOOL_STREAM).result()
    assert result is not None
    assert "usage" not in result
    assert result["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_aaa",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "call_bbb",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]


def test_repeated_tool_name_is_not_doubled() -> None:
    call = {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
    again = {"index": 0, "function": {"name": "f", "arguments": "}"}}
    stream = _sse(
        _chunk(_delta(role="assistant", tool_calls=[call])),
        _chunk(_delta(tool_calls=[again])),
        _chunk(_delta(finish="tool_calls")),
    )
    message = _assemble(CHAT, stream).result()["choices"][0]["message"]  # type: ignore[index]
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_assembles_two_interleaved_choices() -> None:
    stream = _sse(
        _chunk(_delta(0, role="assistant", content="")),
        _chunk(_delta(1, role="assistant", content="")),
        _chunk(_delta(0, content="Red")),
        _chunk(_delta(1, content="Blue")),
        _chunk(_delta(1, content=" sky")),
        _chunk(_delta(0, finish="stop")),
        _chunk(_delta(1, finish="length")),
        {**HEAD, "choices": [], "usage": USAGE},
    )
    result = _assemble(CHAT, stream).result()
    assert result is not None
    assert [c["message"]["content"] for c in result["choices"]] == ["Red", "Blue sky"]
    assert [c["finish_reason"] for c in result["choices"]] == ["stop", "length"]
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert result["usage"] == USAGE


def test_assembles_refusal() -> None:
    stream = _sse(
        _chunk(_delta(role="assistant", content="", refusal=None)),
        _chunk(_delta(refusal="I can't ")),
        _chunk(_delta(refusal="help with that.")),
        _chunk(_delta(finish="stop")),
    )
    message = _assemble(CHAT, stream).result()["choices"][0]["message"]  # type: ignore[index]
    assert message == {"role": "assistant", "content": None, "refusal": "I can't help with that."}


def test_assembles_logprobs() -> None:
    lp_a = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
    lp_b = {"token": "!", "logprob": -0.2, "bytes": [33], "top_logprobs": []}
    stream = _sse(
        _chunk(_delta(role="assistant", content="")),
        _chunk({**_delta(content="Hi"), "logprobs": {"content": [lp_a], "refusal": None}}),
        _chunk({**_delta(content="!"), "logprobs": {"content": [lp_b], "refusal": None}}),
        _chunk(_delta(finish="stop")),
    )
    choice = _assemble(CHAT, stream).result()["choices"][0]  # type: ignore[index]
    assert choice["logprobs"] == {"content": [lp_a, lp_b], "refusal": None}


def test_assembles_completions_stream() -> None:
    head = {"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "instruct"}

    def piece(text: str, finish: str | None = None, index: int = 0) -> dict[str, Any]:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    stream = _sse(
        piece("Once"),
        piece(" upon"),
        piece(" a time", index=1),
        piece("", "stop"),
        piece("", "length", index=1),
        {**head, "choices": [], "usage": USAGE},
    )
    result = _assemble(COMPLETIONS, stream).result()
    assert result == {
        **head,
        "choices": [
            {"index": 0, "text": "Once upon", "logprobs": None, "finish_reason": "stop"},
            {"index": 1, "text": " a time", "logprobs": None, "finish_reason": "length"},
        ],
        "usage": USAGE,
    }
    assert is_complete_response(COMPLETIONS, result)


@pytest.mark.parametrize(
    ("stream", "done", "failed"),
    [
        # no [DONE]: the stream was cut
        (CONTENT_STREAM[: CONTENT_STREAM.index(b"data: [DONE]")], False, False),
        # [DONE] not followed by its blank line yet
        (CONTENT_STREAM[:-1], False, False),
        # a choice never finished
        (_sse(_chunk(_delta(role="assistant", content="Hel"))), True, False),
        # choice 1 finished, choice 0 never seen
        (_sse(_chunk(_delta(1, content="x", finish="stop"))), True, False),
        # no choices at all
        (_sse({**HEAD, "choices": [], "usage": USAGE}), True, False),
        (b"data: [DONE]\n\n", True, False),
        # malformed chunks
        (_sse(_chunk(_delta(content="a")), b"not json", _chunk(_delta(finish="stop"))), True, True),
        (_sse([1, 2], _chunk(_delta(content="a", finish="stop"))), True, True),
        (_sse("a string", _chunk(_delta(content="a", finish="stop"))), True, True),
        (b'data: {"choices": [\ndata: 1]}\n\ndata: [DONE]\n\n', True, True),
        # provider error mid-stream, as an object or as an error event
        (_sse(_chunk(_delta(content="a")), {"error": {"message": "overloaded"}}), True, True),
        (
            _sse(_chunk(_delta(content="a", finish="stop")), done=False)
            + b"event: error\ndata: {}\n\n"
            + b"data: [DONE]\n\n",
            True,
            True,
        ),
        (
            b"event: error\ndata: x\n\n" + _sse(_chunk(_delta(content="a", finish="stop"))),
            True,
            True,
        ),
        # wrong types inside a chunk
        (_sse(_chunk(_delta(content=5, finish="stop"))), True, True),
        (_sse({**HEAD, "choices": {"0": {}}}), True, True),
        (_sse({**HEAD, "choices": ["x"]}), True, True),
        (_sse({**HEAD, "choices": [{"index": -1, "delta": {}}]}), True, True),
        (_sse({**HEAD, "choices": [{"index": True, "delta": {}}]}), True, True),
        (_sse({**HEAD, "choices": [{"index": 0, "delta": "hi"}]}), True, True),
        (_sse({**HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": 1}]}), True, True),
        (_sse(_chunk(_delta(tool_calls={"index": 0}, finish="stop"))), True, True),
        (_sse(_chunk(_delta(tool_calls=[{"index": "0"}], finish="stop"))), True, True),
        (_sse(_chunk(_delta(tool_calls=[{"function": "f"}], finish="stop"))), True, True),
        (_sse(_chunk(_delta(tool_calls=[{"id": 7}], finish="stop"))), True, True),
        (_sse(_chunk({**_delta(finish="stop"), "logprobs": []})), True, True),
    ],
)
def test_incomplete_or_broken_streams_have_no_result(
    stream: bytes, done: bool, failed: bool
) -> None:
    assembler = _assemble(CHAT, stream)
    assert (assembler.done, assembler.failed) == (done, failed)
    assert assembler.result() is None


def test_data_after_done_is_ignored() -> None:
    assembler = _assemble(CHAT, CONTENT_STREAM + b"data: garbage\n\n" + _sse(_chunk(_delta())))
    assert assembler.result() == CONTENT_RESULT


def test_assembler_rejects_non_streaming_endpoints() -> None:
    with pytest.raises(ValueError):
        StreamAssembler(Endpoint.EMBEDDINGS)


# --------------------------------------------------------------------------- replay


def _events(body: bytes) -> list[Any]:
    events = _parse_all(body)
    assert events[-1] == SSEEvent("[DONE]")
    return [orjson.loads(e.data) for e in events[:-1]]


def test_replay_chat_is_openai_shaped() -> None:
    body = replay_stream(CHAT, CONTENT_RESULT, include_usage=False)
    assert body.endswith(b"data: [DONE]\n\n")
    chunks = _events(body)
    base = {k: HEAD[k] for k in ("id", "created", "model", "system_fingerprint")}
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert {k: chunk[k] for k in base} == base
        assert "usage" not in chunk
        (choice,) = chunk["choices"]
        assert choice["index"] == 0 and choice["logprobs"] is None
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello, wörld!\n"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]


def test_replay_with_usage_adds_usage_chunk() -> None:
    chunks = _events(replay_stream(CHAT, CONTENT_RESULT, include_usage=True))
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert chunks[-1]["object"] == "chat.completion.chunk"


def test_replay_tool_calls_deltas() -> None:
    completion = _assemble(CHAT, TOOL_STREAM).result()
    assert completion is not None
    chunks = _events(replay_stream(CHAT, completion, include_usage=False))
    delta = chunks[1]["choices"][0]["delta"]
    assert "content" not in delta
    assert delta["tool_calls"][1] == {
        "index": 1,
        "id": "call_bbb",
        "type": "function",
        "function": {"name": "get_time", "arguments": "{}"},
    }


def test_replay_completions() -> None:
    completion = {
        "id": "cmpl-9",
        "object": "text_completion",
        "created": 7,
        "model": "instruct",
        "choices": [{"index": 0, "text": "hi\nthere", "logprobs": None, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    body = replay_stream(COMPLETIONS, completion, include_usage=True)
    chunks = _events(body)
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[0]["choices"][0]["text"] == "hi\nthere"
    assert chunks[-1] == {
        "id": "cmpl-9",
        "object": "text_completion",
        "created": 7,
        "model": "instruct",
        "choices": [],
        "usage": USAGE,
    }
    assert _assemble(COMPLETIONS, body).result() == completion


@pytest.mark.parametrize(
    "completion",
    [
        {"error": {}},
        {"choices": ["x"]},
        {"choices": [{"index": 0, "finish_reason": "stop"}]},
        {"choices": [{"message": {"tool_calls": ["x"]}, "finish_reason": "stop"}]},
    ],
)
def test_replay_rejects_malformed_entries(completion: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        replay_stream(CHAT, completion, include_usage=False)


def _round_trip(endpoint: Endpoint, completion: dict[str, Any], include_usage: bool) -> None:
    original = copy.deepcopy(completion)
    body = replay_stream(endpoint, completion, include_usage)
    assert completion == original  # replay does not mutate the stored entry
    expected = dict(completion)
    if not include_usage:
        expected.pop("usage", None)  # the client did not ask for it, so it is not sent
    assert _assemble(endpoint, body).result() == expected


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize(
    "stream",
    [CONTENT_STREAM, TOOL_STREAM],
)
def test_round_trip_realistic(stream: bytes, include_usage: bool) -> None:
    completion = _assemble(CHAT, stream).result()
    assert completion is not None
    _round_trip(CHAT, completion, include_usage=include_usage)


_ident = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12)


@st.composite
def _chat_completion(draw: st.DrawFn) -> dict[str, Any]:
    choices = []
    for index in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["content", "tools", "refusal"]))
        message: dict[str, Any] = {"role": "assistant"}
        if kind == "content":
            message["content"] = draw(st.text(max_size=200))
        elif kind == "tools":
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": "call_" + draw(_ident),
                    "type": "function",
                    "function": {"name": draw(_ident), "arguments": draw(st.text(max_size=50))},
                }
                for _ in range(draw(st.integers(min_value=1, max_value=3)))
            ]
        else:
            message["content"] = None
            message["refusal"] = draw(st.text(min_size=1, max_size=50))
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": draw(st.sampled_from(["stop", "length", "tool_calls"])),
            }
        )
    completion: dict[str, Any] = {
        "id": "chatcmpl-" + draw(_ident),
        "object": "chat.completion",
        "created": draw(st.integers(min_value=0, max_value=2**40)),
        "model": draw(_ident),
    }
    if draw(st.booleans()):
        completion["system_fingerprint"] = "fp_" + draw(_ident)
    completion["choices"] = choices
    if draw(st.booleans()):
        completion["usage"] = USAGE
    return completion


@settings(max_examples=100, deadline=None)
@given(_chat_completion(), st.lists(st.integers(min_value=0, max_value=100_000), max_size=8))
def test_round_trip_property(completion: dict[str, Any], cuts: list[int]) -> None:
    include_usage = "usage" in completion
    body = replay_stream(CHAT, completion, include_usage)
    assert _assemble(CHAT, *_split(body, cuts)).result() == completion
    # every event but [DONE] is a valid chat.completion.chunk
    for chunk in _events(body):
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["choices"], list)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=3))
def test_completions_round_trip_property(texts: list[str]) -> None:
    completion = {
        "id": "cmpl-x",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": i, "text": text, "logprobs": None, "finish_reason": "stop"}
            for i, text in enumerate(texts)
        ],
    }
    _round_trip(COMPLETIONS, completion, include_usage=False)


def test_replay_of_a_non_streamed_openai_response() -> None:
    # A cached JSON answer (not assembled from a stream) carries fields a stream never has.
    completion = {
        "id": "chatcmpl-B9",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I help?",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
    }
    body = replay_stream(CHAT, completion, include_usage=True)
    chunks = _events(body)
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello! How can I help?"},
        {},
    ]
    assert all(c["service_tier"] == "default" for c in chunks)
    result = _assemble(CHAT, body).result()
    assert result is not None
    assert result["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello! How can I help?",
    }
    assert result["usage"] == completion["usage"]
