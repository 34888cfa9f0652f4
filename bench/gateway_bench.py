#!/usr/bin/env python3
"""Gateway benchmark: bare Envoy vs Envoy + edge-agent (cache miss, cache hit), one run.

Every scenario goes through Envoy with the same Envoy concurrency, the same wrk
connections and the same duration, so the ratios against bare Envoy are meaningful
on this machine even when absolute numbers are not.

  upstream   a second Envoy answering POST /v1/chat/completions with a fixed
             chat.completion via `direct_response` (C-fast; a Python fake would be the
             bottleneck). A buffer filter makes it read the whole request body first:
             otherwise Envoy closes the upstream connection after every request
             (ARCHITECTURE.md §6) and the baseline looks much slower than it is.
  bare       wrk -> Envoy (listener -> router -> upstream cluster, no ext_proc).
  miss       wrk -> `edge-agent run` (Envoy + agent) -> upstream; a unique prompt per
             request, so every one is looked up, forwarded, captured and stored.
  hit        the same request body every time; the agent answers from its exact cache.

Each scenario is checked, not assumed: no non-2xx or socket errors, cache hit/miss
counters from the agent's /metrics, requests and connections seen by the upstream
(connection reuse), and the CPU time each process spent per request.

Usage: .venv/bin/python bench/gateway_bench.py [--quick] [--duration S] [--write-docs]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_agent.envoy.process import envoy_binary

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_prompts  # the bench's own module, beside this script

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_START = "<!-- bench:results:start -->"
DOCS_END = "<!-- bench:results:end -->"

MODEL = "bench-chat"  # client-facing model name in the gateway config
PROVIDER = "fake"  # provider name = the gateway Envoy's cluster name
# The chain scenario: a second provider on the same upstream, tried only if the first fails.
BACKUP = "fake-backup"
BENCH_KEY = "sk-ea-bench-key-000000000000000000000000000"  # the auth scenario's virtual key
CHAIN_CLUSTER = "edge_agent_chain_0_0"  # model 0, starting at target 0 (priority strategy)
# The chain is an aggregate cluster: requests are counted on the member of the target
# an attempt went to (its first target's here), retries on the aggregate.
CHAIN_FIRST_MEMBER = "edge_agent_target_0"
BARE_CLUSTER = "fake_upstream"
UPSTREAM_PREFIX = "fake_upstream"  # the upstream Envoy's HTTP stat prefix
CHAT_PATH = "/v1/chat/completions"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DISTURBED_PCT = 10  # other processes + steal above this share of the CPU: warn

# A realistic non-streamed OpenAI answer (~850 bytes). The agent checks answers are
# complete before storing them, so it must look like the real thing.
FAKE_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-BENCH0000000000000000000001",
    "object": "chat.completion",
    "created": 1_735_689_600,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": (
                    "Caching answers at the edge returns repeated questions in well under a "
                    "millisecond instead of seconds, and it does not spend provider tokens on "
                    "them. It also shields the provider from bursts of identical requests, "
                    "which keeps you under rate limits when traffic spikes."
                ),
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 38,
        "completion_tokens": 58,
        "total_tokens": 96,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_bench00001",
}
FAKE_COMPLETION_BYTES = json.dumps(FAKE_COMPLETION, separators=(",", ":")).encode()

# The request body is PREFIX + <prompt id> + SUFFIX, built the same way in Python and
# in the wrk Lua script, so the Python warm-up and wrk send identical bodies.
BODY_PREFIX = (
    '{"model":"' + MODEL + '","temperature":0,"max_tokens":128,"messages":['
    '{"role":"system","content":"You are a concise assistant for an engineering team."},'
    '{"role":"user","content":"Question '
)
BODY_SUFFIX = ': in two sentences, why cache LLM answers at the edge?"}]}'

# wrk's own Lua hooks: setup() runs in the main state once per thread (before init),
# init()/request() in each thread's state, done() in the main state at the end. A
# request() function exists for every scenario, so wrk does comparable work in each.
WRK_LUA = """
-- Generated by bench/gateway_bench.py.
-- Script args: <unique|same|file> <tag, or the prompt file> <api key or -> <wrk threads>
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local prefix = [==[@PREFIX@]==]
local suffix = [==[@SUFFIX@]==]
local file_prefix = [==[@FILE_PREFIX@]==]
local file_suffix = [==[@FILE_SUFFIX@]==]
local prompts = nil
local threads_started = 0
function setup(thread)
  threads_started = threads_started + 1
  thread:set("tid", threads_started)
end
local fixed = nil
local tag = "x"
local counter = 0
function init(args)
  tag = args[2] or "x"
  if args[3] and args[3] ~= "-" then
    wrk.headers["Authorization"] = "Bearer " .. args[3]
  end
  if args[1] == "same" then
    fixed = wrk.format(nil, nil, nil, prefix .. tag .. suffix)
  elseif args[1] == "file" then
    -- One JSON-escaped question per line; each thread sends its own share, once.
    local threads = tonumber(args[4])
    local i = 0
    prompts = {}
    for line in io.lines(args[2]) do
      if i % threads == tid - 1 then prompts[#prompts + 1] = line end
      i = i + 1
    end
  end
end
function request()
  if fixed then return fixed end
  counter = counter + 1
  if prompts then
    local q = prompts[(counter - 1) % #prompts + 1]  -- wrapped: a repeat, which the checks catch
    return wrk.format(nil, nil, nil, file_prefix .. q .. file_suffix)
  end
  return wrk.format(nil, nil, nil, prefix .. tag .. "-t" .. tid .. "-" .. counter .. suffix)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,' ..
    '"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
"""


class BenchError(RuntimeError):
    """A scenario could not run or did not do what it claims: the run fails loudly."""


# ---- small HTTP / process helpers ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 5.0,
    key: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"content-type": "application/json"} if body is not None else {}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def wait_until(
    what: str, ok: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError):
            if ok():
                return
        time.sleep(0.05)
    raise BenchError(f"{what} not ready after {timeout_s:.0f} s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # comm may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class CpuSample:
    """Machine-wide CPU jiffies (all CPUs) from /proc/stat; USER_HZ == SC_CLK_TCK."""

    tasks: int  # user + nice + system: what processes ran
    irq: int  # irq + softirq (loopback networking shows up here)
    steal: int  # the hypervisor ran someone else while we wanted the CPU
    total: int

    @staticmethod
    def now() -> CpuSample:
        # user nice system idle iowait irq softirq steal; guest time is already in user.
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        return CpuSample(v[0] + v[1] + v[2], v[5] + v[6], v[7], sum(v))


@dataclass(frozen=True)
class CpuWindow:
    busy_pct: float  # of all CPUs, tasks + irq
    steal_pct: float
    other_pct: float  # tasks that are not ours: other work disturbing the measurement

    @property
    def disturbance(self) -> float:
        return self.other_pct + self.steal_pct

    @staticmethod
    def between(a: CpuSample, b: CpuSample, ours_s: float = 0.0) -> CpuWindow:
        total = max(b.total - a.total, 1)
        tasks_s = (b.tasks - a.tasks) / CLK_TCK
        other = max(tasks_s - ours_s, 0.0) * CLK_TCK
        return CpuWindow(
            100 * (b.tasks - a.tasks + b.irq - a.irq) / total,
            100 * (b.steal - a.steal) / total,
            100 * other / total,
        )


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the pid, it names one
    process for good (pids get reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def child_pid(parent: int, name: str) -> int | None:
    """The child process of `parent` whose command line mentions `name`."""
    found = child_pids(parent, name)
    return found[0] if found else None


def child_pids(parent: int, name: str) -> list[int]:
    """The child processes of `parent` whose command lines mention `name`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == parent and name in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
    return sorted(pids)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the Prometheus samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


# ---- Envoy processes -----------------------------------------------------------------


def _socket(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _hcm(
    stat_prefix: str, routes: list[dict[str, Any]], filters: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [
                *filters,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                        "Router"
                    },
                },
            ],
        },
    }


def _bootstrap(
    admin_port: int, listen_port: int, hcm: dict[str, Any], clusters: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "admin": {"address": _socket(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "listener",
                    "address": _socket(listen_port),
                    "filter_chains": [{"filters": [hcm]}],
                }
            ],
            "clusters": clusters,
        },
    }


