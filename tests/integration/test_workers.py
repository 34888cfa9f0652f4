"""Worker processes (`--workers 2`): real Envoy, real agent processes, a fake provider.

Both workers serve on the shared ports, /metrics totals are exact across processes, a
killed worker comes back, and SIGTERM leaves no process and no metrics directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.helpers import (
    Gateway,
    alive,
    http,
    listen_block,
    metric_value,
    post_json,
    wait_for,
    write_config,
)

KEY = "sk-workers-provider-key"
FAST_AGEING = {"EDGE_AGENT_WORKER_CONNECTION_AGE_S": "1"}
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def config_for(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "listen": listen_block(),
        "providers": [
            {
                "name": "up",
                "type": "openai",
                "base_url": fake.url,
                "api_key_env": "WORKERS_KEY",
                "models": [{"name": "up-chat"}],
            }
        ],
        "models": [{"name": "chat", "targets": ["up/up-chat"]}],
        # One embedder per worker would cost seconds and ~100 MB each for nothing here.
        "cache": {"semantic": {"enabled": False}},
        **extra,
    }


def worker_pids(logs: str) -> dict[int, int]:
    """The latest pid of each worker index, from the supervisor's log."""
    return {int(i): int(pid) for i, pid in _STARTED.findall(logs)}


def run_dirs(supervisor_pid: int) -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), f"edge-agent-workers-{supervisor_pid}-*"))


def chat(gw: Gateway, content: str) -> int:
    payload = {"model": "chat", "messages": [{"role": "user", "content": content}]}
    return post_json(f"{gw.url}/v1/chat/completions", payload).status


