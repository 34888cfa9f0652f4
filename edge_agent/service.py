"""The agent process: the ext_proc gRPC server and the admin HTTP server on one loop."""

from __future__ import annotations

import logging

import grpc
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from edge_agent.admin import build_admin_app
from edge_agent.agent import Agent
from edge_agent.config import Config, credential_problems
from edge_agent.server import ExternalProcessor

log = logging.getLogger("edge_agent.service")


class AgentService:
    def __init__(self, config: Config, agent: Agent | None = None) -> None:
        self.config = config
        self.agent = agent or Agent(config)
        self.ready = False
        self._grpc: grpc.aio.Server | None = None
        self._admin: web.AppRunner | None = None
        self.grpc_port = 0
        self.admin_port = 0

    async def start(self) -> None:
        for provider, problem in credential_problems(self.config).items():
            log.warning(
                "provider %r is disabled: %s; requests for its models get 503", provider, problem
            )
        envoy = self.config.envoy
        # Bodies travel inside gRPC messages: allow the configured maximum plus framing.
        max_msg = max(envoy.max_request_bytes, envoy.max_response_bytes) + (1 << 20)
        server = grpc.aio.server(
            options=[
                # One process per port until worker processes exist: a second agent on
                # the same port must fail, not silently split the traffic.
                ("grpc.so_reuseport", 0),
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
        app = build_admin_app(
            self.agent.metrics.registry, lambda: self.ready, self.agent.router.snapshot
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
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
        self.ready = True
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
        self.ready = False
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
            self._grpc = None
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
        if self.agent.semantic is not None:
            await self.agent.semantic.close()
