"""Real Envoy + the agent (`edge-agent run`) + fake providers speaking OpenAI's wire format."""

from __future__ import annotations

import contextlib

import orjson
import pytest

from edge_agent.api.sse import SSEParser
from edge_agent.demo.upstream import FakeOpenAI
from tests.conftest import CLIENT_KEY, PROVIDER_KEYS
from tests.helpers import Gateway, http, metric_value, post_json

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def chat(gateway: Gateway, content: str, **extra: object) -> object:
    payload = {"model": "gpt-alpha", "messages": [{"role": "user", "content": content}], **extra}
    return post_json(f"{gateway.url}/v1/chat/completions", payload, AUTH)


def raw_exchange(url: str, head: bytes, size: int, chunked: bool) -> tuple[int, bytes]:
    """Send a large body over a raw socket and read the answer that may come early.

    A server may answer (and close) before the body is complete; HTTP clients that
    insist on sending everything first would only see a connection reset.
    """
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        piece = b"x" * (256 << 10)
        with contextlib.suppress(OSError):
            sent = 0
            while sent < size:
                data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                sock.sendall(data)
                sent += len(piece)
        received = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in received or not _complete(received):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    head_part, _, body = received.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1]) if head_part else 0
    return status, body


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def sse_data(body: bytes) -> list[str]:
    return [e.data for e in SSEParser().feed(body)]


