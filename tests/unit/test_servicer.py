"""The servicer: Exchange decisions → ext_proc protobuf, and a real gRPC round trip."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import orjson
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from edge_agent.config import parse_config
from edge_agent.extproc.decisions import BodyMode, Continue, Respond
from edge_agent.extproc.servicer import build_response, headers_to_dict
from edge_agent.runtime.service import AgentService
from tests.helpers import free_port


def test_headers_use_raw_value_and_join_repeats() -> None:
    hm = HeaderMap(
        headers=[
            HeaderValue(key=":path", raw_value=b"/v1/models"),
            HeaderValue(key="x", raw_value=b"1"),
            HeaderValue(key="x", raw_value=b"2"),
            HeaderValue(key="legacy", value="v"),
        ]
    )
    assert headers_to_dict(hm) == {":path": "/v1/models", "x": "1,2", "legacy": "v"}


def test_body_mutation_sets_content_length() -> None:
    resp = build_response(
        "request_body",
        Continue(
            set_headers=[("a", "b")], remove_headers=["c"], body=b"12345", clear_route_cache=True
        ),
    )
    common = resp.request_body.response
    assert common.body_mutation.body == b"12345"
    sets = {h.header.key: h.header.raw_value for h in common.header_mutation.set_headers}
    assert sets == {"a": b"b", "content-length": b"5"}
    assert list(common.header_mutation.remove_headers) == ["c"]
    assert common.clear_route_cache


def test_plain_continue_and_mode_override() -> None:
    resp = build_response("request_headers", Continue())
    assert resp.WhichOneof("response") == "request_headers"
    assert not resp.request_headers.HasField("response")
    resp = build_response("response_headers", Continue(response_body_mode=BodyMode.STREAMED))
    assert resp.mode_override.response_body_mode == ProcessingMode.STREAMED


def test_immediate_response() -> None:
    resp = build_response(
        "request_body", Respond(404, [("content-type", "application/json")], b"{}")
    )
    imm = resp.immediate_response
    assert imm.status.code == 404 and imm.body == b"{}"
    assert imm.headers.set_headers[0].header.raw_value == b"application/json"


def _headers(method: str, path: str) -> pb.ProcessingRequest:
    req = pb.ProcessingRequest()
    add = req.request_headers.headers.headers.add
    add(key=":method", raw_value=method.encode())
    add(key=":path", raw_value=path.encode())
    return req


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.ExternalProcessorStub]:
    config = parse_config(
        {
            "listen": {"grpc": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"},
            "providers": [{"name": "p", "type": "openai", "base_url": "http://127.0.0.1:9"}],
            "models": [{"name": "m", "targets": ["p/m"]}],
        }
    )
    service = AgentService(config)
    await service.start()
    channel = grpc.aio.insecure_channel(config.listen.grpc)
    try:
        yield pb_grpc.ExternalProcessorStub(channel)
    finally:
        await channel.close()
        await service.stop()


async def test_grpc_stream_routes_a_request(stub: pb_grpc.ExternalProcessorStub) -> None:
    body = orjson.dumps(
        {"model": "m", "temperature": 1, "messages": [{"role": "user", "content": "x"}]}
    )
    call = stub.Process()
    await call.write(_headers("POST", "/v1/chat/completions"))
    first = await call.read()
    assert first.WhichOneof("response") == "request_headers"
    req = pb.ProcessingRequest()
    req.request_body.body = body
    req.request_body.end_of_stream = True
    await call.write(req)
    second = await call.read()
    sets = {
        h.header.key: h.header.raw_value
        for h in second.request_body.response.header_mutation.set_headers
    }
    assert sets["x-edge-agent-cluster"] == b"p"
    resp_headers = pb.ProcessingRequest()
    resp_headers.response_headers.headers.headers.add(key=":status", raw_value=b"200")
    await call.write(resp_headers)
    third = await call.read()
    cache = third.response_headers.response.header_mutation.set_headers[0].header
    assert (cache.key, cache.raw_value) == ("x-edge-agent-cache", b"bypass")
    # No response body is wanted for a bypassed answer: the agent ends the stream itself,
    # without waiting for Envoy to half-close it.
    assert await asyncio.wait_for(call.code(), 5) == grpc.StatusCode.OK


async def test_stream_stays_open_while_an_answer_is_captured(
    stub: pb_grpc.ExternalProcessorStub,
) -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "capture"}]})
    call = stub.Process()
    await call.write(_headers("POST", "/v1/chat/completions"))
    await call.read()
    req = pb.ProcessingRequest()
    req.request_body.body = body
    req.request_body.end_of_stream = True
    await call.write(req)
    await call.read()
    resp_headers = pb.ProcessingRequest()
    add = resp_headers.response_headers.headers.headers.add
    add(key=":status", raw_value=b"200")
    add(key="content-type", raw_value=b"text/event-stream")
    await call.write(resp_headers)
    third = await call.read()
    assert third.mode_override.response_body_mode == ProcessingMode.STREAMED
    chunk = pb.ProcessingRequest()
    chunk.response_body.body = b"data: [DONE]\n\n"
    chunk.response_body.end_of_stream = True
    await call.write(chunk)
    fourth = await call.read()
    assert fourth.WhichOneof("response") == "response_body"
    assert await asyncio.wait_for(call.code(), 5) == grpc.StatusCode.OK


async def test_trailers_are_acknowledged(stub: pb_grpc.ExternalProcessorStub) -> None:
    call = stub.Process()
    await call.write(_headers("POST", "/v1/chat/completions"))
    await call.read()
    trailers = pb.ProcessingRequest()
    trailers.request_trailers.SetInParent()
    await call.write(trailers)
    resp = await call.read()
    assert resp.WhichOneof("response") == "request_trailers"
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK


async def test_a_bug_in_the_agent_is_a_clean_500_never_a_broken_stream(
    stub: pb_grpc.ExternalProcessorStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.extproc.exchange import Exchange

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Exchange, "request_body", boom)
    call = stub.Process()
    await call.write(_headers("POST", "/v1/chat/completions"))
    await call.read()
    req = pb.ProcessingRequest()
    req.request_body.body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}'
    req.request_body.end_of_stream = True
    await call.write(req)
    resp = await call.read()
    assert resp.immediate_response.status.code == 500
    assert b"failed to process this request" in resp.immediate_response.body
    assert await call.code() == grpc.StatusCode.OK


async def test_immediate_response_ends_the_stream(stub: pb_grpc.ExternalProcessorStub) -> None:
    call = stub.Process()
    await call.write(_headers("GET", "/v1/models"))
    resp = await call.read()
    assert resp.immediate_response.status.code == 200
    assert await call.code() == grpc.StatusCode.OK


async def test_bad_input_never_breaks_the_stream(stub: pb_grpc.ExternalProcessorStub) -> None:
    call = stub.Process()
    await call.write(_headers("POST", "/v1/embeddings"))
    await call.read()
    req = pb.ProcessingRequest()
    req.request_body.body = b"\xff\xfe not json"
    req.request_body.end_of_stream = True
    await call.write(req)
    resp = await call.read()
    assert resp.immediate_response.status.code == 400
    assert b"not valid JSON" in resp.immediate_response.body


async def test_readyz_follows_the_grpc_server() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from edge_agent.runtime.admin import build_admin_app
    from edge_agent.telemetry.metrics import Metrics

    ready = False
    app = build_admin_app(Metrics().registry, lambda: ready)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200
        ready = True
        assert (await client.get("/readyz")).status == 200
        metrics = await (await client.get("/metrics")).text()
        assert "edge_agent_ext_proc_streams 0.0" in metrics


async def test_admin_changes_need_a_token_or_loopback() -> None:
    from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

    from edge_agent.runtime.admin import PurgeRequest, build_admin_app, change_refusal
    from edge_agent.telemetry.metrics import Metrics

    purged: list[tuple[str | None, str | None, bool]] = []

    async def purge(what: PurgeRequest) -> dict[str, int]:
        purged.append((what.model, what.key, what.everything))
        return {"removed": 1}

    app = build_admin_app(Metrics().registry, lambda: True, purge=purge, admin_token="s3cret")
    async with TestClient(TestServer(app)) as client:
        assert (await client.delete("/admin/cache?all=true")).status == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.delete("/admin/cache?all=true", headers=wrong)).status == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await client.delete("/admin/cache?all=true", headers=right)).status == 200
        assert (await client.get("/metrics")).status == 200  # reading stays open
    assert purged == [(None, None, True)]

    class Peer:
        def __init__(self, host: str) -> None:
            self.host = host

        def get_extra_info(self, name: str, default: object = None) -> object:
            return (self.host, 40000) if name == "peername" else default

    def from_(host: str) -> object:
        return make_mocked_request("DELETE", "/admin/cache", transport=Peer(host))

    # Without a token: loopback only (another pod reaching the admin port is refused).
    assert change_refusal(from_("127.0.0.1"), None) is None
    assert change_refusal(from_("::1"), None) is None
    assert change_refusal(from_("::ffff:127.0.0.1"), None) is None
    # What an Istio sidecar's inbound traffic looks like: another pod, not this one.
    assert change_refusal(from_("127.0.0.6"), None) is not None
    refused = change_refusal(from_("10.1.2.3"), None)
    assert refused is not None and refused.status == 403
    assert b"admin.token_env" in refused.body


async def test_readyz_waits_for_envoy_in_the_standalone_gateway() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from edge_agent.runtime.admin import build_admin_app
    from edge_agent.telemetry.metrics import Metrics

    envoy_status = 503

    async def envoy_ready(_: web.Request) -> web.Response:
        return web.Response(status=envoy_status, text="LIVE" if envoy_status == 200 else "")

    fake_envoy = web.Application()
    fake_envoy.router.add_get("/ready", envoy_ready)
    async with TestServer(fake_envoy) as envoy:
        url = str(envoy.make_url("/ready"))
        app = build_admin_app(Metrics().registry, lambda: True, envoy_ready_url=url)
        async with TestClient(TestServer(app)) as client:
            reply = await client.get("/readyz")
            assert reply.status == 503
            assert "Envoy is not ready" in (await reply.json())["reason"]
            envoy_status = 200
            assert (await client.get("/readyz")).status == 200
        await envoy.close()
        # Envoy gone: not ready, and the probe still answers quickly.
        app = build_admin_app(Metrics().registry, lambda: True, envoy_ready_url=url)
        async with TestClient(TestServer(app)) as client:
            reply = await client.get("/readyz")
            assert reply.status == 503
