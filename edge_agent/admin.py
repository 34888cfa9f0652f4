"""The admin HTTP server (aiohttp): health, readiness, Prometheus metrics, routing state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Purge = Callable[[str | None, str | None, bool], Awaitable[dict[str, Any]]]


def build_admin_app(
    registry: CollectorRegistry,
    is_ready: Callable[[], bool],
    routing: Callable[[], dict[str, Any]] | None = None,
    *,
    before_scrape: Callable[[], None] | None = None,
    readiness: Callable[[], dict[str, Any]] | None = None,
    purge: Purge | None = None,
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

    async def admin_cache(request: web.Request) -> web.Response:
        # DELETE /admin/cache?model=M | ?key=K | ?all=true: drops matching answers here
        # and, through the shared tier, in every replica and worker.
        q = request.query
        model, key = q.get("model") or None, q.get("key") or None
        everything = q.get("all", "").lower() in ("1", "true", "yes")
        if not (model or key or everything):
            return web.json_response(
                {
                    "error": "say what to purge: ?model=<client-facing model>, ?key=<cache "
                    "key> (the x-edge-agent-cache-key of an answer), or ?all=true"
                },
                status=400,
            )
        if purge is None:
            return web.json_response({"error": "no cache tiers are enabled"}, status=404)
        return web.json_response(await purge(model, key, everything))

    app.router.add_get("/admin/routing", admin_routing)
    app.router.add_delete("/admin/cache", admin_cache)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
