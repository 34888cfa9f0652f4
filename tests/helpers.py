"""Test helpers: free ports, config files, and a real `edge-agent run` in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.body)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """A plain HTTP call that returns error statuses instead of raising."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def post_json(url: str, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    import orjson

    return http(
        "POST",
        url,
        orjson.dumps(payload),
        {"content-type": "application/json", **(headers or {})},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listen_block() -> dict[str, str]:
    return {
        "envoy": f"127.0.0.1:{free_port()}",
        "grpc": f"127.0.0.1:{free_port()}",
        "admin": f"127.0.0.1:{free_port()}",
        "envoy_admin": f"127.0.0.1:{free_port()}",
    }


def write_config(tmp: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Gateway:
    """`edge-agent run --config FILE` as a real subprocess (Envoy + agent)."""

    def __init__(self, config: dict[str, Any], config_path: Path, env: dict[str, str]) -> None:
        self.config = config
        self.config_path = config_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.with_suffix(".log")

    @property
    def url(self) -> str:
        return f"http://{self.config['listen']['envoy']}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.config['listen']['admin']}"

    def start(self, timeout_s: float = 30.0) -> Gateway:
        env = {**os.environ, **self.env}
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout_s
        envoy_admin = f"http://{self.config['listen']['envoy_admin']}/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edge-agent run exited {self.proc.returncode}:\n{self.logs()}")
            with contextlib.suppress(OSError):
                if (
                    "gateway ready" in self.logs()
                    and http("GET", f"{self.admin_url}/readyz", timeout=1).status == 200
                    and http("GET", envoy_admin, timeout=1).status == 200
                ):
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway not ready in {timeout_s} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def metrics(self) -> str:
        return http("GET", f"{self.admin_url}/metrics", timeout=5).body.decode()

    def admin_json(self, path: str) -> Any:
        return http("GET", f"{self.admin_url}{path}", timeout=5).json()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@contextlib.contextmanager
def started_fakes(threads: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Start fake-provider threads (name -> *Thread); stop every started one on exit."""
    started: dict[str, Any] = {}
    running = []
    try:
        for name, thread in threads.items():
            started[name] = thread.start()
            running.append(thread)
        yield started
    finally:
        for thread in running:
            thread.stop()


@contextlib.contextmanager
def running_gateway(
    tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    gw = Gateway(config, write_config(tmp, config), env or {}).start()
    try:
        yield gw
    finally:
        gw.stop()


class Clock:
    """A settable monotonic clock for TTL tests."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def chat_completion(
    content: str, *, model: str = "provider-m", prompt_tokens: int = 1, completion_tokens: int = 1
) -> bytes:
    """A complete OpenAI chat.completion answer, as a provider would send it."""
    import orjson

    return orjson.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


class _LiveEverywhere(BaseHTTPRequestHandler):
    """Answers 200 LIVE to everything: another gateway's Envoy admin, as far as /ready goes."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "4")
        self.end_headers()
        self.wfile.write(b"LIVE")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def other_envoy_admin() -> Iterator[int]:
    """Another process's 'Envoy admin' holding a loopback port; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LiveEverywhere)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
