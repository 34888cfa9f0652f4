"""`edge-agent run` supervises its agent and owns its Envoy: real Envoy, real CLI, fake provider.

A killed agent process leaves Envoy up, answering the configured failure mode until the
supervisor has restarted the agent; the Envoy bootstrap never outlives Envoy's reading it;
gateways on one host get their own Envoy admin port and wait only on their own Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import parse_config
from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from edge_agent.envoy.bootstrap import build_bootstrap
from edge_agent.envoy.process import EnvoyError, EnvoyProcess
from tests.helpers import (
    Gateway,
    Reply,
    alive,
    free_port,
    http,
    listen_block,
    other_envoy_admin,
    post_json,
    wait_for,
    write_config,
)

_READY = re.compile(r"gateway ready: .*\(Envoy admin on (\S+)\)")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAIThread(name="supervised") as started:
        yield started


def config_for(fake: FakeOpenAI, failure_mode: str = "closed") -> dict[str, Any]:
    listen = listen_block()
    del listen["envoy_admin"]  # the default: what two gateways on one host must survive
    return {
        "listen": listen,
        "providers": [{"name": "up", "type": "openai_compatible", "base_url": fake.url}],
        "models": [{"name": "chat", "targets": ["up/up-chat"]}],
        "cache": {"semantic": {"enabled": False}},  # no embedder: quicker worker starts
        "envoy": {"failure_mode": failure_mode},
    }


class RunGateway(Gateway):
    """`edge-agent run` with a private TMPDIR; the Envoy admin address comes from its log."""

    def __init__(self, tmp: Path, config: dict[str, Any], name: str = "gateway") -> None:
        self.tmpdir = tmp / f"{name}-tmp"
        self.tmpdir.mkdir()
        super().__init__(
            config, write_config(tmp, config, f"{name}.yaml"), {"TMPDIR": str(self.tmpdir)}
        )

    def start(self, timeout_s: float = 30.0) -> RunGateway:
        env = {**os.environ, **self.env}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"edge-agent run exited {self.proc.returncode}:\n{self.logs()}"
                )
            with contextlib.suppress(OSError):
                # The agent's /readyz also asks the Envoy it was told about.
                return "gateway ready" in self.logs() and self.readyz().status == 200
            return False

        try:
            wait_for(ready, timeout_s, "the gateway to be ready")
        except AssertionError:
            self.stop()
            raise
        return self

    def readyz(self) -> Reply:
        return http("GET", f"{self.admin_url}/readyz", timeout=2)

    @property
    def envoy_admin(self) -> str:
        match = _READY.search(self.logs())
        assert match, self.logs()
        return match.group(1)

    def envoy_files(self) -> list[str]:
        return glob.glob(str(self.tmpdir / "edge-agent-envoy-*"))


def chat(gw: Gateway, content: str = "hello") -> Reply:
    payload = {"model": "chat", "messages": [{"role": "user", "content": content}]}
    return post_json(f"{gw.url}/v1/chat/completions", payload)


def listener_pids(port: int) -> set[int]:
    """The processes with a socket listening on TCP `port` (from /proc, as ss does)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    pids: set[int] = set()
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                pids.add(int(fd.split("/")[2]))
    return pids


def grpc_port(gw: Gateway) -> int:
    return int(gw.config["listen"]["grpc"].rsplit(":", 1)[1])


@pytest.mark.parametrize("failure_mode", ["closed", "open"])
def test_a_killed_agent_leaves_envoy_up_in_failure_mode_until_it_is_restarted(
    fake: FakeOpenAI, tmp_path: Path, failure_mode: str
) -> None:
    gw = RunGateway(tmp_path, config_for(fake, failure_mode)).start()
    assert gw.proc is not None
    try:
        assert chat(gw, "before").status == 200
        # Envoy has read its bootstrap: nothing of it is left for a SIGKILL to strand.
        assert not gw.envoy_files(), "the Envoy bootstrap outlives Envoy's start"
        # The agent is whichever process serves the gRPC port Envoy calls.
        [agent] = listener_pids(grpc_port(gw))
        seen = len(fake.requests)
        # Freeze the gateway so it cannot restart the agent before the check below.
        os.kill(gw.proc.pid, signal.SIGSTOP)
        try:
            os.kill(agent, signal.SIGKILL)
            wait_for(lambda: not alive(agent), 10, "the agent to die")
            wait_for(lambda: not listener_pids(grpc_port(gw)), 10, "the gRPC port to close")
            down = chat(gw, "while the agent is down")
            envoy_ready = http("GET", f"http://{gw.envoy_admin}/ready", timeout=5)
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        assert envoy_ready.status == 200, "Envoy went down with the agent"
        if failure_mode == "closed":
            assert down.status == 503, down.body
            assert down.json()["error"]["code"] == "edge_agent_unavailable"
            assert len(fake.requests) == seen  # nothing reached the provider unprocessed
        else:
            assert down.status == 200, down.body
            assert "x-edge-agent-cache" not in down.headers  # passed through, agent-less

        def served_by_the_agent() -> bool:
            reply = chat(gw, "after")
            return reply.status == 200 and "x-edge-agent-cache" in reply.headers

        wait_for(served_by_the_agent, 20, "the restarted agent to answer")
        assert f"worker 0 (pid {agent}) killed by SIGKILL; restarting it" in gw.logs()
        assert gw.readyz().status == 200
        assert gw.proc.poll() is None
    finally:
        code = gw.stop()
    assert code == 0, gw.logs()
    assert not gw.envoy_files()
    assert "Traceback" not in gw.logs()


