"""`edge-agent` as operators run it: busy ports fail loudly, envoy-config prints the bootstrap."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import http, listen_block, other_envoy_admin, write_config

CONFIG = {
    "providers": [{"name": "p", "type": "openai_compatible", "base_url": "http://127.0.0.1:9"}],
    "models": [{"name": "m", "targets": ["p/m"]}],
}


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "key"), [("serve", "grpc"), ("run", "admin"), ("run", "envoy")]
)
def test_a_busy_port_stops_the_agent_with_a_clear_message(
    tmp_path: Path, command: str, key: str
) -> None:
    listen = listen_block()
    host, port = listen[key].split(":")
    with socket.socket() as busy:
        # SO_REUSEPORT, as another gateway's Envoy or workers bind: Envoy's listener
        # would share the port silently.
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind((host, int(port)))
        busy.listen()
        path = write_config(tmp_path, {**CONFIG, "listen": listen})
        proc = run_cli(command, "--config", str(path))
    assert proc.returncode == 1
    assert f"listen.{key}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_envoy_config_prints_the_generated_bootstrap(tmp_path: Path) -> None:
    path = write_config(tmp_path, {**CONFIG, "listen": listen_block()})
    proc = run_cli("envoy-config", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    bootstrap = yaml.safe_load(proc.stdout)
    names = [c["name"] for c in bootstrap["static_resources"]["clusters"]]
    assert names == ["edge_agent_ext_proc", "p"]


def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"providers": []})
    proc = run_cli("run", "--config", str(path))
    assert proc.returncode == 2
    assert "providers" in proc.stderr and "models" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_taken_envoy_admin_port_fails_clearly_and_never_reports_ready(tmp_path: Path) -> None:
    with other_envoy_admin() as port:
        listen = {**listen_block(), "envoy_admin": f"127.0.0.1:{port}"}
        path = write_config(tmp_path, {**CONFIG, "listen": listen})
        proc = run_cli("run", "--config", str(path))
    assert proc.returncode == 1
    assert "gateway ready" not in proc.stderr
    assert "listen.envoy_admin" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_starting_the_agent_prints_no_faiss_loader_lines(tmp_path: Path) -> None:
    listen = listen_block()
    config = {**CONFIG, "listen": listen, "cache": {"semantic": {"enabled": False}}}
    path = write_config(tmp_path, config)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "serve",
                "-c",
                str(path),
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 25
        while "agent serving" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.05)
        assert http("GET", f"http://{listen['admin']}/healthz").status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    output = log_path.read_text(errors="replace")
    assert "INFO" in output  # the check below means something only at INFO
    assert "faiss.loader" not in output and "AVX" not in output, output
