"""The agent process: the ext_proc gRPC server and the admin HTTP server on one loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import grpc
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from edge_agent.agent import Agent
from edge_agent.cache.shared import SharedCache
from edge_agent.config import ENVOY_READY_ENV, Config, credential_problems
from edge_agent.extproc.servicer import ExternalProcessor
from edge_agent.identity.keystore import KeyStore
from edge_agent.runtime.admin import (
    PurgeRequest,
    admin_access,
    audit_admin_changes,
    build_admin_app,
)
from edge_agent.runtime.admin_keys import add_key_routes
from edge_agent.runtime.admin_spend import add_spend_route
from edge_agent.runtime.wiring import build_agent
from edge_agent.runtime.workers import WorkerContext

log = logging.getLogger("edge_agent.runtime.service")


# How often a worker writes its computed gauges (cache sizes) for other workers' scrapes.
_GAUGE_REFRESH_S = 1.0
_WORKER_CONNECTION_AGE_S = float(os.environ.get("EDGE_AGENT_WORKER_CONNECTION_AGE_S", "30"))


class AgentService:
    """One agent process. `worker` is set when it is one of several worker processes:
    then it shares its ports with its siblings and is ready only when they all are.

    Per-process startup and shutdown work (every worker runs it) belongs in start()
    and stop(); the supervisor runs none of it.
    """

    def __init__(
        self, config: Config, agent: Agent | None = None, *, worker: WorkerContext | None = None
    ) -> None:
        self.config = config
        self.agent = agent or build_agent(config)
        self.worker = worker
        self.ready = False
        self._warming: asyncio.Future[None] | None = None
        self._grpc: grpc.aio.Server | None = None
        self._admin: web.AppRunner | None = None
        self._refresh: asyncio.Task[None] | None = None
        self.grpc_port = 0
        self.admin_port = 0
        identity = self.agent.identity
        if self.agent.limiter is not None and worker is not None:
            # While Redis does not answer, each worker enforces its share (--workers may
            # override the config's count: only the worker context knows it). Without
            # Redis at all each process keeps its own ledger whole (docs/limits.md).
            self.agent.limiter.share = 1.0 / worker.count
        self.keys: KeyStore | None = None
        if identity is not None:
            self.keys = KeyStore(
                identity.ring,
                client=self.agent.aux_redis,
                prefix=config.cache.redis.key_prefix,
                wall_clock=identity.wall_clock,
                single_process=worker is None or worker.count == 1,
            )

    def _worker_grpc_options(self) -> list[tuple[str, int]]:
        if self.worker is None:
            return []
        # The kernel assigns Envoy's long-lived HTTP/2 connections to workers once; a
        # restarted worker would get none until they are replaced. Ageing connections
        # out (GOAWAY, in-flight streams finish; gRPC adds jitter) re-spreads them.
        return [("grpc.max_connection_age_ms", int(_WORKER_CONNECTION_AGE_S * 1000))]

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        if self.worker is not None:
            self.worker.mark_ready(ready)

    def is_ready(self) -> bool:
        if self.worker is None:
            return self.ready
        return self.ready and self.worker.serving() >= self.worker.count

    def _readiness(self) -> dict[str, Any]:
        worker = self.worker
        if worker is None:
            return {}
        serving = worker.serving()
        detail: dict[str, Any] = {
            "worker": worker.index,
            "pid": os.getpid(),
            "workers": worker.count,
            "serving": serving,
        }
        if self.ready and serving < worker.count:
            detail["reason"] = f"{serving} of {worker.count} workers serve"
        return detail

    def _admin_token(self) -> str | None:
        var = self.config.admin.token_env
        if var is None:
            return None
        token = os.environ.get(var, "").strip()
        if not token:
            log.warning(
                "admin.token_env names %s, which is not set: admin changes are allowed from "
                "loopback only",
                var,
            )
            return None
        return token

    async def _purge(self, what: PurgeRequest) -> dict[str, Any]:
        agent = self.agent
        if agent.shared is not None:
            local, shared = await agent.shared.purge(
                model=what.model, key=what.key, tenant=what.tenant, everything=what.everything
            )
            return {"purged_here": local, "purged_in_redis": shared, "shared": True}
        local = 0
        if agent.cache is not None:
            local += agent.cache.purge(model=what.model, key=what.key, tenant=what.tenant)
        if agent.semantic is not None and what.key is None:
            local += agent.semantic.purge(model=what.model, tenant=what.tenant)
        return {"purged_here": local, "shared": False}

    async def _ready_when_warm(self, shared: SharedCache) -> None:
        await shared.wait_warm()
        self.set_ready(True)

    async def _refresh_gauges(self) -> None:
        while True:
            await asyncio.sleep(_GAUGE_REFRESH_S)
            self.agent.metrics.refresh()

    async def start(self) -> None:
        for provider, problem in credential_problems(self.config).items():
            log.warning(
                "provider %r is disabled: %s; requests for its models get 503", provider, problem
            )
        # Keys and signing keys before the first request: a restarted worker must not
        # refuse valid callers while they load.
        if self.keys is not None:
            await self.keys.start()
        if self.agent.identity is not None:
            await self.agent.identity.start()
        envoy = self.config.envoy
        # Bodies travel inside gRPC messages: allow the configured maximum plus framing.
        max_msg = max(envoy.max_request_bytes, envoy.max_response_bytes) + (1 << 20)
        server = grpc.aio.server(
            options=[
                # Workers share the port (the supervisor checked that it was free);
                # a lone agent must fail on a busy port, not silently split traffic.
                ("grpc.so_reuseport", 1 if self.worker is not None else 0),
                *self._worker_grpc_options(),
                ("grpc.max_receive_message_length", max_msg),
                ("grpc.max_send_message_length", max_msg),
            ]
        )
        pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(self.agent), server)
        grpc_addr = self.config.listen.grpc
        try:
            self.grpc_port = server.add_insecure_port(grpc_addr)
        except RuntimeError as exc:  # grpc reports a busy port this way
            raise OSError(
                f"cannot listen for gRPC on {grpc_addr} (listen.grpc): {exc}; is another "
                "agent running on that port?"
            ) from None
        await server.start()
        self._grpc = server

        host, port = self.config.listen.addr("admin")
        metrics = self.agent.metrics
        identity = self.agent.identity
        admin_token = admin_access(self._admin_token(), os.environ)
        app = build_admin_app(
            metrics.exposition_registry(),
            self.is_ready,
            self.agent.router.snapshot,
            before_scrape=metrics.refresh if metrics.multiprocess else None,
            readiness=self._readiness if self.worker is not None else None,
            purge=self._purge,
            admin_token=admin_token,
            # Set by the standalone gateway for its agent processes.
            envoy_ready_url=os.environ.get(ENVOY_READY_ENV) or None,
        )
        if identity is not None and self.keys is not None:
            add_key_routes(app, self.keys, identity.tenants, admin_token)
        if self.agent.limiter is not None:
            add_spend_route(app, self.agent.limiter, admin_token)
        if self.agent.audit is not None:
            app.middlewares.append(audit_admin_changes(self.agent.audit, admin_token))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=self.worker is not None or None)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            await server.stop(0)
            self._grpc = None
            raise OSError(
                f"cannot listen for the admin HTTP server on {host}:{port} (listen.admin): "
                f"{exc.strerror}"
            ) from None
        self._admin = runner
        server_sock = site._server.sockets[0] if site._server else None  # type: ignore[union-attr]
        self.admin_port = server_sock.getsockname()[1] if server_sock else port
        if metrics.multiprocess:
            self._refresh = asyncio.ensure_future(self._refresh_gauges())
        shared = self.agent.shared
        if shared is None:
            self.set_ready(True)
        else:
            # The shared tier connects in the background (Redis down must not stop the
            # agent); readiness waits for the warm start from Redis, however it ends.
            await shared.start()
            self._warming = asyncio.ensure_future(self._ready_when_warm(shared))
        log.info(
            "agent serving ext_proc on %s (gRPC), admin on http://%s:%d",
            grpc_addr,
            host,
            self.admin_port,
        )

    async def wait(self) -> None:
        assert self._grpc is not None
        await self._grpc.wait_for_termination()

    async def stop(self, grace_s: float = 2.0) -> None:
        self.set_ready(False)
        if self._warming is not None:
            self._warming.cancel()
            self._warming = None
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
            self._grpc = None
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
        if self.keys is not None:
            await self.keys.close()
        if self.agent.identity is not None:
            await self.agent.identity.close()
        if self.agent.limiter is not None:
            await self.agent.limiter.close()
        if self.agent.aux_redis is not None:
            await self.agent.aux_redis.aclose()
        if self.agent.shared is not None:
            await self.agent.shared.close()
        if self.agent.semantic is not None:
            await self.agent.semantic.close()
        if self.agent.audit is not None:
            self.agent.audit.close()
        for guard in (self.agent.guardrails, *self.agent.tenant_guardrails.values()):
            if guard is not None and guard.checker is not None:
                await guard.checker.close()
        tracing = self.agent.observer.tracing if self.agent.observer is not None else None
        if tracing is not None:
            await tracing.close(self.agent.config.telemetry.tracing.export_timeout_s + 1.0)
