"""Real Redis for tests: the session's server, or a private redis-server per test.

Tests that need Redis skip with a message saying how to run them, and fail instead when
EDGE_AGENT_REQUIRE_REDIS=1 (as .ci/run sets). Fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import redis

from tests.helpers import free_port

REDIS_URL = os.environ.get("EDGE_AGENT_REDIS_URL", "redis://127.0.0.1:6379/0")
HOW = (
    "start one (`redis-server`, or point EDGE_AGENT_REDIS_URL at one); "
    "EDGE_AGENT_REQUIRE_REDIS=1 turns this skip into a failure"
)


def unavailable(why: str) -> None:
    if os.environ.get("EDGE_AGENT_REQUIRE_REDIS") == "1":
        pytest.fail(f"{why} and EDGE_AGENT_REQUIRE_REDIS=1")
    pytest.skip(f"{why}: {HOW}")


class RedisServer:
    """A private redis-server (no persistence) the test may stop, freeze and restart."""

    def __init__(self, binary: str, password: str | None = None) -> None:
        self.binary = binary
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(
                    port=self.port, password=self.password, socket_connect_timeout=0.2
                ) as r:
                    r.ping()
                return
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from exc
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot die otherwise
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
