"""Worker processes: N agent processes sharing the gRPC and admin ports, supervised.

`edge-agent run` (always, even with one worker) and `edge-agent serve --workers N`
(N > 1) make this process a supervisor that runs no agent code itself: it starts
`edge-agent serve` N times with a worker environment (see `WorkerContext`), restarts a
worker that dies (exponential backoff), gives up with a non-zero exit when one keeps
dying, and stops them all on SIGTERM/SIGINT.

Workers bind the same ports with SO_REUSEPORT; the kernel spreads *connections* (not
requests) over them. Metrics use prometheus-client's multiprocess mode in a private
directory that the supervisor creates, cleans after each dead worker, and removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.config import Config
from edge_agent.telemetry.metrics import MULTIPROC_ENV, WORKER_INDEX_ENV

log = logging.getLogger("edge_agent.runtime.workers")

# The worker environment, set by the supervisor (WORKER_INDEX_ENV comes from metrics).
DIR_ENV = "EDGE_AGENT_WORKER_DIR"
COUNT_ENV = "EDGE_AGENT_WORKERS"
_DIR_PREFIX = "edge-agent-workers-"


@dataclass(frozen=True)
class WorkerContext:
    """What a worker knows about its siblings: how many, and a directory shared with them."""

    index: int
    count: int
    run_dir: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerContext | None:
        env = os.environ if environ is None else environ
        run_dir = env.get(DIR_ENV)
        if not run_dir:
            return None
        return cls(int(env.get(WORKER_INDEX_ENV, "0")), int(env.get(COUNT_ENV, "1")), Path(run_dir))

    @property
    def ready_dir(self) -> Path:
        return self.run_dir / "ready"

    def mark_ready(self, ready: bool) -> None:
        """One file per serving worker, named after its index, holding its pid."""
        marker = self.ready_dir / str(self.index)
        pid = str(os.getpid())
        if ready:
            tmp = self.ready_dir / f".{self.index}.{pid}"
            tmp.write_text(pid)
            tmp.replace(marker)  # atomic: a reader never sees an empty marker
            return
        # Only our own marker: a replacement worker may already have written its own.
        with contextlib.suppress(OSError):
            if marker.read_text() == pid:
                marker.unlink()

    def serving(self) -> int:
        """How many workers serve now (the supervisor removes a dead worker's marker)."""
        try:
            return sum(1 for name in os.listdir(self.ready_dir) if not name.startswith("."))
        except OSError:
            return 0


@dataclass(frozen=True)
class RestartPolicy:
    """Delays double from `first_delay_s` with each death of a worker slot within
    `window_s`; more than `max_restarts` deaths within the window is a crash loop."""

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 60.0


@dataclass
class RestartTracker:
    """One worker slot's recent deaths. Pure (the caller passes the time): unit-tested."""

    policy: RestartPolicy
    deaths: deque[float] = field(default_factory=deque)

    def next_delay(self, now: float) -> float | None:
        """The delay before restarting after a death at `now`; None means give up."""
        while self.deaths and now - self.deaths[0] > self.policy.window_s:
            self.deaths.popleft()
        self.deaths.append(now)
        if len(self.deaths) > self.policy.max_restarts:
            return None
        delay = self.policy.first_delay_s * 2 ** (len(self.deaths) - 1)
        return min(delay, self.policy.max_delay_s)


def worker_command(config_path: str, log_level: str, log_format: str = "text") -> list[str]:
    """How the supervisor starts one worker: this Python, `edge-agent serve`."""
    return [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "serve",
        "--config",
        str(config_path),
        "--log-level",
        log_level,
        "--log-format",
        log_format,
    ]


def _die_with_parent() -> None:
    # In the child before exec: if the supervisor dies (even by SIGKILL), the worker
    # gets SIGTERM instead of living on, orphaned, on the shared ports.
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _exit_status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def check_port_free(
    host: str, port: int, what: str, key: str, *, hint: str = "is another agent running on it?"
) -> None:
    """Raise if something listens on host:port already.

    Workers (and Envoy's listeners) bind with SO_REUSEPORT, which would silently share
    the port with another reuse-port listener of this user (say, a second gateway):
    refuse that up front.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen for {what} on {host}:{port} (listen.{key}): {exc}") from None
    for family, type_, proto, _, addr in infos:
        with socket.socket(family, type_, proto) as probe:
            # SO_REUSEADDR: ignore TIME_WAIT leftovers, still fail on a listener.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(addr)
            except OSError as exc:
                raise OSError(
                    f"cannot listen for {what} on {host}:{port} (listen.{key}): "
                    f"{exc.strerror}; {hint}"
                ) from None


def _remove_stale_dirs(parent: str) -> None:
    """Directories left by supervisors that were killed (SIGKILL skips our cleanup)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            name = entry.name
            if not name.startswith(_DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            pid_text = name[len(_DIR_PREFIX) :].split("-", 1)[0]
            if not pid_text.isdigit():
                continue
            try:
                os.kill(int(pid_text), 0)
            except ProcessLookupError:
                shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                pass  # alive (or another user's): not ours to touch


class Supervisor:
    """Starts, watches, restarts and stops the worker processes.

    Same shape as AgentService (start / wait / stop) so the gateway runs either.
    """

    def __init__(
        self,
        config: Config,
        count: int,
        command: Sequence[str],
        *,
        policy: RestartPolicy | None = None,
        stop: asyncio.Event | None = None,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.config = config
        self.count = count
        self.command = list(command)
        self.policy = policy or RestartPolicy()
        self.stop_grace_s = stop_grace_s
        self._stop = stop or asyncio.Event()
        self._procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._trackers = [RestartTracker(self.policy) for _ in range(count)]
        self._watchers: list[asyncio.Task[None]] = []
        self._gave_up = asyncio.Event()
        self._start_failure: str | None = None
        self._started = False
        self._stopping = False
        self.run_dir: Path | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.returncode is None]

    @property
    def metrics_dir(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "metrics"

    def _context(self, index: int) -> WorkerContext:
        assert self.run_dir is not None
        return WorkerContext(index, self.count, self.run_dir)

    async def start(self) -> None:
        """Start every worker and return once all serve (or the stop event is set).

        Raises OSError if a port is taken or a worker exits while starting.
        """
        listen = self.config.listen
        check_port_free(*listen.addr("grpc"), "gRPC", "grpc")
        check_port_free(*listen.addr("admin"), "the admin HTTP server", "admin")
        parent = tempfile.gettempdir()
        _remove_stale_dirs(parent)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=parent))
        self.metrics_dir.mkdir()
        self._context(0).ready_dir.mkdir()  # the same for every index
        for index in range(self.count):
            await self._spawn(index)
        self._watchers = [asyncio.ensure_future(self._watch(i)) for i in range(self.count)]
        ready = self._context(0)
        while ready.serving() < self.count:
            if self._start_failure is not None:
                raise OSError(self._start_failure)
            if self._stop.is_set():
                return
            await asyncio.sleep(0.05)
        self._started = True
        pids = " ".join(map(str, self.pids))
        if self.count == 1:
            log.info("worker serving (pid %s)", pids)
        else:
            log.info("%d workers serving (pids %s)", self.count, pids)

    async def _spawn(self, index: int) -> None:
        env = {
            **os.environ,
            MULTIPROC_ENV: str(self.metrics_dir),
            DIR_ENV: str(self.run_dir),
            COUNT_ENV: str(self.count),
            WORKER_INDEX_ENV: str(index),
        }
        proc = await asyncio.create_subprocess_exec(
            *self.command,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Own session: a terminal's Ctrl-C reaches the supervisor only, which then
            # stops the workers in order instead of racing them.
            start_new_session=True,
        )
        self._procs[index] = proc
        log.info("worker %d started (pid %d)", index, proc.pid)

    def _forget(self, index: int, pid: int) -> None:
        """A worker is gone: drop its live gauges and its readiness marker."""
        from prometheus_client.multiprocess import mark_process_dead

        with contextlib.suppress(OSError):
            mark_process_dead(pid, str(self.metrics_dir))
        marker = self._context(index).ready_dir / str(index)
        with contextlib.suppress(OSError):
            if marker.read_text() == str(pid):
                marker.unlink()

    async def _watch(self, index: int) -> None:
        while True:
            proc = self._procs[index]
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            self._forget(index, proc.pid)
            status = _exit_status(code)
            if not self._started:
                self._start_failure = f"worker {index} (pid {proc.pid}) {status} while starting"
                return
            delay = self._trackers[index].next_delay(time.monotonic())
            if delay is None:
                log.error(
                    "worker %d (pid %d) %s: it died %d times within %.0f s; giving up",
                    index,
                    proc.pid,
                    status,
                    len(self._trackers[index].deaths),
                    self.policy.window_s,
                )
                self._gave_up.set()
                return
            log.warning(
                "worker %d (pid %d) %s; restarting it in %.1f s", index, proc.pid, status, delay
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            await self._spawn(index)

    async def wait(self) -> None:
        """Returns only when the supervisor gives up on a crash-looping worker."""
        await self._gave_up.wait()

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.stop_grace_s if grace_s is None else grace_s
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        alive = [p for p in self._procs if p is not None and p.returncode is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if alive:
            waits = asyncio.gather(*(p.wait() for p in alive))
            try:
                await asyncio.wait_for(waits, grace)
            except TimeoutError:
                for proc in alive:
                    if proc.returncode is None:
                        log.warning(
                            "worker pid %d did not stop in %.0f s; killing it", proc.pid, grace
                        )
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                await asyncio.gather(*(p.wait() for p in alive))
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        if alive:
            log.info("workers stopped")
