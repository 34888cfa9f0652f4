"""The client schema object: one per API, chosen once from the endpoint."""

from __future__ import annotations

import orjson
import pytest

from edge_agent.api.errors import invalid_request
from edge_agent.api.openai import Endpoint
from edge_agent.api.schema import ANTHROPIC, OPENAI, schema_for

OPENAI_ERROR = b'{"error":{"message":"Slow down","type":"requests"}}'
ANTHROPIC_ERROR = b'{"type":"error","error":{"type":"overloaded_error","message":"Busy"}}'


def test_chosen_from_the_endpoint() -> None:
    assert schema_for(Endpoint.MESSAGES) is ANTHROPIC
    for endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS):
        assert schema_for(endpoint) is OPENAI
    assert OPENAI.speaks("openai") and not OPENAI.speaks("anthropic")
    assert ANTHROPIC.speaks("anthropic") and not ANTHROPIC.speaks("gemini")


def test_errors_already_in_the_schema_pass() -> None:
    assert OPENAI.provider_error(429, OPENAI_ERROR) is None
    assert ANTHROPIC.provider_error(529, ANTHROPIC_ERROR) is None
    assert OPENAI.provider_error(529, ANTHROPIC_ERROR) is None  # OpenAI SDKs read it


def test_errors_outside_the_schema_are_put_in_it() -> None:
    wrapped = orjson.loads(ANTHROPIC.provider_error(429, OPENAI_ERROR) or b"")
    assert wrapped == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down"},
    }
    page = b"<html>\n<h1>503   Service\n Unavailable</h1>" + b"x" * 3000 + b"</html>"
    out = orjson.loads(OPENAI.provider_error(503, page) or b"")["error"]
    assert "503 Service Unavailable" in out["message"] and len(out["message"]) < 600
    assert out["type"] == "api_error" and out["code"] == "upstream_error"
    for body in (b'"just a string"', b"[1, 2]", b"null", b'{"error": "bad key"}'):
        out = orjson.loads(OPENAI.provider_error(400, body) or b"")["error"]
        assert out["type"] == "invalid_request_error", body


@pytest.mark.parametrize(
    ("schema", "event"), [(OPENAI, b"data: {"), (ANTHROPIC, b"event: error\ndata: {")]
)
def test_error_bodies_and_stream_errors(schema: object, event: bytes) -> None:
    exc = invalid_request("bad", code="x")
    body = orjson.loads(schema.error_body(exc))  # type: ignore[attr-defined]
    assert (body["error"]["message"]) == "bad"
    assert schema.stream_error(exc).startswith(event)  # type: ignore[attr-defined]


def test_usage_is_read_openai_shaped() -> None:
    usage = {"input_tokens": 3, "output_tokens": 4}
    answer = orjson.dumps({"usage": usage})
    assert ANTHROPIC.usage_of(answer)["prompt_tokens"] == 3  # type: ignore[index]
    assert OPENAI.usage_of(b'{"usage": {"prompt_tokens": 1}}') == {"prompt_tokens": 1}
    assert OPENAI.usage_of(b"not json") is None and OPENAI.usage_of(b"[]") is None
