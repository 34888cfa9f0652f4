"""The admin HTTP server (aiohttp): health, readiness, Prometheus metrics, routing state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def build_admin_app(
    registry: CollectorRegistry,
    is_ready: Callable[[], bool],
    routing: Callable[[], dict[str, Any]] | None = None,
    *,
    before_scrape: Callable[[], None] | None = None,
    readiness: Callable[[], dict[str, Any]] | None = None,
) -> web.Application:
    """`registry` is what /metrics exposes (with workers: the merge of every worker's
    files); `before_scrape` refreshes values computed on demand; `readiness` adds
    details (e.g. how many workers serve, which one answered) to /readyz."""

    async def healthz(_: web.Request) -> web.Response:
        # Alive as long as the event loop answers.
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        detail = readiness() if readiness is not None else {}
        if is_ready():
            return web.json_response({"status": "ready", **detail})
        return web.json_response(
            {
                "status": "not ready",
                "reason": "the ext_proc gRPC server is not serving",
                **detail,
            },
            status=503,
        )

    async def metrics(_: web.Request) -> web.Response:
        if before_scrape is not None:
            before_scrape()
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def admin_routing(_: web.Request) -> web.Response:
        # Strategies, and each target's breaker state, cooldown and latency averages.
        return web.json_response(routing() if routing is not None else {})

    app = web.Application()
    app.router.add_get("/admin/routing", admin_routing)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
