"""What Envoy does when the agent is unreachable (failure_mode), and process supervision."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import parse_config
from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from edge_agent.envoy.bootstrap import build_bootstrap
from edge_agent.envoy.process import EnvoyProcess
from tests.helpers import Gateway, listen_block, post_json, write_config

CHAT = {"model": "open", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def keyless() -> Iterator[FakeOpenAI]:
    with FakeOpenAIThread(name="keyless") as fake:
        yield fake


def config_for(fake: FakeOpenAI, **envoy: object) -> dict:
    return {
        "listen": listen_block(),
        "providers": [{"name": "keyless", "type": "openai_compatible", "base_url": fake.url}],
        "models": [{"name": "open", "targets": ["keyless/m"]}],
        "envoy": envoy,
    }


@contextlib.contextmanager
def envoy_alone(config: dict) -> Iterator[str]:
    """Envoy from the generated bootstrap with no agent on its gRPC port; yields its URL."""
    cfg = parse_config(config)
    proc = EnvoyProcess(build_bootstrap(cfg), admin=cfg.listen.addr("envoy_admin"))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(proc.start())
        loop.run_until_complete(proc.wait_ready())
        yield f"http://{cfg.listen.envoy}/v1/chat/completions"
    finally:
        loop.run_until_complete(proc.stop())
        loop.close()


@pytest.mark.parametrize("status", [503, 502])
def test_fail_closed_answers_status_on_error(keyless: FakeOpenAI, status: int) -> None:
    with envoy_alone(config_for(keyless, failure_mode="closed", status_on_error=status)) as url:
        reply = post_json(url, CHAT)
    assert reply.status == status
    error = reply.json()["error"]  # an OpenAI-style body, not Envoy's empty one
    assert error["code"] == "edge_agent_unavailable"
    assert "did not answer" in error["message"]
    assert not keyless.requests  # nothing reached the provider unprocessed


def test_fail_open_passes_requests_through_untouched(keyless: FakeOpenAI) -> None:
    with envoy_alone(config_for(keyless, failure_mode="open")) as url:
        reply = post_json(url, CHAT, {"authorization": "Bearer client-own-key"})
    assert reply.status == 200, reply.body
    assert "x-edge-agent-cache" not in reply.headers  # the agent never saw it
    [seen] = keyless.requests
    assert seen.json()["model"] == "open"  # not rewritten: the agent was not there
    assert seen.headers["authorization"] == "Bearer client-own-key"


def test_fail_open_ignores_a_client_supplied_routing_header(keyless: FakeOpenAI) -> None:
    with FakeOpenAIThread(name="other") as other:
        config = config_for(keyless, failure_mode="open", fail_open_provider="keyless")
        config["providers"].append(
            {"name": "other", "type": "openai_compatible", "base_url": other.url}
        )
        with envoy_alone(config) as url:
            reply = post_json(url, CHAT, {"x-edge-agent-cluster": "other"})
        assert reply.status == 200
        assert len(keyless.requests) == 1 and not other.requests


def test_unreachable_provider_gets_openai_style_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    config = {
        "listen": listen_block(),
        "providers": [{"name": "dead", "type": "openai_compatible", "base_url": dead}],
        "models": [{"name": "open", "targets": ["dead/m"]}],
    }
    gw = Gateway(config, write_config(tmp_path, config), {}).start()
    try:
        reply = post_json(f"{gw.url}/v1/chat/completions", CHAT)
    finally:
        gw.stop()
    assert reply.status == 503
    error = reply.json()["error"]
    assert error["code"] == "upstream_error"
    assert "'dead'" in error["message"]


def test_run_exits_nonzero_when_envoy_dies(keyless: FakeOpenAI, tmp_path: Path) -> None:
    config = config_for(keyless)
    gw = Gateway(config, write_config(tmp_path, config), {}).start()
    try:
        assert gw.proc is not None
        children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
        envoy_pids = [
            int(pid)
            for pid in children
            if "envoy" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        ]
        assert len(envoy_pids) == 1
        os.kill(envoy_pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while gw.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.proc.returncode == 1, gw.logs()
        assert "envoy exited unexpectedly" in gw.logs()
    finally:
        gw.stop()


def _closed_port() -> int:
    from tests.helpers import free_port

    return free_port()  # nothing listens there once the probe socket is closed


def test_provider_timeout_gets_openai_style_504(keyless: FakeOpenAI, tmp_path: Path) -> None:
    config = config_for(keyless)
    config["providers"][0]["timeout_s"] = 0.3
    keyless.delay_s = 3.0
    gw = Gateway(config, write_config(tmp_path, config), {}).start()
    try:
        reply = post_json(f"{gw.url}/v1/chat/completions", CHAT)
    finally:
        keyless.delay_s = 0.0
        gw.stop()
    assert reply.status == 504
    error = reply.json()["error"]
    assert error["code"] == "upstream_error"
    assert "timeout" in error["message"]


def test_envoy_does_not_outlive_a_killed_gateway(keyless: FakeOpenAI, tmp_path: Path) -> None:
    config = config_for(keyless)
    gw = Gateway(config, write_config(tmp_path, config), {}).start()
    assert gw.proc is not None
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    envoy_pid = next(
        int(pid) for pid in children if b"envoy" in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    gw.proc.kill()  # SIGKILL: no chance to clean up
    gw.proc.wait()
    deadline = time.monotonic() + 10
    while _alive(envoy_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(envoy_pid), "envoy outlived the killed gateway"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only init has yet to reap it


def test_fail_closed_slow_agent_gets_openai_style_504(keyless: FakeOpenAI) -> None:
    """An agent slower than envoy.message_timeout_ms: Envoy answers 504 with a JSON body."""
    import grpc
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

    class SlowProcessor(pb_grpc.ExternalProcessorServicer):
        async def Process(self, request_iterator, context):  # type: ignore[no-untyped-def]
            async for request in request_iterator:
                await asyncio.sleep(1.0)  # far past the 100 ms message timeout below
                resp = pb.ProcessingResponse()
                getattr(resp, request.WhichOneof("request")).SetInParent()
                yield resp

    config = config_for(keyless, message_timeout_ms=100)
    config["cache"] = {"semantic": {"enabled": False}}  # its budget must fit the timeout
    cfg = parse_config(config)
    proc = EnvoyProcess(build_bootstrap(cfg), admin=cfg.listen.addr("envoy_admin"))

    async def scenario() -> object:
        server = grpc.aio.server()
        pb_grpc.add_ExternalProcessorServicer_to_server(SlowProcessor(), server)
        server.add_insecure_port(cfg.listen.grpc)
        await server.start()
        await proc.start()
        try:
            await proc.wait_ready()
            url = f"http://{cfg.listen.envoy}/v1/chat/completions"
            return await asyncio.to_thread(post_json, url, CHAT)
        finally:
            await proc.stop()
            await server.stop(0)

    reply = asyncio.run(scenario())
    assert reply.status == 504  # type: ignore[attr-defined]
    error = reply.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "edge_agent_unavailable"
    assert "timeout" in error["message"]
    assert not keyless.requests
