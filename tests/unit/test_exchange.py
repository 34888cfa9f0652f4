"""The sans-IO core: one request's decisions, phase by phase, without gRPC or Envoy."""

from __future__ import annotations

import orjson
import pytest

from edge_agent.agent import Agent
from edge_agent.api.sse import SSEParser
from edge_agent.config import ConfigError, parse_config
from edge_agent.extproc.decisions import BodyMode, Continue, Respond
from edge_agent.extproc.exchange import Exchange
from tests.helpers import chat_completion

ENV = {"KEY_A": "sk-a"}


def make_agent(**cache: object) -> Agent:
    config = parse_config(
        {
            "providers": [
                {
                    "name": "a",
                    "type": "openai",
                    "base_url": "http://127.0.0.1:1/api",
                    "api_key_env": "KEY_A",
                },
                {
                    "name": "nokey",
                    "type": "openai",
                    "base_url": "http://127.0.0.1:2",
                    "api_key_env": "UNSET_KEY",
                },
            ],
            "models": [
                {"name": "m", "targets": ["a/provider-m"]},
                {"name": "same", "targets": ["a/same"]},
                {"name": "orphan", "targets": ["nokey/x"]},
            ],
            # These tests are about the exact tier; test_exchange_semantic.py covers the other.
            "cache": {"semantic": {"enabled": False}, **cache},
        }
    )
    return Agent(config, environ=ENV)


def headers(path: str = "/v1/chat/completions", method: str = "POST", **extra: str) -> dict:
    return {":method": method, ":path": path, "content-type": "application/json", **extra}