def test_routes_with_provider_key_and_rewrites_model(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    reply = chat(gateway, unique)
    assert reply.status == 200, reply.body
    assert reply.headers["x-edge-agent-cache"] == "miss"
    [seen] = fresh["alpha"].requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {PROVIDER_KEYS['ALPHA_KEY']}"
    assert CLIENT_KEY not in orjson.dumps(seen.headers).decode()
    assert seen.json()["model"] == "alpha-chat"  # the provider's own name
    assert "x-edge-agent-cluster" not in reply.headers
    assert "x-edge-agent-cluster" not in seen.headers  # nor for the provider
    assert unique in reply.json()["choices"][0]["message"]["content"]
    assert not fresh["beta"].requests


def test_client_cannot_pick_the_cluster(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    payload = {"model": "gpt-alpha", "messages": [{"role": "user", "content": unique}]}
    spoofed = {"x-edge-agent-cluster": "beta", "x-edge-agent-cache": "bypass"}
    assert post_json(f"{gateway.url}/v1/chat/completions", payload, spoofed).status == 200
    assert len(fresh["alpha"].requests) == 1 and not fresh["beta"].requests


def test_base_url_with_v1_is_not_doubled(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    payload = {"model": "beta-chat", "messages": [{"role": "user", "content": unique}]}
    reply = post_json(f"{gateway.url}/v1/chat/completions", payload, AUTH)
    assert reply.status == 200, reply.body
    [seen] = fresh["beta"].requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {PROVIDER_KEYS['BETA_KEY']}"


def test_identical_repeat_is_a_hit_and_never_reaches_the_provider(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    first = chat(gateway, unique)
    second = chat(gateway, unique)
    assert first.headers["x-edge-agent-cache"] == "miss"
    assert second.headers["x-edge-agent-cache"] == "hit"
    assert second.json() == first.json()
    assert len(fresh["alpha"].requests) == 1


def test_streamed_miss_is_stored_and_serves_json_and_stream(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    streamed = chat(gateway, unique, stream=True, stream_options={"include_usage": True})
    assert streamed.status == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-edge-agent-cache"] == "miss"
    events = sse_data(streamed.body)
    assert events[-1] == "[DONE]"
    text = "".join(
        c["delta"].get("content") or "" for e in events[:-1] for c in orjson.loads(e)["choices"]
    )

    as_json = chat(gateway, unique)
    assert as_json.headers["x-edge-agent-cache"] == "hit"
    assert as_json.json()["choices"][0]["message"]["content"] == text
    assert as_json.json()["usage"]["total_tokens"] > 0

    again = chat(gateway, unique, stream=True)
    assert again.headers["x-edge-agent-cache"] == "hit"
    assert again.headers["content-type"].startswith("text/event-stream")
    replayed = sse_data(again.body)
    assert replayed[-1] == "[DONE]"
    assert (
        "".join(
            c["delta"].get("content") or ""
            for e in replayed[:-1]
            for c in orjson.loads(e)["choices"]
        )
        == text
    )
    assert len(fresh["alpha"].requests) == 1


def test_nonzero_temperature_and_bypass_are_not_cached(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    for _ in range(2):
        reply = chat(gateway, unique, temperature=0.7)
        assert reply.headers["x-edge-agent-cache"] == "bypass"
    bypass = {**AUTH, "x-edge-agent-cache": "bypass"}
    payload = {"model": "gpt-alpha", "messages": [{"role": "user", "content": unique}]}
    for _ in range(2):
        reply = post_json(f"{gateway.url}/v1/chat/completions", payload, bypass)
        assert reply.headers["x-edge-agent-cache"] == "bypass"
    assert len(fresh["alpha"].requests) == 4


def test_errors_are_never_cached(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    fresh["alpha"].fail_next(500)
    failed = chat(gateway, unique)
    assert failed.status == 500
    assert failed.headers["x-edge-agent-cache"] == "miss"
    # A 200 whose body is an error object is captured, inspected and refused.
    fresh["alpha"].fail_next(200, body=b'{"error": {"message": "overloaded", "type": "x"}}')
    odd = chat(gateway, unique)
    assert odd.status == 200 and "error" in odd.json()
    ok = chat(gateway, unique)
    assert ok.status == 200 and ok.headers["x-edge-agent-cache"] == "miss"
    assert chat(gateway, unique).headers["x-edge-agent-cache"] == "hit"
    assert len(fresh["alpha"].requests) == 3


def test_incomplete_stream_is_never_cached(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    fresh["alpha"].truncate_streams = 1
    cut = chat(gateway, unique, stream=True)
    assert cut.status == 200 and b"[DONE]" not in cut.body
    again = chat(gateway, unique, stream=True)
    assert again.headers["x-edge-agent-cache"] == "miss"
    assert b"[DONE]" in again.body
    assert chat(gateway, unique).headers["x-edge-agent-cache"] == "hit"
    assert len(fresh["alpha"].requests) == 2


def test_provider_sees_identity_encoding_and_no_client_account_headers(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    extra = {
        **AUTH,
        "accept-encoding": "gzip, deflate",
        "openai-organization": "org-client",
        "openai-project": "proj-client",
        "cookie": "session=client",
    }
    payload = {"model": "gpt-alpha", "messages": [{"role": "user", "content": unique}]}
    assert post_json(f"{gateway.url}/v1/chat/completions", payload, extra).status == 200
    [seen] = fresh["alpha"].requests
    assert seen.headers["accept-encoding"] == "identity"
    for name in ("openai-organization", "openai-project", "cookie"):
        assert name not in seen.headers


def test_round_robin_over_two_targets(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    for i in range(4):
        payload = {"model": "both", "messages": [{"role": "user", "content": f"{unique}-{i}"}]}
        assert post_json(f"{gateway.url}/v1/chat/completions", payload).status == 200
    assert len(fresh["alpha"].requests) == 2
    assert len(fresh["beta"].requests) == 2


def test_embeddings_and_completions_are_cached(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    emb = {"model": "embed", "input": [unique, "second"]}
    first = post_json(f"{gateway.url}/v1/embeddings", emb)
    assert first.status == 200 and first.headers["x-edge-agent-cache"] == "miss"
    second = post_json(f"{gateway.url}/v1/embeddings", emb)
    assert second.headers["x-edge-agent-cache"] == "hit"
    assert second.json()["data"] == first.json()["data"]

    comp = {"model": "instruct", "prompt": unique, "max_tokens": 5}
    assert post_json(f"{gateway.url}/v1/completions", comp).headers["x-edge-agent-cache"] == "miss"
    assert post_json(f"{gateway.url}/v1/completions", comp).headers["x-edge-agent-cache"] == "hit"
    assert [r.path for r in fresh["alpha"].requests] == ["/v1/embeddings", "/v1/completions"]


@pytest.mark.parametrize(
    ("body", "status", "needle", "param"),
    [
        (b'{"model": "gpt-alpha", "messages": [', 400, "not valid JSON", None),
        (b'{"model": "gpt-alpha", "messages": "hi"}', 400, "'messages'", "messages"),
        (
            b'{"model": "gpt-alpha", "messages": [{"role": "user", "content": 5}]}',
            400,
            "messages[0].content",
            "messages[0].content",
        ),
        (b'{"model": "gpt-alpha", "messages": []}', 400, "messages", "messages"),
        (
            b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "no-such-model",
            "model",
        ),
    ],
)
def test_bad_input_gets_openai_style_errors(
    gateway: Gateway,
    fresh: dict[str, FakeOpenAI],
    body: bytes,
    status: int,
    needle: str,
    param: str | None,
) -> None:
    reply = http(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        body,
        {"content-type": "application/json"},
    )
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert needle in error["message"]
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}
    assert not fresh["alpha"].requests


def test_unknown_path_and_wrong_method(gateway: Gateway) -> None:
    reply = http("GET", f"{gateway.url}/v1/nope")
    assert reply.status == 404 and "/v1/nope" in reply.json()["error"]["message"]
    reply = http("GET", f"{gateway.url}/v1/chat/completions")
    assert reply.status == 405
    assert reply.json()["error"]["message"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_gets_openai_style_413(
    gateway: Gateway, fresh: dict[str, FakeOpenAI], chunked: bool
) -> None:
    size = 9 << 20  # over the default envoy.max_request_bytes (8 MiB)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + ("transfer-encoding: chunked\r\n" if chunked else f"content-length: {size}\r\n")
        + "\r\n"
    ).encode()
    status, body = raw_exchange(gateway.url, head, size, chunked)
    assert status == 413, body
    error = orjson.loads(body)["error"]
    assert error["code"] == "request_too_large"
    assert "limit" in error["message"]
    assert not fresh["alpha"].requests


def test_models_list_comes_from_the_config(gateway: Gateway, fresh: dict[str, FakeOpenAI]) -> None:
    reply = http("GET", f"{gateway.url}/v1/models")
    assert reply.status == 200
    ids = [m["id"] for m in reply.json()["data"]]
    assert ids == ["gpt-alpha", "beta-chat", "both", "embed", "instruct"]
    assert not fresh["alpha"].requests and not fresh["beta"].requests


def test_admin_endpoints_and_metrics(gateway: Gateway, unique: str) -> None:
    assert http("GET", f"{gateway.admin_url}/healthz").status == 200
    assert http("GET", f"{gateway.admin_url}/readyz").status == 200
    before = gateway.metrics()
    chat(gateway, unique)
    chat(gateway, unique)
    after = gateway.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("edge_agent_requests_total", model="gpt-alpha", status="200") == 2
    assert delta("edge_agent_cache_results_total", result="hit") == 1
    assert delta("edge_agent_cache_results_total", result="miss") == 1
    assert delta("edge_agent_upstream_latency_seconds_count", provider="alpha") == 1
    assert delta("edge_agent_ext_proc_phase_seconds_count", phase="request_body") == 2
