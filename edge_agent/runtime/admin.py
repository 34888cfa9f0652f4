"""The admin HTTP server (aiohttp): health, readiness, Prometheus metrics, routing state."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from edge_agent.identity.settings import pod_workload

if TYPE_CHECKING:
    from edge_agent.audit.trail import Audit

_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    """What `DELETE /admin/cache` asked to drop (filters combine with AND)."""

    model: str | None = None
    key: str | None = None
    tenant: str | None = None
    everything: bool = False


Purge = Callable[[PurgeRequest], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class AdminAccess:
    """Who may change state: holders of `token` or, without one, loopback clients unless
    `loopback` is False (sidecar mode: the app shares the pod's loopback)."""

    token: str | None = None
    loopback: bool = True


def admin_access(token: str | None, environ: Mapping[str, str]) -> AdminAccess:
    """This process's rule: in sidecar mode (the injected pod variables are set, whatever
    auth is configured) the app shares the pod's loopback, so only a token may change
    state."""
    return AdminAccess(token, loopback=pod_workload(environ) is None)


def change_refusal(request: web.Request, access: AdminAccess | str | None) -> web.Response | None:
    """Why `request` may not change state, or None. With a token: a matching bearer token;
    without: loopback only (in Kubernetes the admin port also serves probes and scrapes
    from other pods, which must not purge caches)."""
    if not isinstance(access, AdminAccess):
        access = AdminAccess(access)
    token = access.token
    if token is not None:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode()):
            return None
        return web.json_response(
            {
                "error": "this admin endpoint needs 'Authorization: Bearer <admin token>' "
                "(the value of the variable admin.token_env names)"
            },
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        peer = ipaddress.ip_address(request.remote or "")
    except ValueError:
        peer = None
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    # Exactly 127.0.0.1 or ::1, not all of 127/8: an Istio sidecar hands inbound traffic
    # from other pods to the app from 127.0.0.6.
    if peer in _LOOPBACK and access.loopback:
        return None
    if not access.loopback:
        return web.json_response(
            {
                "error": "admin changes need admin.token_env here: in sidecar mode the app "
                "shares this pod's loopback"
            },
            status=403,
        )
    return web.json_response(
        {
            "error": "this admin endpoint answers loopback clients only; set admin.token_env to "
            "allow others with a bearer token"
        },
        status=403,
    )


def audit_admin_changes(audit: Audit, access: AdminAccess) -> Any:
    """A middleware writing one audit record per admin change that succeeded: what
    (method and path, the purge's scope, the key's tenant and name or id) and by whom
    (the admin token's holder, or the loopback peer). Never the key made."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if request.method not in ("POST", "DELETE", "PUT", "PATCH") or response.status >= 400:
            return response
        by = "admin token" if access.token is not None else f"loopback {request.remote}"
        details: dict[str, Any] = {"path": request.path}
        if request.path == "/admin/cache":
            details.update({k: v for k, v in request.query.items() if k in _PURGE_SCOPE})
        elif request.path == "/admin/keys":
            with contextlib.suppress(ValueError, AttributeError):
                body = await request.json()  # read before by the handler: cached
                details.update({k: body.get(k) for k in ("tenant", "name")})
        elif "key_id" in request.match_info:
            details["key_id"] = request.match_info["key_id"]
        action = {
            ("DELETE", "/admin/cache"): "cache purged",
            ("POST", "/admin/keys"): "key created",
        }.get((request.method, request.path), "key revoked" if "key_id" in details else "change")
        audit.admin(action, by, **details)
        return response

    return middleware


_PURGE_SCOPE = ("model", "key", "tenant", "all")


def build_admin_app(
    registry: CollectorRegistry,
    is_ready: Callable[[], bool],
    routing: Callable[[], dict[str, Any]] | None = None,
    *,
    before_scrape: Callable[[], None] | None = None,
    readiness: Callable[[], dict[str, Any]] | None = None,
    purge: Purge | None = None,
    admin_token: AdminAccess | str | None = None,
    envoy_ready_url: str | None = None,
) -> web.Application:
    """`registry` is what /metrics exposes (with workers: the merge of every worker's
    files); `before_scrape` refreshes values computed on demand; `readiness` adds
    details (e.g. how many workers serve, which one answered) to /readyz;
    `admin_token` guards the endpoints that change state (see change_refusal);
    `envoy_ready_url` (the standalone gateway: Envoy's admin /ready) makes readiness wait
    for Envoy too, so a pod is not sent traffic before Envoy listens."""

    async def healthz(_: web.Request) -> web.Response:
        # Alive as long as the event loop answers.
        return web.json_response({"status": "ok"})

    async def envoy_problem() -> str | None:
        if envoy_ready_url is None:
            return None
        try:
            timeout = ClientTimeout(total=0.5)
            async with (
                ClientSession(timeout=timeout) as session,
                session.get(envoy_ready_url) as resp,
            ):
                if resp.status == 200:
                    return None
                return f"Envoy is not ready ({envoy_ready_url} answered {resp.status})"
        except (OSError, TimeoutError, ClientError) as exc:
            return f"Envoy is not ready ({envoy_ready_url}: {exc.__class__.__name__})"

    async def readyz(_: web.Request) -> web.Response:
        detail = readiness() if readiness is not None else {}
        reason = None if is_ready() else "the ext_proc gRPC server is not serving"
        reason = reason or await envoy_problem()
        if reason is None:
            return web.json_response({"status": "ready", **detail})
        return web.json_response({"status": "not ready", "reason": reason, **detail}, status=503)

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
        # DELETE /admin/cache?model=M | ?key=K | ?tenant=T | ?all=true: drops matching
        # answers here and, through the shared tier, in every replica and worker.
        refusal = change_refusal(request, admin_token)
        if refusal is not None:
            return refusal
        q = request.query
        what = PurgeRequest(
            model=q.get("model") or None,
            key=q.get("key") or None,
            tenant=q.get("tenant") or None,
            everything=q.get("all", "").lower() in ("1", "true", "yes"),
        )
        if not (what.model or what.key or what.tenant or what.everything):
            return web.json_response(
                {
                    "error": "say what to purge: ?model=<client-facing model>, ?key=<cache "
                    "key> (the x-edge-agent-cache-key of an answer), ?tenant=<tenant>, or "
                    "?all=true"
                },
                status=400,
            )
        if purge is None:
            return web.json_response({"error": "no cache tiers are enabled"}, status=404)
        return web.json_response(await purge(what))

    app.router.add_get("/admin/routing", admin_routing)
    app.router.add_delete("/admin/cache", admin_cache)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
