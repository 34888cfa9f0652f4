"""Whatever a client sends, every phase of an Exchange answers and never raises."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.extproc.decisions import Continue, Respond

AGENT = Agent(
    parse_config(
        {
            "providers": [{"name": "p", "type": "openai", "base_url": "http://127.0.0.1:1"}],
            "models": [{"name": "m", "targets": ["p/other"]}],
            "cache": {"semantic": {"enabled": False}},  # the sync path; semantic has its own
        }
    ),
    environ={},
)
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
# Bodies shaped like real requests, with any field replaced by anything.
requests = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "unknown"]) | json_values},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | json_values},
                optional={"content": st.text(max_size=20) | json_values},
            ),
            max_size=3,
        )
        | json_values,
        "prompt": json_values,
        "input": json_values,
        "stream": json_values,
        "temperature": json_values,
        "n": json_values,
        "stream_options": json_values,
    },
)


def run(path: str, body: bytes, headers: dict[str, str]) -> None:
    ex = AGENT.exchange()
    first = ex.request_headers({":method": "POST", ":path": path, **headers}, False)
    assert isinstance(first, Continue | Respond)
    if isinstance(first, Continue):
        d = ex.request_body(body)
        assert isinstance(d, Continue | Respond)
        if isinstance(d, Respond):
            assert 200 <= d.status < 600 and d.body
        else:
            r = ex.response_headers({":status": "200", "content-type": "text/event-stream"})
            if r.response_body_mode is not None:
                ex.response_body(body, end_of_stream=True)
    ex.close()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PATHS), requests)
def test_structured_requests_never_raise(path: str, payload: dict) -> None:
    try:
        body = orjson.dumps(payload)
    except (TypeError, orjson.JSONEncodeError):
        return  # not representable as JSON (NaN keys etc.): nothing a client could send
    run(path, body, {})


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([*PATHS, "/v1/models", "/x"]),
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(["cache-control", "x-edge-agent-cache", "content-length"]),
        st.text(max_size=10),
        max_size=3,
    ),
)
def test_arbitrary_bytes_and_headers_never_raise(path: str, body: bytes, headers: dict) -> None:
    run(path, body, headers)


@pytest.mark.parametrize("length", ["²", "١٢", "12 ", "-1", "1e3"])
def test_non_ascii_digit_content_length_is_ignored_not_fatal(length: str) -> None:
    # Found by the fuzzer in CI: str.isdigit() accepts "²", which int() rejects.
    run("/v1/chat/completions", b"{}", {"content-length": length})
    ex = AGENT.exchange()
    ex.request_headers({":method": "POST", ":path": "/v1/chat/completions"}, False)
    ex.request_body(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
    ex.response_headers(
        {":status": "200", "content-type": "application/json", "content-length": length}
    )
    ex.close()