def upstream_bootstrap(admin_port: int, listen_port: int) -> dict[str, Any]:
    json_header = {
        "header": {"key": "content-type", "value": "application/json"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
    routes = [
        {
            "match": {
                "path": CHAT_PATH,
                "headers": [{"name": ":method", "string_match": {"exact": "POST"}}],
            },
            # Envoy adds content-length to direct responses itself.
            "direct_response": {
                "status": 200,
                "body": {"inline_string": FAKE_COMPLETION_BYTES.decode()},
            },
            "response_headers_to_add": [json_header],
        },
        {
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 404,
                "body": {"inline_string": '{"error":{"message":"not found","type":"bench"}}'},
            },
            "response_headers_to_add": [json_header],
        },
    ]
    # The buffer filter holds the request until its body has fully arrived, so the
    # direct response comes after the whole request has been read: the upstream
    # connection stays reusable (see the module docstring).
    buffer = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 1 << 20,
        },
    }
    return _bootstrap(admin_port, listen_port, _hcm(UPSTREAM_PREFIX, routes, [buffer]), [])


def bare_bootstrap(admin_port: int, listen_port: int, upstream_port: int) -> dict[str, Any]:
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": BARE_CLUSTER, "timeout": "15s"}}]
    cluster = {
        "name": BARE_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": BARE_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(upstream_port)}}]}],
        },
    }
    return _bootstrap(admin_port, listen_port, _hcm("bare", routes, []), [cluster])


class Envoy:
    """An Envoy subprocess from a bootstrap dict, with its admin stats."""

    def __init__(
        self,
        name: str,
        bootstrap: dict[str, Any],
        admin_port: int,
        listen_port: int,
        concurrency: int,
        workdir: Path,
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.admin_port = admin_port
        self.listen_port = listen_port
        self.concurrency = concurrency
        self.workdir = workdir
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def start(self) -> Envoy:
        config = self.workdir / f"{self.name}.json"
        config.write_text(json.dumps(self.bootstrap))
        args = [
            envoy_binary(),
            "-c",
            str(config),
            "--disable-hot-restart",
            # Several Envoys run at once: each needs its own shared-memory base id.
            "--base-id",
            str(self.admin_port),
            "-l",
            "warning",
            "--concurrency",
            str(self.concurrency),
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        admin = f"http://127.0.0.1:{self.admin_port}/ready"
        wait_until(
            f"envoy {self.name}",
            lambda: http("GET", admin, timeout=1)[0] == 200,
            self.proc,
            self.log,
            20,
        )
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def stats(self) -> dict[str, int]:
        return envoy_stats(self.admin_port)


def envoy_stats(admin_port: int) -> dict[str, int]:
    status, _, body = http("GET", f"http://127.0.0.1:{admin_port}/stats", timeout=5)
    if status != 200:
        raise BenchError(f"envoy admin :{admin_port}/stats answered {status}")
    out: dict[str, int] = {}
    for line in body.decode().splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.isdigit():
            out[name] = int(value)
    return out


class Gateway:
    """`edge-agent run` (Envoy + agent) with one provider pointing at the fake upstream."""

    def __init__(
        self,
        upstream_port: int,
        concurrency: int,
        workdir: Path,
        semantic: bool = True,
        chain: bool = False,
        auth: bool = False,
        redis: str | None = None,
        limits: bool = False,
        jwt: bool = False,
        workers: int = 1,
        observe: str | None = None,
        span_sink: int | None = None,
        redact: bool = False,
    ) -> None:
        self.ports = {k: free_port() for k in ("envoy", "grpc", "admin", "envoy_admin")}
        self.workers = workers
        # With auth: every request carries a virtual key of the one tenant.
        self.key = BENCH_KEY if auth else None
        self.config = {
            "listen": {k: f"127.0.0.1:{p}" for k, p in self.ports.items()},
            # "gateway ready" is logged at info, and so is one line per request (the
            # default; observe="quiet" turns it off).
            "providers": [
                {
                    "name": PROVIDER,
                    "type": "openai_compatible",
                    "base_url": f"http://127.0.0.1:{upstream_port}",
                    "models": [{"name": "gpt-4o-mini"}],
                }
            ],
            "models": [{"name": MODEL, "targets": [f"{PROVIDER}/gpt-4o-mini"]}],
            # Room for every unique prompt of the miss scenario, so nothing is evicted.
            "cache": {
                "exact": {"enabled": True, "max_entries": 1_000_000, "ttl_s": 3600},
                # On by default: every cacheable miss is embedded and searched.
                "semantic": {"enabled": semantic},
            },
            "envoy": {"concurrency": concurrency, "log_level": "warning"},
            "workers": workers,
        }
        self.config["log_level"] = "info"
        if observe == "quiet":
            self.config["telemetry"] = {"request_log": False}
        elif observe == "all":
            # Every signal on: traces of every request (sampled at 100 %) to a local
            # sink, Envoy's access log to a file, JSON request log lines.
            self.config["log_format"] = "json"
            self.config["telemetry"] = {
                "tracing": {"enabled": True, "endpoint": f"http://127.0.0.1:{span_sink}"}
            }
            self.config["envoy"]["access_log"] = {
                "enabled": True,
                "path": str(workdir / "access.log"),
            }
        if redact:
            # Every prompt scanned for personal data (each entity type but PERSON).
            self.config["guardrails"] = {"pii": {"action": "redact"}}
        if auth:
            self.config["auth"] = {"required": True}
            sha = hashlib.sha256(BENCH_KEY.encode()).hexdigest()
            tenant: dict[str, Any] = {"name": "bench", "keys": [{"name": "wrk", "sha256": sha}]}
            if limits:
                # Every limit on, none ever reached: the cost of checking, not of refusing.
                tenant["limits"] = {
                    "requests_per_minute": 10**9,
                    "tokens_per_minute": 10**12,
                    "concurrent_requests": 10**6,
                }
                tenant["budget"] = {"usd_per_day": 10**9, "usd_per_month": 10**9}
            self.config["tenants"] = [tenant]
        if jwt:
            # An RS256 token from a key set in a file: the JWT check per request.
            self.config["auth"] = {
                "required": True,
                "jwt": [
                    {
                        "issuer": "https://bench.invalid/",
                        "jwks_file": str(bench_jwks(workdir)[0]),
                        "audiences": ["bench"],
                    }
                ],
            }
            self.config["tenants"] = [{"name": "bench"}]
            self.key = bench_jwks(workdir)[1]
        if redis is not None:
            # A prefix of this run's own: nothing from an earlier run is read.
            self.redis_prefix = f"bench-{os.getpid()}-{time.time_ns()}"
            self.config["cache"]["redis"] = {"url": redis, "key_prefix": self.redis_prefix}
        if chain:
            # Two targets, failover on (the default): every request goes through the
            # chain cluster, the agent filtering the attempt as an upstream filter too.
            backup = {**self.config["providers"][0], "name": BACKUP}
            self.config["providers"].append(backup)
            self.config["models"] = [
                {
                    "name": MODEL,
                    "strategy": "priority",
                    "targets": [f"{PROVIDER}/gpt-4o-mini", f"{BACKUP}/gpt-4o-mini"],
                }
            ]
        self.workdir = workdir
        self.log = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.envoy_pid: int | None = None
        self.envoy_started: int | None = None
        self.agent_pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['envoy']}"

    @property
    def envoy_admin_port(self) -> int:
        return self.ports["envoy_admin"]

    def start(self) -> Gateway:
        path = self.workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        admin = f"http://127.0.0.1:{self.ports['admin']}/readyz"
        envoy_ready = f"http://127.0.0.1:{self.envoy_admin_port}/ready"
        wait_until(
            "edge-agent run",
            lambda: (
                "gateway ready" in self.log.read_text(errors="replace")
                and http("GET", admin, timeout=1)[0] == 200
                and http("GET", envoy_ready, timeout=1)[0] == 200
            ),
            self.proc,
            self.log,
            40,
        )
        self.envoy_pid = child_pid(self.proc.pid, "envoy")
        self.envoy_started = start_time(self.envoy_pid) if self.envoy_pid else None
        # The gateway supervises the agent in child processes (`edge-agent serve`).
        proc = self.proc
        wait_until(
            "every agent worker",
            lambda: len(child_pids(proc.pid, "serve")) == self.workers,
            proc,
            self.log,
            20,
        )
        self.agent_pids = child_pids(proc.pid, "serve")
        self.agent_pid = self.agent_pids[0]
        return self

    def stop(self) -> None:
        stop_process(self.proc, grace_s=15)

    def forget_redis(self) -> None:
        """Delete what the run wrote to Redis (its own prefix)."""
        url = self.config["cache"].get("redis", {}).get("url")
        if url is None:
            return
        import redis

        with redis.Redis.from_url(url) as r:
            for pattern in (f"{self.redis_prefix}:*", f"{{{self.redis_prefix}:*"):
                for key in r.scan_iter(match=pattern, count=1000):
                    r.delete(key)
        # If the agent had to be killed, its Envoy child is orphaned: stop it too, but
        # only if that pid is still this gateway's Envoy (pids get reused).
        pid = self.envoy_pid
        if pid is not None and self.envoy_started is not None:
            with contextlib.suppress(OSError):
                if start_time(pid) == self.envoy_started:
                    os.kill(pid, signal.SIGTERM)

    def metrics(self) -> str:
        status, _, body = http("GET", f"http://127.0.0.1:{self.ports['admin']}/metrics")
        if status != 200:
            raise BenchError(f"agent /metrics answered {status}")
        return body.decode()

    def cache_counts(self) -> dict[str, float]:
        text = self.metrics()
        counts = {
            r: metric_sum(text, "edge_agent_cache_results_total", result=r)
            for r in ("hit", "miss", "bypass")
        }
        counts["stored"] = metric_sum(text, "edge_agent_cache_stores_total", outcome="stored")
        # The agent's own time in its ext_proc handlers (not gRPC), and how many
        # ext_proc messages it answered: shows where its CPU goes.
        counts["handler_s"] = metric_sum(text, "edge_agent_ext_proc_phase_seconds_sum")
        counts["messages"] = metric_sum(text, "edge_agent_ext_proc_phase_seconds_count")
        return counts


class SpanSink:
    """An OTLP/gRPC trace endpoint that takes every export and parses nothing (what a
    collector costs is not the agent's): the spans leave the agent for real."""

    def __init__(self) -> None:
        import grpc

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            # An empty message is an empty ExportTraceServiceResponse.
            {"Export": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")},
        )
        from concurrent.futures import ThreadPoolExecutor

        self.server = grpc.server(ThreadPoolExecutor(max_workers=2), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def start(self) -> SpanSink:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(0)


# ---- wrk -----------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu_s: float  # wrk's own CPU time

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


class Wrk:
    def __init__(self, binary: str, connections: int, threads: int, workdir: Path) -> None:
        self.binary = binary
        self.connections = connections
        self.threads = threads
        self.script = workdir / "chat.lua"
        self.script.write_text(
            WRK_LUA.replace("@PREFIX@", BODY_PREFIX)
            .replace("@SUFFIX@", BODY_SUFFIX)
            .replace("@FILE_PREFIX@", bench_prompts.PREFIX)
            .replace("@FILE_SUFFIX@", bench_prompts.SUFFIX)
        )

    def with_connections(self, connections: int) -> Wrk:
        """The same load generator with fewer connections (one thread per connection)."""
        return Wrk(self.binary, connections, min(self.threads, connections), self.script.parent)

    def run(
        self, url: str, duration_s: float, mode: str, tag: str, key: str | None = None
    ) -> WrkResult:
        args = [
            self.binary,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(duration_s))}s",
            "--latency",
            "--timeout",
            "5s",
            "-s",
            str(self.script),
            url + CHAT_PATH,
            mode,
            tag,
            key or "-",
            str(self.threads),
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            proc = subprocess.run(
                args, capture_output=True, text=True, timeout=duration_s + 30, check=False
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk did not finish within {duration_s + 30:.0f} s") from None
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), "")
        if proc.returncode != 0 or not line:
            raise BenchError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        raw = json.loads(line.partition(" ")[2])
        return WrkResult(
            requests=raw["requests"],
            duration_s=raw["duration_us"] / 1e6,
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            mean_ms=raw["mean_us"] / 1000,
            max_ms=raw["max_us"] / 1000,
            errors={k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
            cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        )


def request_body(prompt_id: str) -> bytes:
    return (BODY_PREFIX + prompt_id + BODY_SUFFIX).encode()


# ---- scenarios -----------------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    title: str
    wrk: WrkResult | None = None
    cpu_us: dict[str, float] = field(default_factory=dict)  # CPU µs per request, by process
    cpu: CpuWindow = field(default_factory=lambda: CpuWindow(0.0, 0.0, 0.0))
    upstream_rq: int = 0  # requests the fake upstream received in the measured window
    upstream_cx: int = 0  # connections the proxy opened to it in the window
    cache: dict[str, float] = field(default_factory=dict)  # agent counter deltas
    failures: list[str] = field(default_factory=list)
    windows: int = 1  # measured windows run (more than one when disturbed)
    # Paired rounds: this scenario's req/s over the baseline's in the same round.
    ratios: list[float] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)