def chat_body(content: str = "hi", **extra: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": content}], **extra})


def send(agent: Agent, body: bytes, **hdrs: str) -> tuple[Exchange, Continue | Respond]:
    ex = agent.exchange()
    first = ex.request_headers(headers(**hdrs), end_of_stream=False)
    assert isinstance(first, Continue)
    return ex, ex.request_body(body)


def answer(ex: Exchange, body: bytes, content_type: str = "application/json") -> None:
    decision = ex.response_headers(
        {":status": "200", "content-type": content_type, "content-length": str(len(body))}
    )
    assert decision.response_body_mode is BodyMode.BUFFERED
    ex.response_body(body, end_of_stream=True)
    ex.close()


COMPLETION = chat_completion("hello")


def stream_body(done: bool = True) -> bytes:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    out = b""
    for c in chunks:
        c.update({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "pm"})
        out += b"data: " + orjson.dumps(c) + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def test_miss_routes_rewrites_and_injects_credentials() -> None:
    _, d = send(make_agent(), chat_body(), authorization="Bearer client")
    assert isinstance(d, Continue)
    hdrs = dict(d.set_headers)
    assert hdrs["x-edge-agent-cluster"] == "a"
    assert hdrs[":path"] == "/api/chat/completions"  # base_url as the SDK takes it
    assert hdrs["authorization"] == "Bearer sk-a"
    assert "x-api-key" in d.remove_headers and "authorization" not in d.remove_headers
    assert d.clear_route_cache
    assert d.body is not None and orjson.loads(d.body)["model"] == "provider-m"


def test_body_left_alone_when_model_names_match() -> None:
    _, d = send(make_agent(), chat_body().replace(b'"m"', b'"same"'))
    assert isinstance(d, Continue) and d.body is None


def test_repeat_is_answered_from_cache_as_json_and_sse() -> None:
    agent = make_agent()
    ex, _ = send(agent, chat_body())
    answer(ex, COMPLETION)
    _, hit = send(agent, chat_body())
    assert isinstance(hit, Respond) and hit.status == 200
    assert dict(hit.headers)["x-edge-agent-cache"] == "hit"
    assert hit.body == COMPLETION
    _, streamed = send(agent, chat_body(stream=True))
    assert isinstance(streamed, Respond)
    assert dict(streamed.headers)["content-type"] == "text/event-stream"
    events = [e.data for e in SSEParser().feed(streamed.body)]
    assert events[-1] == "[DONE]"


def test_streamed_miss_is_assembled_and_stored() -> None:
    agent = make_agent()
    ex, _ = send(agent, chat_body(stream=True))
    d = ex.response_headers({":status": "200", "content-type": "text/event-stream"})
    assert d.response_body_mode is BodyMode.STREAMED
    body = stream_body()
    for i in range(0, len(body), 7):  # arbitrary chunk boundaries
        ex.response_body(body[i : i + 7], end_of_stream=False)
    ex.response_body(b"", end_of_stream=True)
    _, hit = send(agent, chat_body())
    assert isinstance(hit, Respond)
    assert orjson.loads(hit.body)["choices"][0]["message"]["content"] == "hello"


def test_incomplete_stream_and_errors_are_not_stored() -> None:
    agent = make_agent()
    ex, _ = send(agent, chat_body(stream=True))
    ex.response_headers({":status": "200", "content-type": "text/event-stream"})
    ex.response_body(stream_body(done=False), end_of_stream=True)
    assert isinstance(send(agent, chat_body())[1], Continue)

    ex, _ = send(agent, chat_body("other"))
    d = ex.response_headers({":status": "500", "content-type": "application/json"})
    assert d.response_body_mode is BodyMode.BUFFERED  # read only to check its schema
    error = b'{"error": {"message": "boom", "type": "server_error"}}'
    assert ex.response_body(error, end_of_stream=True).body is None  # passed as it is
    assert isinstance(send(agent, chat_body("other"))[1], Continue)

    ex, _ = send(agent, chat_body("third"))
    answer(ex, b'{"error": {"message": "boom"}}')
    assert isinstance(send(agent, chat_body("third"))[1], Continue)


def test_chunked_json_is_captured_and_size_bounded() -> None:
    agent = make_agent(exact={"max_entry_bytes": 2048})
    ex, _ = send(agent, chat_body())
    d = ex.response_headers({":status": "200", "content-type": "application/json"})
    assert d.response_body_mode is BodyMode.STREAMED
    ex.response_body(COMPLETION[:10], end_of_stream=False)
    ex.response_body(COMPLETION[10:], end_of_stream=True)
    assert isinstance(send(agent, chat_body())[1], Respond)

    big = orjson.dumps({**orjson.loads(COMPLETION), "pad": "x" * 4096})
    ex, _ = send(agent, chat_body("big"))
    ex.response_headers({":status": "200", "content-type": "application/json"})
    ex.response_body(big, end_of_stream=True)
    assert isinstance(send(agent, chat_body("big"))[1], Continue)


@pytest.mark.parametrize(
    ("extra", "hdrs", "result"),
    [
        ({"temperature": 0.5}, {}, "bypass"),
        ({"n": 2}, {}, "bypass"),
        ({}, {"cache-control": "no-store"}, "bypass"),
        ({}, {"x-edge-agent-cache": "bypass"}, "bypass"),
        ({"temperature": 0}, {}, "miss"),
    ],
)
def test_cache_status_header(extra: dict, hdrs: dict, result: str) -> None:
    ex, _ = send(make_agent(), chat_body(**extra), **hdrs)
    d = ex.response_headers({":status": "200", "content-type": "application/json"})
    assert dict(d.set_headers)["x-edge-agent-cache"] == result


def test_disabled_cache_never_hits() -> None:
    agent = make_agent(exact={"enabled": False})
    ex, _ = send(agent, chat_body())
    ex.response_headers({":status": "200", "content-type": "application/json"})
    assert isinstance(send(agent, chat_body())[1], Continue)


def test_early_refusals() -> None:
    agent = make_agent()
    ex = agent.exchange()
    d = ex.request_headers(headers("/v1/unknown"), end_of_stream=False)
    assert isinstance(d, Respond) and d.status == 404
    d = agent.exchange().request_headers(headers(method="GET"), end_of_stream=True)
    assert isinstance(d, Respond) and d.status == 405
    d = agent.exchange().request_headers(headers(), end_of_stream=True)
    assert isinstance(d, Respond) and d.status == 400
    big = headers(**{"content-length": str(100 << 20)})
    d = agent.exchange().request_headers(big, end_of_stream=False)
    assert isinstance(d, Respond) and d.status == 413
    d = agent.exchange().request_headers(headers("/v1/models?x=1", "GET"), end_of_stream=True)
    assert isinstance(d, Respond) and d.status == 200
    assert [m["id"] for m in orjson.loads(d.body)["data"]] == ["m", "same", "orphan"]


def test_unknown_model_and_missing_credential() -> None:
    agent = make_agent()
    _, d = send(agent, chat_body().replace(b'"m"', b'"nope"'))
    assert isinstance(d, Respond) and d.status == 404
    assert b"nope" in d.body
    _, d = send(agent, chat_body().replace(b'"m"', b'"orphan"'))
    assert isinstance(d, Respond) and d.status == 503
    assert b"UNSET_KEY" in d.body


def test_metrics_count_each_request_once() -> None:
    agent = make_agent()
    ex, _ = send(agent, chat_body())
    answer(ex, COMPLETION)
    ex.close()
    send(agent, chat_body())[0].close()
    aborted = agent.exchange()
    aborted.close()
    samples = {
        (s.labels["provider"], s.labels["status"]): s.value
        for s in agent.metrics.requests.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert samples == {("a", "200"): 1.0, ("-", "200"): 1.0, ("-", "aborted"): 1.0}


def test_unreplayable_entry_is_dropped_and_treated_as_a_miss() -> None:
    agent = make_agent()
    ex, _ = send(agent, chat_body())
    answer(ex, COMPLETION)
    assert agent.cache is not None and ex.key is not None
    agent.cache.put(ex.key, b'{"choices": "not a list"}')  # corrupt the entry
    ex2, d = send(agent, chat_body(stream=True))
    assert isinstance(d, Continue) and ex2.cache_result == "miss"
    assert agent.cache.get(ex.key) is None


def test_405_carries_allow_header() -> None:
    d = make_agent().exchange().request_headers(headers(method="GET"), end_of_stream=True)
    assert isinstance(d, Respond) and d.status == 405
    assert dict(d.headers)["allow"] == "POST"


def test_client_only_headers_are_removed_and_provider_only_headers_dropped() -> None:
    _, d = send(make_agent(), chat_body())
    assert isinstance(d, Continue)
    for name in ("openai-organization", "openai-project", "cookie", "x-api-key"):
        assert name in d.remove_headers
    ex, _ = send(make_agent(), chat_body())
    resp = ex.response_headers({":status": "200", "content-type": "application/json"})
    assert {"set-cookie", "openai-organization"} <= set(resp.remove_headers)


def test_cacheable_requests_ask_for_identity_and_skip_encoded_answers() -> None:
    agent = make_agent()
    ex, d = send(agent, chat_body())
    assert isinstance(d, Continue) and ("accept-encoding", "identity") in d.set_headers
    resp = ex.response_headers(
        {":status": "200", "content-type": "application/json", "content-encoding": "gzip"}
    )
    assert resp.response_body_mode is None and ex.done
    _, bypass = send(agent, chat_body(temperature=1))
    assert isinstance(bypass, Continue)
    assert all(name != "accept-encoding" for name, _ in bypass.set_headers)


def test_query_string_reaches_the_provider() -> None:
    _, d = send(make_agent(), chat_body(), **{":path": "/v1/chat/completions?trace=1"})
    assert isinstance(d, Continue)
    assert dict(d.set_headers)[":path"] == "/api/chat/completions?trace=1"


def test_too_deep_json_is_a_400_not_a_crash() -> None:
    # orjson parses this (depth < 1024) but cannot write it back (depth > 254).
    deep = b"[" * 300 + b'"x"' + b"]" * 300
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "extra": '
    _, d = send(make_agent(), body + deep + b"}")
    assert isinstance(d, Respond) and d.status == 400
    assert b"too deeply" in d.body


def test_partial_body_is_a_clear_configuration_error() -> None:
    ex = make_agent().exchange()
    ex.request_headers(headers(), end_of_stream=False)
    d = ex.request_body(b'{"model"', end_of_stream=False)
    assert isinstance(d, Respond) and d.status == 500
    assert b"BUFFERED" in d.body


def test_abandoned_capture_ends_the_exchange() -> None:
    agent = make_agent(exact={"max_entry_bytes": 1024})
    ex, _ = send(agent, chat_body(stream=True))
    ex.response_headers({":status": "200", "content-type": "text/event-stream"})
    ex.response_body(b"data: " + b"x" * 2000 + b"\n\n", end_of_stream=False)
    assert ex.done


@pytest.mark.parametrize(
    "variant",
    [
        {":path": "/v1/chat/completions?api-version=2099-01-01"},
        {"anthropic-beta": "output-128k-2025-02-19"},
        {"openai-beta": "assistants=v2"},
    ],
)
def test_forwarded_query_and_beta_headers_are_part_of_the_key(variant: dict) -> None:
    agent = make_agent()
    ex, _ = send(agent, chat_body())
    answer(ex, COMPLETION)
    _, other = send(agent, chat_body(), **variant)
    assert isinstance(other, Continue), "served the answer stored without it"
    _, same = send(agent, chat_body())
    assert isinstance(same, Respond) and dict(same.headers)["x-edge-agent-cache"] == "hit"


def test_configured_vary_header_is_part_of_the_key() -> None:
    agent = make_agent(vary_headers=["X-Vllm-Lora"])
    ex, _ = send(agent, chat_body(), **{"x-vllm-lora": "a"})
    answer(ex, COMPLETION)
    _, other = send(agent, chat_body(), **{"x-vllm-lora": "b"})
    assert isinstance(other, Continue)
    _, same = send(agent, chat_body(), **{"x-vllm-lora": "a"})
    assert isinstance(same, Respond)


def test_vary_headers_that_are_never_forwarded_are_refused() -> None:
    with pytest.raises(ConfigError, match="never forwarded"):
        make_agent(vary_headers=["Authorization"])


def test_routing_override_is_refused_before_the_cache_answers() -> None:
    agent = make_agent()
    ex, _ = send(agent, chat_body())
    answer(ex, COMPLETION)
    for name in ("x-edge-agent-pin", "x-edge-agent-exclude"):
        _, refused = send(agent, chat_body(), **{name: "a"})
        assert isinstance(refused, Respond) and refused.status == 400, name
        assert b"routing_override_disabled" in refused.body


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        (b"Internal Server Error", "text/plain", "Internal Server Error"),
        (b"<html><body><h1>502 Bad Gateway</h1>\n</body></html>", "text/html", "502 Bad Gateway"),
        (b'{"detail": "Model not loaded"}', "application/json", "Model not loaded"),
        (b"", "", "an error"),
    ],
)
def test_provider_errors_outside_the_schema_are_wrapped_keeping_the_status(
    body: bytes, content_type: str, said: str
) -> None:
    ex, _ = send(make_agent(), chat_body())
    hdrs = {":status": "500", "content-length": str(len(body))}
    if content_type:
        hdrs["content-type"] = content_type
    assert ex.response_headers(hdrs).response_body_mode is BodyMode.BUFFERED
    d = ex.response_body(body, end_of_stream=True)
    assert d.body is not None
    error = orjson.loads(d.body)["error"]
    assert said in error["message"] and error["type"] == "api_error"
    assert error["code"] == "upstream_error"
    assert dict(d.set_headers) == {"content-type": "application/json"}  # status kept: 500


def test_provider_errors_are_wrapped_in_the_anthropic_schema_for_its_clients() -> None:
    body = orjson.dumps(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    )
    ex, _ = send(make_agent(), body, **{":path": "/v1/messages"})
    ex.response_headers({":status": "429", "content-type": "text/plain"})
    d = ex.response_body(b"slow down", end_of_stream=True)
    assert orjson.loads(d.body) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "The provider answered: slow down"},
    }
