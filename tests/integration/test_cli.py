"""`edge-agent` as operators run it: busy ports fail loudly, envoy-config prints the bootstrap."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import listen_block, write_config

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


@pytest.mark.parametrize(("command", "key"), [("serve", "grpc"), ("run", "admin")])
def test_a_busy_port_stops_the_agent_with_a_clear_message(
    tmp_path: Path, command: str, key: str
) -> None:
    listen = listen_block()
    host, port = listen[key].split(":")
    with socket.socket() as busy:
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