def requests_total(gw: Gateway) -> float:
    return metric_value(gw.metrics(), "edge_agent_requests_total")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    thread = FakeOpenAIThread(name="workers", api_key=KEY)
    try:
        yield thread.start()
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def gateway(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # `workers` from the config (the CLI flag is tested with `serve` below). Workers age
    # Envoy's connections out every second here (30 s by default), so requests cross
    # GOAWAYs all the time and a restarted worker gets connections again quickly.
    config = config_for(fake, workers=2)
    tmp = tmp_path_factory.mktemp("workers")
    gw = Gateway(config, write_config(tmp, config), {"WORKERS_KEY": KEY, **FAST_AGEING}).start()
    assert gw.proc is not None
    supervisor = gw.proc.pid
    try:
        yield gw
    finally:
        pids = list(worker_pids(gw.logs()).values())
        code = gw.stop()
        assert code == 0, f"edge-agent run exited {code}:\n{gw.logs()}"
        assert not [p for p in pids if alive(p)], "workers outlived the supervisor"
        assert not run_dirs(supervisor), "the multiprocess directory was left behind"


def test_both_workers_serve_and_metrics_are_totals(gateway: Gateway) -> None:
    ready = http("GET", f"{gateway.admin_url}/readyz").json()
    assert (ready["workers"], ready["serving"]) == (2, 2)
    before = requests_total(gateway)
    sent = 200
    # Each request on its own client connection, over several threads.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: chat(gateway, f"workers-total-{i}"), range(sent)))
    assert statuses == [200] * sent
    # The counter is written when the agent finishes the request, possibly just after
    # the client has its answer: wait briefly for the last ones, then demand equality.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: requests_total(gateway) - before >= sent, 5, "the request counter")
    text = gateway.metrics()
    assert metric_value(text, "edge_agent_requests_total") - before == sent
    per_worker = {
        w: metric_value(text, "edge_agent_worker_streams_total", worker=w) for w in ("0", "1")
    }
    assert all(n > 0 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) >= sent
    # Gauges are sums over live workers: every distinct answer is cached by the worker
    # that handled it (each worker writes its sizes every second), no stream stays open.
    wait_for(
        lambda: metric_value(gateway.metrics(), "edge_agent_cache_entries") == sent,
        5,
        "edge_agent_cache_entries to sum both workers' caches",
    )
    assert metric_value(gateway.metrics(), "edge_agent_ext_proc_streams") == 0


def test_a_killed_worker_is_restarted_and_requests_keep_succeeding(gateway: Gateway) -> None:
    assert gateway.proc is not None
    old = worker_pids(gateway.logs())[0]
    before = requests_total(gateway)
    sent: list[int] = []  # final status of each request, after bounded retries
    tries = [0]  # every HTTP request, retries included
    stop = threading.Event()

    def load() -> None:
        # Traffic throughout the kill and the restart, as in production.
        while not stop.is_set():
            for _ in range(3):
                tries[0] += 1
                status = chat(gateway, f"during-restart-{len(sent)}")
                if status == 200:
                    break
            sent.append(status)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(0.2)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: worker_pids(gateway.logs())[0] != old, 10, "worker 0 to be restarted")
        wait_for(
            lambda: http("GET", f"{gateway.admin_url}/readyz", timeout=2).status == 200,
            10,
            "readiness with both workers",
        )
        # All of Envoy's connections went to the survivor while worker 0 was away;
        # connection ageing must bring some back to the new worker 0.
        restarted = metric_value(gateway.metrics(), "edge_agent_worker_streams_total", worker="0")
        wait_for(
            lambda: (
                metric_value(gateway.metrics(), "edge_agent_worker_streams_total", worker="0")
                > restarted
            ),
            5,
            "the restarted worker to get connections",
        )
    finally:
        stop.set()
        loader.join(30)
    assert f"worker 0 (pid {old}) killed by SIGKILL; restarting it" in gateway.logs()
    assert sent and set(sent) == {200}, sorted(set(sent))
    new = worker_pids(gateway.logs())[0]
    assert alive(new) and not alive(old)
    # The dead worker's live gauges are gone; its counters stay in the totals.
    [run_dir] = run_dirs(gateway.proc.pid)
    assert not glob.glob(os.path.join(run_dir, "metrics", f"gauge_live*_{old}.db"))
    assert glob.glob(os.path.join(run_dir, "metrics", f"counter_{old}.db"))
    with contextlib.suppress(AssertionError):
        wait_for(lambda: requests_total(gateway) - before >= len(sent), 5, "the counter")
    # Every answered request is counted once. A retried try is counted too when the
    # killed worker had already decided its status before dying; one refused by Envoy
    # (agent unreachable) is not: so the total lies between the two.
    assert len(sent) <= requests_total(gateway) - before <= tries[0]


def test_serve_workers_flag_overrides_config_and_sigterm_cleans_up(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    config = config_for(fake, workers=1)
    path = write_config(tmp_path, config)
    admin = f"http://{config['listen']['admin']}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "serve", "-c", str(path), "--workers", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "WORKERS_KEY": KEY},
        )
    try:

        def ready() -> bool:
            with contextlib.suppress(OSError):
                return http("GET", f"{admin}/readyz", timeout=1).status == 200
            return False

        wait_for(ready, 20, "serve --workers 2 to be ready")
        assert http("GET", f"{admin}/readyz").json()["workers"] == 2
        pids = list(worker_pids(log_path.read_text()).values())
        assert len(pids) == 2 and all(alive(p) for p in pids)
        assert len(run_dirs(proc.pid)) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [p for p in pids if alive(p)]
    assert not run_dirs(proc.pid)
    assert "Traceback" not in log_path.read_text()


def test_a_busy_port_stops_workers_with_a_clear_message(fake: FakeOpenAI, tmp_path: Path) -> None:
    import socket

    config = config_for(fake)
    host, port = config["listen"]["grpc"].split(":")
    with socket.socket() as busy:
        # SO_REUSEPORT on the squatter too: the workers alone would join it silently.
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind((host, int(port)))
        busy.listen()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "serve",
                "-c",
                str(write_config(tmp_path, config)),
                "-w",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 1
    assert "listen.grpc" in proc.stderr
    assert "Traceback" not in proc.stderr