def _envoy_pid(gw: Gateway) -> int:
    assert gw.proc is not None
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    [pid] = [
        int(p)
        for p in children
        if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].endswith(b"envoy")
    ]
    return pid


@pytest.mark.parametrize("how", ["SIGINT", "SIGHUP", "envoy crash", "gateway SIGKILL"])
def test_no_envoy_bootstrap_is_left_behind(fake: FakeOpenAI, tmp_path: Path, how: str) -> None:
    if how == "SIGHUP" and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        pytest.skip("SIGHUP is ignored here (nohup), and so in the gateway")
    gw = RunGateway(tmp_path, config_for(fake)).start()
    assert gw.proc is not None
    try:
        assert not gw.envoy_files(), "the Envoy bootstrap outlives Envoy's start"
        if how in ("SIGINT", "SIGHUP"):  # Ctrl-C; a closed terminal
            gw.proc.send_signal(getattr(signal, how))
            expected: int | None = 0
        elif how == "envoy crash":
            os.kill(_envoy_pid(gw), signal.SIGKILL)
            expected = 1
        else:
            [agent] = listener_pids(grpc_port(gw))
            gw.proc.kill()  # no cleanup can run: there must be nothing left to clean
            expected = -signal.SIGKILL
            wait_for(lambda: not alive(agent), 10, "the agent to die with its supervisor")
        assert gw.proc.wait(20) == expected, gw.logs()
    finally:
        gw.stop()
    assert not gw.envoy_files()


def test_two_gateways_with_the_default_envoy_admin_both_serve(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    first = RunGateway(tmp_path, config_for(fake), "first").start()
    try:
        second = RunGateway(tmp_path, config_for(fake), "second").start()
        try:
            assert chat(first).status == 200 and chat(second).status == 200
            admins = {first.envoy_admin, second.envoy_admin}
            assert len(admins) == 2 and not any(a.endswith(":0") for a in admins), admins
            for gw in (first, second):
                # Each printed admin address is that gateway's own Envoy: it has the
                # gateway's listener.
                listeners = http("GET", f"http://{gw.envoy_admin}/listeners", timeout=5)
                assert gw.config["listen"]["envoy"] in listeners.body.decode()
                assert gw.proc is not None and gw.proc.poll() is None
        finally:
            assert second.stop() == 0, second.logs()
    finally:
        assert first.stop() == 0, first.logs()


def test_envoy_readiness_is_never_answered_by_another_process(
    fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # gettempdir() caches
    with other_envoy_admin() as port:
        config = config_for(fake)
        config["listen"]["envoy_admin"] = f"127.0.0.1:{port}"
        cfg = parse_config(config)
        envoy = EnvoyProcess(build_bootstrap(cfg), admin=cfg.listen.addr("envoy_admin"))
        # Our Envoy cannot bind the port: it must fail, whatever answers there.
        start_fails(envoy, match=f"127.0.0.1:{port}")
    assert not glob.glob(str(tmp_path / "edge-agent-envoy-*"))


def test_an_envoy_that_rejects_its_bootstrap_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # gettempdir() caches
    port = free_port()
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}},
        "static_resources": {"clusters": [{"name": "bad", "type": "NO_SUCH_TYPE"}]},
    }
    start_fails(EnvoyProcess(bootstrap, admin=("127.0.0.1", port)))
    assert not glob.glob(str(tmp_path / "edge-agent-envoy-*"))


def start_fails(envoy: EnvoyProcess, match: str | None = None) -> None:
    """Starting `envoy` (and waiting until it is ready) raises EnvoyError; it is stopped."""

    async def scenario() -> None:
        try:
            with pytest.raises(EnvoyError, match=match):
                await envoy.start()
                await envoy.wait_ready(timeout_s=20)
        finally:
            await envoy.stop()

    asyncio.run(scenario())
