"""The worker supervisor with tiny stand-in workers: restarts, backoff, crash loops, cleanup.

The stand-ins speak the real worker protocol (WorkerContext from the environment, the
readiness marker) but start in a fraction of a second and crash on demand.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.config import Config, parse_config
from edge_agent.runtime.workers import RestartPolicy, RestartTracker, Supervisor, WorkerContext
from tests.helpers import free_port

# Serves (marks itself ready) until the flag file exists, then exits 3; exits 3 at once
# if the flag already exists: a worker that crashes at start.
_STAND_IN = """
import os, sys, time
from pathlib import Path
from edge_agent.runtime.workers import WorkerContext
flag = Path(sys.argv[1])
if flag.exists():
    sys.exit(3)
WorkerContext.from_environ().mark_ready(True)
while not flag.exists():
    time.sleep(0.02)
sys.exit(3)
"""


def _config() -> Config:
    return parse_config(
        {
            "listen": {"grpc": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"},
            "providers": [{"name": "p", "type": "openai", "base_url": "http://127.0.0.1:9"}],
            "models": [{"name": "m", "targets": ["p/m"]}],
        }
    )


def _supervisor(flag: Path, policy: RestartPolicy, count: int = 2) -> Supervisor:
    command = [sys.executable, "-c", _STAND_IN, str(flag)]
    return Supervisor(_config(), count, command, policy=policy, stop_grace_s=5)


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    # Polling: the supervisor has no event for "worker restarted" to wait on.
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout_s} s")


def test_backoff_doubles_and_a_crash_loop_gives_up() -> None:
    tracker = RestartTracker(
        RestartPolicy(first_delay_s=1, max_delay_s=5, max_restarts=4, window_s=60)
    )
    assert [tracker.next_delay(t) for t in (0, 1, 2, 3)] == [1, 2, 4, 5]
    assert tracker.next_delay(4) is None  # a fifth death within the window


def test_deaths_outside_the_window_are_forgiven() -> None:
    tracker = RestartTracker(RestartPolicy(first_delay_s=1, max_restarts=2, window_s=10))
    assert tracker.next_delay(0) == 1
    assert tracker.next_delay(5) == 2
    assert tracker.next_delay(100) == 1  # the old deaths no longer count


def test_readiness_markers_count_workers_and_never_remove_a_successor(tmp_path: Path) -> None:
    (tmp_path / "ready").mkdir()
    first = WorkerContext(0, 2, tmp_path)
    first.mark_ready(True)
    assert first.serving() == 1
    WorkerContext(1, 2, tmp_path).mark_ready(True)
    assert first.serving() == 2
    # A successor of worker 0 (another pid) owns the marker now: the old one's
    # shutdown must leave it alone.
    (tmp_path / "ready" / "0").write_text("999999")
    first.mark_ready(False)
    assert first.serving() == 2
    env = {
        "EDGE_AGENT_WORKER_DIR": str(tmp_path),
        "EDGE_AGENT_WORKER_INDEX": "1",
        "EDGE_AGENT_WORKERS": "2",
    }
    assert WorkerContext.from_environ(env) == WorkerContext(1, 2, tmp_path)
    assert WorkerContext.from_environ({}) is None


async def test_a_dead_worker_is_restarted_and_a_crash_loop_ends_the_supervisor(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "crash"
    sup = _supervisor(flag, RestartPolicy(first_delay_s=0.05, max_restarts=2, window_s=30))
    try:
        await sup.start()
        assert sup.run_dir is not None
        run_dir = sup.run_dir
        assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None  # only workers get it
        assert (run_dir / "metrics").is_dir()
        ready = WorkerContext(0, 2, run_dir)
        assert ready.serving() == 2
        old = sup.pids
        os.kill(old[0], signal.SIGKILL)
        await _until(lambda: len(sup.pids) == 2 and sup.pids[0] != old[0])
        await _until(lambda: ready.serving() == 2)
        assert sup.pids[1] == old[1]
        # Now every worker crashes, and keeps crashing at start: the supervisor gives up.
        flag.touch()
        await asyncio.wait_for(sup.wait(), 10)
    finally:
        await sup.stop()
    assert not run_dir.exists()
    assert sup.pids == []


async def test_a_worker_that_dies_while_starting_fails_the_start(tmp_path: Path) -> None:
    flag = tmp_path / "crash"
    flag.touch()
    sup = _supervisor(flag, RestartPolicy())
    try:
        with pytest.raises(OSError, match="exit status 3 while starting"):
            await asyncio.wait_for(sup.start(), 10)
    finally:
        await sup.stop()
    assert sup.run_dir is None


async def test_a_stop_signal_during_start_returns_early(tmp_path: Path) -> None:
    # Stand-ins that never become ready: start() must still return once told to stop.
    stop = asyncio.Event()
    command = [sys.executable, "-c", "import time; time.sleep(30)"]
    sup = Supervisor(_config(), 2, command, stop=stop, stop_grace_s=5)
    try:
        starting = asyncio.ensure_future(sup.start())
        await asyncio.sleep(0.2)
        assert not starting.done()
        stop.set()
        await asyncio.wait_for(starting, 5)
        pids = sup.pids
        assert len(pids) == 2
    finally:
        await sup.stop()
    assert sup.pids == []
