"""Anthropic Messages wire format: request checks, error shape, stream assembly/replay."""

from __future__ import annotations

import orjson
import pytest

from edge_agent.api import anthropic
from edge_agent.api.errors import ApiError

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo", "n": [1]}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 7},
}


def test_replayed_stream_assembles_back_to_the_same_message() -> None:
    raw = anthropic.replay_stream(MESSAGE)
    assembler = anthropic.MessagesAssembler()
    for i in range(0, len(raw), 5):
        assembler.feed(raw[i : i + 5])
    assert assembler.result() == MESSAGE


def test_a_cut_or_failed_stream_is_never_a_result() -> None:
    raw = anthropic.replay_stream(MESSAGE)
    cut = anthropic.MessagesAssembler()
    cut.feed(raw[: raw.index(b"event: message_stop")])
    assert cut.result() is None
    failed = anthropic.MessagesAssembler()
    failed.feed(
        raw.replace(
            b"event: message_stop", b'event: error\ndata: {"type":"error"}\n\nevent: message_stop'
        )
    )
    assert failed.result() is None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}, "role"),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "x"}]}],
            },
            "messages.0.content.0.type",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "temperature": 2,
            },
            "temperature",
        ),
    ],
)
def test_bad_requests_name_the_field(body: dict, where: str) -> None:
    with pytest.raises(ApiError) as err:
        anthropic.parse_request(orjson.dumps(body))
    assert err.value.status == 400 and where in err.value.message
    shaped = orjson.loads(anthropic.error_body(err.value))
    assert shaped["type"] == "error" and shaped["error"]["type"] == "invalid_request_error"
