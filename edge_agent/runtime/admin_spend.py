"""`GET /admin/spend?tenant=&key=&since=YYYY-MM-DD` on the admin port: what each tenant
spent (tokens, cost, cache savings, requests) per key and model, and where its budgets
stand. From Redis when `cache.redis` is set (every replica), else this process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from edge_agent.identity.settings import DEFAULT_TENANT
from edge_agent.limits.limiter import Limiter
from edge_agent.limits.spend import MAX_DAYS
from edge_agent.runtime.admin import AdminAccess, change_refusal


def add_spend_route(app: web.Application, limiter: Limiter, access: AdminAccess) -> None:
    async def spend(request: web.Request) -> web.Response:
        # Spend names tenants, keys and models: the same guard as the changes.
        refusal = change_refusal(request, access)
        if refusal is not None:
            return refusal
        q = request.query
        now = limiter.clock()
        since_text = q.get("since")
        if since_text:
            try:
                since = datetime.strptime(since_text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
            except ValueError:
                return web.json_response(
                    {"error": "since: expected a UTC date, YYYY-MM-DD"}, status=400
                )
            if since > now or now - since > MAX_DAYS * 86400:
                return web.json_response(
                    {"error": f"since: within the last {MAX_DAYS} days"}, status=400
                )
        else:
            since = now
        known = list(dict.fromkeys([*limiter.tenants.names, DEFAULT_TENANT]))
        tenant = q.get("tenant")
        if tenant is not None and tenant not in known:
            return web.json_response(
                {"error": f"tenant: expected one of {', '.join(known)}"}, status=400
            )
        tenants = [tenant] if tenant else known
        try:
            rows = await limiter.spend.report(tenants, q.get("key") or None, since, now)
        except Exception as exc:  # Redis trouble: say so, never a bare 500
            return web.json_response(
                {"error": f"the spend records could not be read ({exc.__class__.__name__})"},
                status=503,
            )
        budgets: dict[str, Any] = {}
        for name in tenants:
            settings = limiter.tenants.get(name)
            if settings is None or not settings.budget.any:
                continue
            day, month = await limiter.spent(f"t:{name}")
            budgets[name] = {
                "usd_today": round(day, 6),
                "usd_this_month": round(month, 6),
                "usd_per_day": settings.budget.usd_per_day,
                "usd_per_month": settings.budget.usd_per_month,
            }
        day = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d")
        return web.json_response({"since": day, "rows": rows, "budgets": budgets})

    app.router.add_get("/admin/spend", spend)
