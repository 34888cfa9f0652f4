"""What a hostile client or an unlucky operator found, fixed at the root; through real Envoy.

One gateway with tight client timeouts and two providers with different `timeout_s`.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from edge_agent.demo.upstream import FakeOpenAI
from tests.conftest import PROVIDER_KEYS, two_provider_config
from tests.helpers import Gateway, Reply, http, post_json, running_gateway

SHORT_S = 1.0  # alpha's timeout_s
LONG_S = 30.0  # beta's: the largest, which the one shared route used to apply to all


@pytest.fixture(scope="module")
def edge(
    providers: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = two_provider_config(
        providers,
        envoy={
            "request_headers_timeout_s": 1.0,
            "request_timeout_s": 4.0,
            "idle_timeout_s": 1.0,
            "message_timeout_ms": 500,
        },
    )
    config["cache"]["coalesce"] = {"max_wait_s": 0.5}
    config["providers"][0]["timeout_s"] = SHORT_S
    config["providers"][1]["timeout_s"] = LONG_S
    with running_gateway(tmp_path_factory.mktemp("edge"), config, dict(PROVIDER_KEYS)) as gw:
        yield gw


def chat(gw: Gateway, content: str, model: str = "gpt-alpha", **headers: str) -> Reply:
    payload = {"model": model, "messages": [{"role": "user", "content": content}]}
    return post_json(f"{gw.url}/v1/chat/completions", payload, headers)


def error_of(reply: Reply) -> dict:
    assert reply.headers["content-type"].startswith("application/json"), reply
    return orjson.loads(reply.body)["error"]


def raw(gw: Gateway, data: bytes, slowly: bytes = b"", *, pace_s: float = 0.25) -> bytes:
    """Send `data` over one connection, then `slowly` one line or byte every `pace_s` (a
    slow client), and return everything the gateway answers until it closes."""
    host, port = gw.url.removeprefix("http://").split(":")
    received = b""
    pieces = slowly.splitlines(keepends=True) if b"\r\n" in slowly else list(slowly)
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            for piece in pieces:
                sock.sendall(piece if isinstance(piece, bytes) else bytes([piece]))
                time.sleep(pace_s)
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    received += sock.recv(65536)  # an early answer: the cut-off
                sock.setblocking(True)
                if received:
                    break
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
    return received


def status_and_body(received: bytes) -> tuple[int, bytes]:
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# ---- 1. everything forwarded that can change the answer is in the cache key -------------


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("?api-version=2099-01-01", {}),
        ("", {"anthropic-beta": "output-128k-2025-02-19"}),
        ("", {"openai-beta": "assistants=v2"}),
    ],
)
def test_query_and_beta_headers_are_part_of_the_cache_key(
    edge: Gateway, fresh: dict[str, FakeOpenAI], unique: str, query: str, headers: dict
) -> None:
    payload = {"model": "gpt-alpha", "messages": [{"role": "user", "content": unique}]}
    url = f"{edge.url}/v1/chat/completions"
    assert post_json(url, payload).headers["x-edge-agent-cache"] == "miss"
    varied = post_json(url + query, payload, headers)
    assert varied.status == 200 and varied.headers["x-edge-agent-cache"] == "miss"
    seen = fresh["alpha"].requests[-1]
    assert seen.path + (f"?{seen.query}" if seen.query else "") == "/v1/chat/completions" + query
    for name, value in headers.items():
        assert seen.headers[name] == value  # forwarded: so it must be keyed
    assert post_json(url + query, payload, headers).headers["x-edge-agent-cache"] == "hit"
    assert post_json(url, payload).headers["x-edge-agent-cache"] == "hit"
    assert len(fresh["alpha"].requests) == 2


# ---- 2. slow and silent clients are cut off ----------------------------------------------


def test_headers_sent_a_line_at_a_time_are_cut_off(edge: Gateway) -> None:
    lines = [b"POST /v1/chat/completions HTTP/1.1\r\n", b"host: x\r\n"]
    lines += [b"x-pad-%d: 1\r\n" % i for i in range(30)]
    received = raw(edge, b"", b"".join(lines) + b"\r\n")
    status, body = status_and_body(received)
    assert status == 408
    assert orjson.loads(body)["error"]["code"] == "gateway_refused"


def test_a_body_sent_a_byte_at_a_time_is_cut_off(edge: Gateway) -> None:
    body = orjson.dumps({"model": "gpt-alpha", "messages": [{"role": "user", "content": "x"}]})
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    received = raw(edge, head, body)  # ~80 bytes at 4 a second: 20 s, cut at 4 s
    status, answer = status_and_body(received)
    assert status == 408
    assert orjson.loads(answer)["error"]["code"] == "gateway_refused"


def test_a_silent_connection_is_closed(edge: Gateway) -> None:
    host, port = edge.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        assert sock.recv(1) == b""  # closed by the gateway (idle_timeout_s), not our timeout


def test_client_cannot_set_envoys_timeouts_or_retries(
    edge: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    fresh["alpha"].delay_s = 0.3
    try:
        reply = chat(edge, unique, **{"x-envoy-upstream-rq-timeout-ms": "1"})
    finally:
        fresh["alpha"].delay_s = 0
    assert reply.status == 200, reply.body
    fresh["alpha"].fail_next(500, count=5)
    retried = chat(
        edge,
        unique + "-retry",
        **{"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "4"},
    )
    assert retried.status == 500
    assert len(fresh["alpha"].requests) == 2  # one each: no retries bought by the client
    seen = fresh["alpha"].requests[-1].headers
    # The client's address is not passed on. What Envoy's router adds is: the deadline the
    # provider has (its own timeout_s), and the Host the client addressed the gateway by.
    envoy = {n: v for n, v in seen.items() if n.startswith("x-envoy-")}
    assert envoy.pop("x-envoy-expected-rq-timeout-ms") == str(int(SHORT_S * 1000))
    assert envoy.pop("x-envoy-original-host", "").startswith("127.0.0.1")
    assert envoy == {}


# ---- 3. each provider's own timeout -------------------------------------------------------


def test_a_provider_answers_within_its_own_timeout_not_the_largest(
    edge: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    fresh["alpha"].delay_s = 12.0  # far past alpha's 1 s, well inside beta's 30 s
    try:
        # http() gives up after 10 s: with the largest timeout this would never answer.
        reply = chat(edge, unique)
    finally:
        fresh["alpha"].delay_s = 0
    assert reply.status == 504
    error = error_of(reply)
    assert error["code"] == "upstream_error" and "alpha" in error["message"]
    fresh["beta"].delay_s = 2.0  # past alpha's timeout: beta's own (30 s) applies
    try:
        slow = chat(edge, unique, model="beta-chat")
    finally:
        fresh["beta"].delay_s = 0
    assert slow.status == 200, slow.body


# ---- 4. malformed content, and errors always in the client's schema -----------------------


def test_malformed_content_part_is_refused_before_the_provider(
    edge: Gateway, fresh: dict[str, FakeOpenAI]
) -> None:
    payload = {
        "model": "gpt-alpha",
        "messages": [{"role": "user", "content": [{"type": "text", "text": 0}]}],
    }
    reply = post_json(f"{edge.url}/v1/chat/completions", payload)
    assert reply.status == 400
    assert error_of(reply)["param"] == "messages[0].content[0].text"
    assert not fresh["alpha"].requests


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, b"Internal Server Error", "text/plain"),
        (502, b"<html><h1>502 Bad Gateway</h1></html>", "text/html"),
        (422, b'{"detail": "Input should be a valid string"}', "application/json"),
    ],
)
def test_provider_errors_outside_the_schema_are_wrapped_keeping_the_status(
    edge: Gateway,
    fresh: dict[str, FakeOpenAI],
    unique: str,
    status: int,
    body: bytes,
    content_type: str,
) -> None:
    fresh["alpha"].fail_next(status, body=body, headers={"content-type": content_type})
    reply = chat(edge, unique)
    assert reply.status == status
    error = error_of(reply)
    assert error["code"] == "upstream_error"
    assert error["type"] == ("api_error" if status >= 500 else "invalid_request_error")
    said = body.decode().removeprefix('{"detail": "').removesuffix('"}')
    assert said.replace("<html><h1>", "").replace("</h1></html>", "") in error["message"]


def test_provider_errors_in_the_schema_pass_as_they_are(
    edge: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    error = {"message": "Rate limit reached", "type": "requests", "param": None, "code": None}
    fresh["alpha"].fail_next(429, body={"error": error}, headers={"retry-after": "1"})
    reply = chat(edge, unique)
    assert reply.status == 429 and reply.headers.get("retry-after") == "1"
    assert error_of(reply) == error  # untouched


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # Headers over Envoy's 60 KiB limit.
        (b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        # An encoded "/" in the path.
        (b"GET /v1%2Fmodels HTTP/1.1\r\nhost: x\r\n\r\n", 400),
        # A WebSocket upgrade the gateway does not offer.
        (
            b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\n"
            b"upgrade: websocket\r\n\r\n",
            403,
        ),
        # A header name with an underscore (providers may read it as a dash).
        (b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx_api_key: k\r\n\r\n", 400),
        # Not HTTP at all.
        (b"GARBAGE\r\n\r\n", 400),
    ],
)
def test_envoys_own_replies_have_the_openai_error_shape(
    edge: Gateway, request_bytes: bytes, status: int
) -> None:
    got, body = status_and_body(raw(edge, request_bytes))
    assert got == status, body
    error = orjson.loads(body)["error"]
    assert error["code"] == "gateway_refused" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("The gateway refused the request")


def test_the_agents_own_answers_keep_their_bodies(edge: Gateway) -> None:
    models = http("GET", f"{edge.url}/v1/models")
    assert models.status == 200 and models.json()["object"] == "list"
    refused = post_json(f"{edge.url}/v1/chat/completions", {"model": "nope", "messages": []})
    assert refused.status in (400, 404) and error_of(refused)["code"] != "gateway_refused"


# ---- 5. routing overrides are refused before the cache answers -----------------------------


def test_routing_override_on_a_cached_request_is_refused(
    edge: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    assert chat(edge, unique).headers["x-edge-agent-cache"] == "miss"
    assert chat(edge, unique).headers["x-edge-agent-cache"] == "hit"
    refused = chat(edge, unique, **{"x-edge-agent-pin": "beta"})
    assert refused.status == 400
    assert error_of(refused)["code"] == "routing_override_disabled"