@dataclass
class Settings:
    duration_s: float
    warmup_s: float
    connections: int
    threads: int
    envoy_concurrency: int
    upstream_concurrency: int
    retries: int
    redis_url: str | None = None  # the limits scenarios' Redis; None: they are skipped
    single_s: float = 5.0  # seconds of each one-connection (added latency) scenario


class Bench:
    def __init__(self, settings: Settings, wrk: Wrk, upstream: Envoy, workdir: Path) -> None:
        self.s = settings
        self.wrk = wrk
        self.upstream = upstream
        self.workdir = workdir
        self.nonce = f"{int(time.time())}"  # prompts differ from any earlier run's
        self.single = wrk.with_connections(1)  # added latency: one request at a time
        self._pool: bench_prompts.QuestionPool | None = None

    @property
    def pool(self) -> bench_prompts.QuestionPool:
        if self._pool is None:
            self._pool = bench_prompts.QuestionPool(self.workdir)
        return self._pool

    def _prompts(self, wrk: Wrk, duration_s: float) -> str:
        # Enough for 2,000 req/s, above any miss with the semantic tier on here (~1,100);
        # a faster machine that runs out repeats a prompt, and the miss checks say so.
        try:
            return str(self.pool.take(int(2_000 * duration_s) + 100))
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None

    def _upstream_requests(self) -> int:
        return self.upstream.stats().get(f"http.{UPSTREAM_PREFIX}.downstream_rq_total", 0)

    def measure(
        self,
        key: str,
        title: str,
        url: str,
        mode: str,
        tag: str,
        pids: dict[str, int],
        proxy_admin: int | None = None,
        cluster: str | None = None,
        counters: Callable[[], dict[str, float]] | None = None,
        verify: Callable[[Scenario], None] | None = None,
        api_key: str | None = None,
        single: bool = False,
    ) -> Scenario:
        """Warm up, then measure; measure again if other work disturbed the window.

        On a shared machine another process can take a core for a few seconds; the
        least disturbed window is kept. Every window is verified, and a failed check in
        any of them fails the run. `mode` "file": distinct Quora questions, fresh ones
        for every window. `single`: one connection (added latency, not throughput).
        """
        wrk = self.single if single else self.wrk
        duration_s = self.s.single_s if single else self.s.duration_s
        warmup_s = min(self.s.warmup_s, 1.0) if single else self.s.warmup_s
        if warmup_s > 0:
            # Unique prompts: a warm-up must not pre-store the measured run's prompts.
            # Same prompt: warm up on exactly the cached body.
            warm_tag = tag if mode == "same" else f"warm-{tag}"
            if mode == "file":
                warm_tag = self._prompts(wrk, warmup_s)
            wrk.run(url, warmup_s, mode, warm_tag, api_key)
        best: Scenario | None = None
        failures: list[str] = []
        for attempt in range(1 + self.s.retries):
            # A retry of a unique-prompt run needs fresh prompts, or it would hit.
            run_tag = tag if attempt == 0 or mode == "same" else f"{tag}-r{attempt}"
            if mode == "file":
                run_tag = self._prompts(wrk, duration_s)
            sc = Scenario(key, title)
            self._window(
                sc,
                wrk,
                duration_s,
                url,
                mode,
                run_tag,
                pids,
                proxy_admin,
                cluster,
                counters,
                api_key,
            )
            if verify is not None:
                verify(sc)
            failures += [f"window {attempt + 1}: {m}" if attempt else m for m in sc.failures]
            if best is None or sc.cpu.disturbance < best.cpu.disturbance:
                best = sc
            if sc.cpu.disturbance <= DISTURBED_PCT or attempt == self.s.retries:
                break
            print(
                f"  {sc.cpu.disturbance:.0f}% of the CPU went to other work during the "
                f"{title} window; measuring again",
                flush=True,
            )
        assert best is not None
        best.failures = failures
        best.windows = attempt + 1
        return best

    def _window(
        self,
        sc: Scenario,
        wrk: Wrk,
        duration_s: float,
        url: str,
        mode: str,
        tag: str,
        pids: dict[str, int],
        proxy_admin: int | None,
        cluster: str | None,
        counters: Callable[[], dict[str, float]] | None,
        api_key: str | None = None,
    ) -> None:
        """One measured wrk run with CPU, upstream and agent accounting around it."""
        proxy0 = envoy_stats(proxy_admin) if proxy_admin else {}
        counts0 = counters() if counters else {}
        up0 = self._upstream_requests()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        busy0 = CpuSample.now()
        result = wrk.run(url, duration_s, mode, tag, api_key)
        busy1 = CpuSample.now()
        cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(0.2)  # let requests still in flight when wrk stopped finish
        sc.wrk = result
        n = max(result.requests, 1)
        sc.cpu_us = {name: (cpu1[name] - cpu0[name]) / n * 1e6 for name in pids}
        for name in [k for k in sc.cpu_us if k.startswith("agent_")]:
            sc.cpu_us["agent"] += sc.cpu_us.pop(name)  # every worker is the agent
        sc.cpu_us["wrk"] = result.cpu_s / n * 1e6
        ours_s = sum(cpu1[k] - cpu0[k] for k in pids) + result.cpu_s
        sc.cpu = CpuWindow.between(busy0, busy1, ours_s)
        sc.upstream_rq = self._upstream_requests() - up0
        if counters:
            counts1 = counters()
            sc.cache = {k: counts1[k] - counts0[k] for k in counts1}
        if proxy_admin and cluster:
            proxy1 = envoy_stats(proxy_admin)
            sc.upstream_cx = proxy1.get(f"cluster.{cluster}.upstream_cx_total", 0) - proxy0.get(
                f"cluster.{cluster}.upstream_cx_total", 0
            )
        errors = {k: v for k, v in result.errors.items() if v}
        sc.check(result.requests > 0, "wrk completed no requests")
        sc.check(not errors.get("status"), f"{errors.get('status')} non-2xx responses")
        other = {k: v for k, v in errors.items() if k != "status"}
        sc.check(not other, f"socket errors: {other}")

    def check_reuse(self, sc: Scenario) -> None:
        # With reuse, new upstream connections stay near the connection count; the §6
        # trap shows up as one connection per request.
        limit = max(4 * self.s.connections, sc.upstream_rq // 100)
        sc.check(
            sc.upstream_cx <= limit,
            f"upstream connections not reused: {sc.upstream_cx} new connections for "
            f"{sc.upstream_rq} requests",
        )

    def check_upstream_count(self, sc: Scenario) -> None:
        assert sc.wrk is not None
        n = sc.wrk.requests
        # wrk counts completed responses only; up to one request per connection was
        # still in flight when it stopped.
        slack = 2 * self.s.connections
        sc.check(
            n <= sc.upstream_rq <= n + slack,
            f"upstream received {sc.upstream_rq} requests for {n} completed ones",
        )

    def run_direct(self) -> Scenario:
        return self.measure(
            "direct",
            "fake upstream alone (reference)",
            self.upstream.url,
            "unique",
            f"direct-{self.nonce}",
            {"upstream": self._pid(self.upstream)},
            verify=self.check_upstream_count,
        )

    def run_bare(self) -> list[Scenario]:
        admin, port = free_port(), free_port()
        envoy = Envoy(
            "bare",
            bare_bootstrap(admin, port, self.upstream.listen_port),
            admin,
            port,
            self.s.envoy_concurrency,
            self.workdir,
        )
        try:
            envoy.start()
            status, headers, body = http("POST", envoy.url + CHAT_PATH, request_body("probe"))
            if (
                status != 200
                or body != FAKE_COMPLETION_BYTES
                or headers.get("content-type") != "application/json"
            ):
                raise BenchError(f"bare Envoy probe: {status} {headers} {body[:200]!r}")
            pids = {"envoy": self._pid(envoy), "upstream": self._pid(self.upstream)}

            def verify(sc: Scenario) -> None:
                self.check_upstream_count(sc)
                self.check_reuse(sc)

            return [
                self.measure(
                    "bare_c1" if single else "bare",
                    "bare Envoy" + (", 1 connection" if single else ""),
                    envoy.url,
                    "unique",
                    f"bare-{self.nonce}",
                    pids,
                    admin,
                    BARE_CLUSTER,
                    verify=verify,
                    single=single,
                )
                for single in (False, True)
            ]
        finally:
            envoy.stop()

    def run_gateway(
        self, semantic: bool = True, auth: bool = False, jwt: bool = False, workers: int = 1
    ) -> list[Scenario]:
        """Miss and hit with the default config; with semantic=False, the miss only (with
        auth: every request carries a virtual key the agent checks; jwt: an RS256 token)."""
        gw = Gateway(
            self.upstream.listen_port,
            self.s.envoy_concurrency,
            self.workdir,
            semantic,
            auth=auth,
            jwt=jwt,
            workers=workers,
        )
        try:
            pids = self._start_gateway(gw)

            def verify_miss(sc: Scenario) -> None:
                self._check_cache(sc, expect="miss")
                self.check_upstream_count(sc)
                self.check_reuse(sc)

            key = "miss_jwt" if jwt else "miss_auth" if auth else "miss_exact"
            if workers > 1:
                key = f"miss_exact_w{workers}"
            if semantic:
                key = "miss"
            title = (
                "Envoy + agent, cache miss"
                + (
                    " (default config: exact + semantic tiers)"
                    if semantic
                    else " (exact tier only)"
                )
                + (", callers authenticated by virtual key" if auth else "")
                + (", callers authenticated by an RS256 JWT" if jwt else "")
                + (f", {workers} agent workers" if workers > 1 else "")
            )
            rows: list[Scenario] = []

            def miss(key: str, title: str, mode: str = "unique", single: int = 0) -> None:
                rows.append(
                    self.measure(
                        key,
                        title,
                        gw.url,
                        mode,
                        f"{key}-{self.nonce}",
                        pids,
                        gw.envoy_admin_port,
                        PROVIDER,
                        gw.cache_counts,
                        verify_miss,
                        gw.key,
                        single=bool(single),
                    )
                )

            if semantic:
                # Distinct questions on many topics first (what real traffic looks like),
                # then the near-duplicate prompts (each a candidate the verifier refuses).
                miss("miss_qqp", f"{title}, distinct Quora questions", "file")
                miss(key, f"{title}, near-duplicate prompts")
                miss(
                    "miss_qqp_c1", f"{title}, distinct Quora questions, 1 connection", "file", True
                )
            else:
                miss(key, title)
                if not (auth or jwt or workers > 1):
                    miss("miss_exact_c1", f"{title}, 1 connection", single=True)
            if not semantic:
                return rows

            # One request stores the answer; the second proves it is now served as a hit.
            body = request_body(f"hit-{self.nonce}")
            for expected in ("miss", "hit"):
                status, headers, _ = http("POST", gw.url + CHAT_PATH, body)
                got = headers.get("x-edge-agent-cache")
                if status != 200 or got != expected:
                    raise BenchError(f"hit warm-up: expected 200/{expected}, got {status}/{got}")

            def verify_hit(sc: Scenario) -> None:
                self._check_cache(sc, expect="hit")
                assert sc.wrk is not None
                # Zero is expected; allow a trace in case of a stray retry, never a share.
                sc.check(
                    sc.upstream_rq <= sc.wrk.requests // 1000,
                    f"the upstream received {sc.upstream_rq} requests during the hit run",
                )

            for single in (False, True):
                rows.append(
                    self.measure(
                        "hit_c1" if single else "hit",
                        "Envoy + agent, cache hit" + (", 1 connection" if single else ""),
                        gw.url,
                        "same",
                        f"hit-{self.nonce}",
                        pids,
                        gw.envoy_admin_port,
                        PROVIDER,
                        gw.cache_counts,
                        verify_hit,
                        single=single,
                    )
                )
        finally:
            gw.stop()
        return rows

    def _miss(
        self,
        gw: Gateway,
        pids: dict[str, int],
        key: str,
        title: str,
        verify: Callable[[Scenario], None],
        cluster: str = PROVIDER,
    ) -> Scenario:
        """One window of unique-prompt misses through `gw` (its key, if it has one)."""
        return self.measure(
            key,
            title,
            gw.url,
            "unique",
            f"{key}-{self.nonce}",
            pids,
            gw.envoy_admin_port,
            cluster,
            gw.cache_counts,
            verify,
            gw.key,
        )

    def run_redis(self, limits: bool) -> Scenario:
        """Misses with virtual keys and the shared Redis tier, with or without every limit
        and budget on (Redis-backed): what the limits cost, against the same miss."""
        gw = Gateway(
            self.upstream.listen_port,
            self.s.envoy_concurrency,
            self.workdir,
            False,
            auth=True,
            redis=self.s.redis_url,
            limits=limits,
        )
        try:
            pids = self._start_gateway(gw)

            def verify(sc: Scenario) -> None:
                self._check_cache(sc, expect="miss", admitted=limits)
                self.check_upstream_count(sc)
                self.check_reuse(sc)

            return self._miss(
                gw,
                pids,
                "miss_limits" if limits else "miss_redis",
                "Envoy + agent, cache miss (exact tier + Redis), virtual keys"
                + (", every limit and budget on (Redis-backed)" if limits else ""),
                verify,
            )
        finally:
            gw.stop()
            gw.forget_redis()

    def run_null(self) -> list[Scenario]:
        """The floor: the gateway's own Envoy config in front of a do-nothing grpc.aio
        ext_proc server (bench/null_extproc.py) instead of the agent, a miss's four
        messages and a hit's two."""
        from edge_agent.config import parse_config
        from edge_agent.envoy.bootstrap import build_bootstrap

        gw = Gateway(self.upstream.listen_port, self.s.envoy_concurrency, self.workdir, False)
        config = parse_config(gw.config)
        envoy = Envoy(
            "null",
            build_bootstrap(config, environ={}),
            gw.envoy_admin_port,
            gw.ports["envoy"],
            self.s.envoy_concurrency,
            self.workdir,
        )
        log = self.workdir / "null_extproc.log"
        script = Path(__file__).resolve().parent / "null_extproc.py"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    str(gw.ports["grpc"]),
                    config.envoy.routing_header,
                    PROVIDER,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until("null ext_proc", lambda: "ready" in log.read_text(), server, log, 20)
            envoy.start()
            for body, expect in (
                (request_body("probe"), FAKE_COMPLETION_BYTES),
                (request_body(f"hit-{self.nonce}"), None),
            ):
                status, _, answer = http("POST", envoy.url + CHAT_PATH, body)
                if status != 200 or (expect is not None and answer != expect):
                    raise BenchError(f"null ext_proc probe: {status} {answer[:200]!r}")
            pids = {
                "envoy": self._pid(envoy),
                "agent": server.pid,
                "upstream": self._pid(self.upstream),
            }

            def verify_miss(sc: Scenario) -> None:
                self.check_upstream_count(sc)
                self.check_reuse(sc)

            def verify_hit(sc: Scenario) -> None:
                sc.check(sc.upstream_rq == 0, f"the upstream received {sc.upstream_rq} requests")

            miss = self.measure(
                "null",
                "Envoy + do-nothing Python ext_proc (grpc.aio), a miss's 4 messages",
                envoy.url,
                "unique",
                f"null-{self.nonce}",
                pids,
                gw.envoy_admin_port,
                PROVIDER,
                verify=verify_miss,
            )
            rows = [miss]
            for single in (False, True):
                rows.append(
                    self.measure(
                        "null_hit_c1" if single else "null_hit",
                        "Envoy + do-nothing Python ext_proc (grpc.aio), a hit's 2 messages"
                        + (", 1 connection" if single else ""),
                        envoy.url,
                        "same",
                        f"hit-{self.nonce}",
                        pids,
                        verify=verify_hit,
                        single=single,
                    )
                )
            rows.append(
                self.measure(
                    "null_c1",
                    "Envoy + do-nothing Python ext_proc (grpc.aio), a miss's 4 messages, "
                    "1 connection",
                    envoy.url,
                    "unique",
                    f"null1-{self.nonce}",
                    pids,
                    gw.envoy_admin_port,
                    PROVIDER,
                    verify=verify_miss,
                    single=True,
                )
            )
            return rows
        finally:
            envoy.stop()
            stop_process(server)

    def run_chain(self) -> Scenario:
        """Misses through a failover chain whose first target answers: what the chain's
        per-attempt agent pass costs, against the plain exact-tier miss."""
        gw = Gateway(
            self.upstream.listen_port, self.s.envoy_concurrency, self.workdir, False, chain=True
        )
        try:
            pids = self._start_gateway(gw)
            before = envoy_stats(gw.envoy_admin_port)

            def verify(sc: Scenario) -> None:
                self._check_cache(sc, expect="miss")
                self.check_upstream_count(sc)
                self.check_reuse(sc)
                after = envoy_stats(gw.envoy_admin_port)
                key = f"cluster.{CHAIN_FIRST_MEMBER}.upstream_rq_total"
                through_chain = after.get(key, 0) - before.get(key, 0)
                assert sc.wrk is not None
                sc.check(
                    through_chain >= sc.wrk.requests,
                    f"{through_chain} requests went through {CHAIN_CLUSTER} (its first "
                    f"member, {CHAIN_FIRST_MEMBER}) for {sc.wrk.requests} completed ones",
                )
                retried = sum(
                    after.get(f"cluster.{c}.upstream_rq_retry", 0)
                    for c in (CHAIN_CLUSTER, CHAIN_FIRST_MEMBER)
                )
                sc.check(retried == 0, f"{retried} attempts were retried (the first target failed)")

            return self._miss(
                gw,
                pids,
                "miss_chain",
                "Envoy + agent, cache miss through a failover chain (exact tier only)",
                verify,
                CHAIN_CLUSTER,
            )
        finally:
            gw.stop()

    def run_observe(self) -> list[Scenario]:
        """The exact-tier miss without the per-request log line, and with every signal on
        (traces, Envoy's access log, JSON logs): what observability costs, against the
        plain exact-tier miss (its request log line on, the default)."""
        rows = []
        sink = SpanSink().start()
        try:
            for observe in ("quiet", "all"):
                gw = Gateway(
                    self.upstream.listen_port,
                    self.s.envoy_concurrency,
                    self.workdir,
                    False,
                    observe=observe,
                    span_sink=sink.port,
                )
                try:
                    pids = self._start_gateway(gw)
                    exported = metric_sum(
                        gw.metrics(), "edge_agent_trace_spans_total", outcome="exported"
                    )

                    def verify(
                        sc: Scenario,
                        gw: Gateway = gw,
                        observe: str = observe,
                        exported: float = exported,
                    ) -> None:
                        self._check_cache(sc, expect="miss")
                        self.check_upstream_count(sc)
                        assert sc.wrk is not None
                        if observe == "all":
                            time.sleep(1.5)  # the last batch of spans leaves within a second
                        text = gw.metrics()
                        spans = (
                            metric_sum(text, "edge_agent_trace_spans_total", outcome="exported")
                            - exported
                        )
                        logged = gw.log.read_text(errors="replace").count("edge_agent.requests")
                        if observe == "quiet":
                            sc.check(logged == 0, f"{logged} request log lines with it off")
                            return
                        # Each request: its own span, the cache lookup and the provider call.
                        sc.check(
                            spans >= sc.wrk.requests * 3 * 0.9,
                            f"{spans:.0f} spans exported for {sc.wrk.requests} requests",
                        )
                        access = gw.workdir / "access.log"
                        lines = access.read_text().count("\n") if access.exists() else 0
                        sc.check(lines > 0, "no access log line written")
                        sc.check(logged > 0, "no request log line written")

                    key = "miss_quiet" if observe == "quiet" else "miss_observed"
                    title = (
                        "Envoy + agent, cache miss (exact tier only), request log off"
                        if observe == "quiet"
                        else "Envoy + agent, cache miss (exact tier only), traces (100 % "
                        "sampled) + access log + JSON logs"
                    )
                    rows.append(self._miss(gw, pids, key, title, verify))
                finally:
                    gw.stop()
        finally:
            sink.stop()
        return rows

    def run_redact(self) -> Scenario:
        """The exact-tier miss with `guardrails.pii.action: redact`: what scanning every
        prompt for personal data costs, against the exact-tier miss (off) of the run."""
        gw = Gateway(
            self.upstream.listen_port, self.s.envoy_concurrency, self.workdir, False, redact=True
        )
        try:
            pids = self._start_gateway(gw)

            def verify(sc: Scenario) -> None:
                self._check_cache(sc, expect="miss")
                self.check_upstream_count(sc)
                # Scanned, and the bench's prompts hold no personal data: nothing redacted.
                found = metric_sum(gw.metrics(), "edge_agent_guardrail_findings_total")
                sc.check(found == 0, f"{found:.0f} findings in prompts that hold none")

            return self._miss(
                gw,
                pids,
                "miss_redact",
                "Envoy + agent, cache miss (exact tier only), PII redaction on",
                verify,
            )
        finally:
            gw.stop()

    def run_paired(self, rounds: int = 3, window_s: float = 5.0) -> list[Scenario]:
        """The default config against the exact tier alone, in alternating windows.

        A shared machine's speed drifts over minutes (every process's CPU per request,
        wrk's and the fake upstream's too, can rise by a fifth for one window), so
        a ratio of two windows measured minutes apart can be off by as much. Here both
        gateways run side by side; each round measures the exact-only miss, then the
        default config with distinct questions and with near-duplicate prompts, and the
        ratios are taken within the round. The goals use their median.
        """
        exact = Gateway(self.upstream.listen_port, self.s.envoy_concurrency, self.workdir, False)
        default = Gateway(self.upstream.listen_port, self.s.envoy_concurrency, self.workdir, True)
        started: list[Gateway] = []
        try:
            plans = []
            for gw, runs in (
                (exact, [("pair_exact", "unique", "exact tier only")]),
                (
                    default,
                    [
                        ("pair_qqp", "file", "default config, distinct Quora questions"),
                        ("pair_near", "unique", "default config, near-duplicate prompts"),
                    ],
                ),
            ):
                pids = self._start_gateway(gw)
                started.append(gw)
                for key, mode, _ in runs:  # warm up each once, on prompts of its own
                    warm = self._prompts(self.wrk, self.s.warmup_s) if mode == "file" else key
                    self.wrk.run(
                        gw.url, self.s.warmup_s, mode, f"warm-{warm}" if mode != "file" else warm
                    )
                plans += [(gw, pids, *run) for run in runs]
            windows: dict[str, list[Scenario]] = {key: [] for _, _, key, _, _ in plans}
            for n in range(rounds):
                for gw, pids, key, mode, what in plans:
                    sc = Scenario(key, f"Envoy + agent, cache miss ({what}), paired rounds")
                    tag = (
                        self._prompts(self.wrk, window_s)
                        if mode == "file"
                        else f"{key}-{n}-{self.nonce}"
                    )
                    self._window(
                        sc,
                        self.wrk,
                        window_s,
                        gw.url,
                        mode,
                        tag,
                        pids,
                        gw.envoy_admin_port,
                        PROVIDER,
                        gw.cache_counts,
                    )
                    self._check_cache(sc, expect="miss")
                    self.check_upstream_count(sc)
                    windows[key].append(sc)
            base = [sc.wrk.rps if sc.wrk else 0.0 for sc in windows["pair_exact"]]
            rows = []
            for scs in windows.values():
                ratios = [
                    (sc.wrk.rps if sc.wrk else 0.0) / b if b else 0.0
                    for sc, b in zip(scs, base, strict=True)
                ]
                # The row shown is the median window; every window's checks count.
                ordered = sorted(scs, key=lambda sc: sc.wrk.rps if sc.wrk else 0.0)
                row = ordered[len(ordered) // 2]
                row.failures = [f for sc in scs for f in sc.failures]
                row.windows = len(scs)
                row.ratios = ratios
                rows.append(row)
            return rows
        finally:
            for gw in started:
                gw.stop()

    def _start_gateway(self, gw: Gateway) -> dict[str, int]:
        """Start it, check one answer; the processes whose CPU the scenario counts."""
        gw.start()
        if gw.envoy_pid is None or gw.agent_pid is None:
            raise BenchError("could not find the Envoy and the agent started by edge-agent run")
        assert gw.proc is not None
        pids = {
            "envoy": gw.envoy_pid,
            "agent": gw.agent_pid,
            # Further workers: their CPU is added to the agent's (see _window).
            **{f"agent_{i}": pid for i, pid in enumerate(gw.agent_pids[1:], 1)},
            "supervisor": gw.proc.pid,  # idle while serving; counted in the totals
            "upstream": self._pid(self.upstream),
        }
        self._probe_gateway(gw)
        return pids

    def _probe_gateway(self, gw: Gateway) -> None:
        status, headers, body = http(
            "POST", gw.url + CHAT_PATH, request_body(f"p-{self.nonce}"), key=gw.key
        )
        answer = json.loads(body) if status == 200 else None
        if (
            status != 200
            or headers.get("x-edge-agent-cache") != "miss"
            or answer is None
            or answer.get("choices") != FAKE_COMPLETION["choices"]
        ):
            raise BenchError(f"gateway probe: {status} {headers} {body[:300]!r}\n{tail(gw.log)}")

    def _check_cache(self, sc: Scenario, expect: str, admitted: bool = False) -> None:
        """`admitted`: requests wait for an admission before the cache lookup, so those
        wrk cuts off at its end while they wait count as 'bypass' (at most one per
        connection)."""
        assert sc.wrk is not None
        n = sc.wrk.requests
        slack = 2 * self.s.connections
        other = "hit" if expect == "miss" else "miss"
        got = sc.cache.get(expect, 0)
        sc.check(n <= got <= n + slack, f"{got:.0f} cache results '{expect}' for {n} requests")
        for unexpected in (other, "bypass"):
            count = sc.cache.get(unexpected, 0)
            allowed = self.s.connections if admitted and unexpected == "bypass" else 0
            sc.check(count <= allowed, f"{count:.0f} cache results '{unexpected}'")
        if expect == "miss":
            stored = sc.cache.get("stored", 0)
            sc.check(n <= stored <= n + slack, f"{stored:.0f} answers stored for {n} misses")

    @staticmethod
    def _pid(envoy: Envoy) -> int:
        assert envoy.proc is not None
        return envoy.proc.pid


# ---- report --------------------------------------------------------------------------


def bench_jwks(workdir: Path) -> tuple[Path, str]:
    """(a JWKS file, an RS256 token it verifies), made once per run."""
    path = workdir / "jwks.json"
    token_path = workdir / "token.txt"
    if path.exists():
        return path, token_path.read_text()
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "bench", "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {
        "iss": "https://bench.invalid/",
        "aud": "bench",
        "sub": "wrk",
        "tenant": "bench",
        "iat": now,
        "exp": now + 86400,
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
    token_path.write_text(token)
    return path, token


def redis_reachable(url: str) -> str | None:
    if url == "none":
        return None
    try:
        import redis

        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as r:
            r.ping()
    except Exception:
        return None
    return url


def envoy_version() -> str:
    out = subprocess.run(
        [envoy_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    m = re.search(r"version: \S+?/([\d.]+)/", out)
    return m.group(1) if m else out.strip()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def idle_check(seconds: float = 1.0) -> float:
    """How busy the machine is before we start (other work skews every number)."""
    b0 = CpuSample.now()
    time.sleep(seconds)
    window = CpuWindow.between(b0, CpuSample.now())
    return window.busy_pct + window.steal_pct


def machine_info(s: Settings, busy_before: float) -> dict[str, str]:
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": cpu_model(),
        "Envoy": envoy_version(),
        "Envoy concurrency (bare and gateway)": str(s.envoy_concurrency),
        "Fake upstream": f"Envoy direct_response, concurrency {s.upstream_concurrency}",
        "Load": f"wrk, {s.threads} threads, {s.connections} connections, "
        f"{s.warmup_s:g} s warm-up + {s.duration_s:g} s per scenario",
        "Python": platform.python_version(),
        "CPU busy before start": f"{busy_before:.0f}%",
    }


def results_table(rows: list[Scenario]) -> str:
    bare = next(r for r in rows if r.key == "bare").wrk
    assert bare is not None
    lines = [
        "| scenario | req/s | p50 ms | p99 ms | req/s ratio vs bare (same connections) "
        "| p50 added vs bare (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    single = next((r.wrk for r in rows if r.key == "bare_c1"), None)
    for r in rows:
        w = r.wrk
        assert w is not None
        # One-connection rows against bare Envoy at one connection.
        base = single if r.key.endswith("_c1") and single is not None else bare
        ratio = w.rps / base.rps if base.rps else 0.0
        lines.append(
            f"| {r.title} | {w.rps:,.0f} | {w.p50_ms:.2f} | {w.p99_ms:.2f} | "
            f"{ratio:.3f} | {w.p50_ms - base.p50_ms:+.2f} |"
        )
    return "\n".join(lines)


def checks_table(rows: list[Scenario]) -> str:
    lines = [
        "| scenario | requests | non-2xx | cache hit / miss / stored | upstream requests "
        "| new upstream connections | windows |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        w = r.wrk
        assert w is not None
        cache = "{hit:.0f} / {miss:.0f} / {stored:.0f}".format(**r.cache) if r.cache else "-"
        cx = str(r.upstream_cx) if r.key != "direct" else "-"
        lines.append(
            f"| {r.title} | {w.requests:,} | {w.errors['status']} | {cache} | "
            f"{r.upstream_rq:,} | {cx} | {r.windows} |"
        )
    return "\n".join(lines)


def cost_table(rows: list[Scenario]) -> str:
    lines = [
        "| scenario | CPU busy | other procs | steal | CPU µs/req: wrk | Envoy | agent "
        "| upstream | agent handlers µs/req | ext_proc msgs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w = r.wrk
        assert w is not None
        n = max(w.requests, 1)
        cpu = " | ".join(
            f"{r.cpu_us[k]:.0f}" if k in r.cpu_us else "-"
            for k in ("wrk", "envoy", "agent", "upstream")
        )
        handlers = f"{r.cache['handler_s'] / n * 1e6:.0f}" if r.cache else "-"
        msgs = f"{r.cache['messages'] / n:.2f}" if r.cache else "-"
        lines.append(
            f"| {r.title} | {r.cpu.busy_pct:.0f}% | {r.cpu.other_pct:.0f}% | "
            f"{r.cpu.steal_pct:.0f}% | {cpu} | "
            f"{handlers} | {msgs} |"
        )
    return "\n".join(lines)


# The performance goals (issue 15), from scenarios of the same run: (what, scenario,
# baseline, goal, kind, the do-nothing ext_proc server's scenario for the same messages).
GOALS: tuple[tuple[str, str, str, float, str, str | None], ...] = (
    (
        "default-config miss (distinct questions) ÷ exact-only miss, req/s: median of "
        "paired rounds",
        "pair_qqp",
        "pair_exact",
        0.7,
        "paired",
        None,
    ),
    (
        "default-config miss (near-duplicate prompts) ÷ exact-only miss, req/s: median of "
        "paired rounds",
        "pair_near",
        "pair_exact",
        0.7,
        "paired",
        None,
    ),
    ("exact-only miss ÷ bare Envoy, req/s", "miss_exact", "bare", 0.15, "ratio", "null"),
    ("hit ÷ bare Envoy, req/s", "hit", "bare", 0.25, "ratio", "null_hit"),
    (
        "exact-only miss, p50 added at 1 connection (ms)",
        "miss_exact_c1",
        "bare_c1",
        1.0,
        "added",
        "null_c1",
    ),
    ("hit, p50 added at 1 connection (ms)", "hit_c1", "bare_c1", 0.6, "added", "null_hit_c1"),
    (
        "default-config miss (distinct questions), p50 added at 1 connection (ms)",
        "miss_qqp_c1",
        "bare_c1",
        4.0,
        "added",
        None,
    ),
    (
        "agent CPU per request, 2 workers ÷ 1 worker (exact-only miss)",
        "miss_exact_w2",
        "miss_exact",
        1.1,
        "cpu",
        None,
    ),
)


def goals_table(rows: list[Scenario]) -> str:
    by = {r.key: r for r in rows if r.wrk is not None}

    def value(num: str, base: str, kind: str) -> float | None:
        ra, rb = by.get(num), by.get(base)
        if ra is None or rb is None or ra.wrk is None or rb.wrk is None:
            return None
        a, b = ra.wrk, rb.wrk
        if kind == "paired":
            ratios = sorted(ra.ratios)
            return ratios[len(ratios) // 2] if ratios else None
        if kind == "cpu":
            base_cpu = rb.cpu_us.get("agent", 0.0)
            return ra.cpu_us.get("agent", 0.0) / base_cpu if base_cpu else 0.0
        if kind == "ratio":
            return a.rps / b.rps if b.rps else 0.0
        return a.p50_ms - b.p50_ms

    lines = [
        "| goal (issue 15) | measured | target | met | do-nothing ext_proc, same messages |",
        "|---|---:|---:|---|---:|",
    ]
    for what, num, base, goal, kind, floor_key in GOALS:
        got = value(num, base, kind)
        if got is None:
            continue
        floor = value(floor_key, base, kind) if floor_key else None
        if kind in ("ratio", "paired"):
            met, target, fmt = got >= goal, f"≥ {goal:g}", "{:.2f}"
        elif kind == "cpu":
            met, target, fmt = got <= goal, f"≤ {goal:g}", "{:.2f}"
        else:
            met, target, fmt = got <= goal, f"≤ +{goal:g}", "{:+.2f}"
        shown_floor = fmt.format(floor) if floor is not None else "-"
        shown = fmt.format(got)
        if kind == "paired":  # every round's ratio, in order
            shown += " (rounds: " + ", ".join(f"{r:.2f}" for r in by[num].ratios) + ")"
        lines.append(
            f"| {what} | {shown} | {target} | {'yes' if met else '**no**'} | {shown_floor} |"
        )
    return "\n".join(lines)


def agent_cost_note(rows: list[Scenario]) -> str:
    by = {r.key: r for r in rows}
    notes = []
    for key in ("miss", "hit"):
        r = by.get(key)
        if r and r.wrk and "agent" in r.cpu_us:
            notes.append(
                f"{key}: the agent process spent {r.cpu_us['agent']:.0f} µs CPU per "
                f"request ({r.wrk.rps * r.cpu_us['agent'] / 1e4:.0f}% of one core)"
            )
    return "; ".join(notes)


def the_command() -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(ROOT)
    script = Path(__file__).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return shlex.join([str(python), str(script), *sys.argv[1:]])


def disturbed(rows: list[Scenario]) -> list[str]:
    return [r.title for r in rows if r.cpu.disturbance > DISTURBED_PCT]


def disturbed_warning(rows: list[Scenario]) -> str:
    names = disturbed(rows)
    if not names:
        return ""
    return (
        f"Warning: other processes or the hypervisor took more than {DISTURBED_PCT}% of the "
        f"CPU during: {', '.join(names)}. Those numbers are low; rerun on a quiet machine."
    )


def render(rows: list[Scenario], info: dict[str, str], when: str) -> str:
    info_lines = "\n".join(f"- {k}: {v}" for k, v in info.items())
    warning = disturbed_warning(rows)
    return (
        f"Run {when} with:\n\n```\n{the_command()}\n```\n\n{info_lines}\n\n"
        f"{results_table(rows)}\n\n"
        f"Goals, as ratios within this run (1-connection rows against bare Envoy at 1 "
        f"connection):\n\n{goals_table(rows)}\n\n"
        + (f"**{warning}**\n\n" if warning else "")
        + f"Checks, measured window only:\n\n{checks_table(rows)}\n\n"
        f"Where the CPU went, measured window only:\n\n{cost_table(rows)}\n\n"
        f"{agent_cost_note(rows)}.\n"
    )


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else ""
    start, end = text.find(DOCS_START), text.find(DOCS_END)
    if start < 0 or end < start:
        raise BenchError(f"{DOCS} has no {DOCS_START} ... {DOCS_END} section to rewrite")
    DOCS.write_text(text[: start + len(DOCS_START)] + "\n" + section + text[end:])


# ---- main ----------------------------------------------------------------------------


STEP_IDS = (
    "direct",
    "bare",
    "default",
    "exact",
    "auth",
    "jwt",
    "redis",
    "limits",
    "chain",
    "observe",
    "guardrails",
    "null",
    "workers",
    "paired",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, help="seconds per scenario (10; --quick: 3)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per scenario (2; --quick: 1)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument(
        "--envoy-concurrency",
        type=int,
        default=2,
        help="worker threads of the bare and the gateway Envoy (2)",
    )
    p.add_argument(
        "--upstream-concurrency",
        type=int,
        default=1,
        help="worker threads of the fake upstream Envoy (1)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s per scenario, 1 s warm-up")
    p.add_argument(
        "--no-direct",
        action="store_true",
        help="skip the reference row that loads the fake upstream alone",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help=f"rewrite the results section of {DOCS.relative_to(ROOT)}",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help=f"measure a scenario again when other work took over {DISTURBED_PCT}%% of the "
        "CPU during its window (1)",
    )
    p.add_argument(
        "--redis",
        default=os.environ.get("EDGE_AGENT_REDIS_URL", "redis://127.0.0.1:6379/0"),
        metavar="URL",
        help="Redis for the limits scenarios (default $EDGE_AGENT_REDIS_URL or "
        "127.0.0.1:6379); 'none' skips them",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--only",
        type=lambda v: set(v.split(",")),
        metavar="STEPS",
        help="run only these steps (comma-separated; bare always runs): " + ", ".join(STEP_IDS),
    )
    args = p.parse_args(argv)
    if args.only and (unknown := args.only - set(STEP_IDS)):
        p.error(f"--only: unknown steps {sorted(unknown)}; choose from {', '.join(STEP_IDS)}")
    if args.only and args.write_docs:
        p.error("--write-docs needs every step: leave out --only")
    # --quick changes the defaults only: an explicit --duration/--warmup still wins.
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.duration < 1 or args.connections < args.threads or args.threads < 1:
        p.error("need --duration >= 1 and --connections >= --threads >= 1")
    if args.retries < 0:
        p.error("--retries must be >= 0")
    return args


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as d:
        yield Path(d)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        print(
            "gateway_bench: the load generator 'wrk' is not on PATH; install it with "
            "`apt-get install wrk` (Debian/Ubuntu)",
            file=sys.stderr,
        )
        return 2
    s = Settings(
        args.duration,
        args.warmup,
        args.connections,
        args.threads,
        args.envoy_concurrency,
        args.upstream_concurrency,
        args.retries,
        redis_reachable(args.redis),
    )
    busy_before = idle_check()
    info = machine_info(s, busy_before)
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    if busy_before > 15:
        print(
            f"warning: the machine was {busy_before:.0f}% busy before the benchmark; "
            "other work lowers every number",
            file=sys.stderr,
        )

    rows: list[Scenario] = []
    t0 = time.monotonic()
    with workdir() as tmp:
        admin, port = free_port(), free_port()
        upstream = Envoy(
            "upstream", upstream_bootstrap(admin, port), admin, port, s.upstream_concurrency, tmp
        )
        wrk = Wrk(wrk_bin, s.connections, s.threads, tmp)
        try:
            upstream.start()
            bench = Bench(s, wrk, upstream, tmp)
            steps: list[tuple[str, str, Callable[[], list[Scenario]]]] = [
                ("direct", "the fake upstream alone", lambda: [bench.run_direct()]),
                ("bare", "bare Envoy", lambda: bench.run_bare()),
                ("default", "gateway, default config", lambda: bench.run_gateway()),
                ("exact", "gateway, exact tier only", lambda: bench.run_gateway(semantic=False)),
                (
                    "auth",
                    "gateway, exact tier only, virtual keys",
                    lambda: bench.run_gateway(semantic=False, auth=True),
                ),
                (
                    "jwt",
                    "gateway, exact tier only, JWT",
                    lambda: bench.run_gateway(semantic=False, jwt=True),
                ),
                (
                    "redis",
                    "gateway, Redis, virtual keys",
                    lambda: [bench.run_redis(limits=False)],
                ),
                ("limits", "gateway, Redis, limits on", lambda: [bench.run_redis(limits=True)]),
                ("chain", "gateway, failover chain", lambda: [bench.run_chain()]),
                ("observe", "gateway, request log off / every signal on", bench.run_observe),
                ("guardrails", "gateway, PII redaction", lambda: [bench.run_redact()]),
                (
                    "paired",
                    "exact-only and default config in alternating rounds",
                    lambda: bench.run_paired(),
                ),
                ("null", "do-nothing ext_proc server (the floor)", lambda: bench.run_null()),
                (
                    "workers",
                    "gateway, exact tier only, 2 agent workers",
                    lambda: bench.run_gateway(semantic=False, workers=2),
                ),
            ]
            if s.redis_url is None:
                print("no Redis reachable: the limits scenarios are skipped", flush=True)
            for step_id, name, step in steps:
                skipped = (
                    (step_id == "direct" and args.no_direct)
                    or (step_id in ("redis", "limits") and s.redis_url is None)
                    or (args.only and step_id not in args.only and step_id != "bare")
                )
                if skipped:
                    continue
                print(f"running {name} ...", flush=True)
                rows.extend(step())
        except BenchError as exc:
            print(f"FAIL: {exc}", file=sys.stderr)
            return 1
        finally:
            upstream.stop()

    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # Reference row last: the three scenarios the ratios are about come first.
    order = [
        "bare",
        "miss_exact",
        "miss_qqp",
        "miss",
        "hit",
        "miss_auth",
        "miss_jwt",
        "miss_redis",
        "miss_limits",
        "miss_chain",
        "miss_quiet",
        "miss_observed",
        "miss_redact",
        "pair_exact",
        "pair_qqp",
        "pair_near",
        "miss_exact_w2",
        "null",
        "null_hit",
        "bare_c1",
        "miss_exact_c1",
        "miss_qqp_c1",
        "hit_c1",
        "null_c1",
        "null_hit_c1",
        "direct",
    ]
    rows.sort(key=lambda r: order.index(r.key))
    print(
        f"\n{results_table(rows)}\n\n{goals_table(rows)}\n\n{checks_table(rows)}\n\n"
        f"{cost_table(rows)}\n\n"
        f"{agent_cost_note(rows)}"
    )
    print(f"(total {time.monotonic() - t0:.0f} s)")
    # Not a failure (the scenarios did what they claim), but the numbers are low.
    if warning := disturbed_warning(rows):
        print(warning, file=sys.stderr)
    failures = [f"{r.title}: {msg}" for r in rows for msg in r.failures]
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "when": when,
                    "command": the_command(),
                    "machine": info,
                    "scenarios": [
                        {
                            "key": r.key,
                            "title": r.title,
                            "rps": r.wrk.rps if r.wrk else 0,
                            "wrk": r.wrk.__dict__ if r.wrk else None,
                            "cpu_us": r.cpu_us,
                            "cpu_window": r.cpu.__dict__,
                            "upstream_requests": r.upstream_rq,
                            "upstream_connections": r.upstream_cx,
                            "cache": r.cache,
                            "failures": r.failures,
                            "windows": r.windows,
                        }
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
    if failures:
        print(
            "\nFAIL: a scenario did not do what it claims:\n  " + "\n  ".join(failures),
            file=sys.stderr,
        )
        return 1
    if args.write_docs:
        write_docs(render(rows, info, when))
        print(f"updated {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
