"""`/admin/keys` on the admin port: make, list and revoke virtual keys at run time.

Every call needs the admin token (or loopback without one, as the other changes): a
listing names tenants and keys, and a POST answers a working key.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from edge_agent.identity.keystore import KeyStore, KeyStoreError
from edge_agent.identity.settings import DEFAULT_TENANT
from edge_agent.identity.tenants import Tenants
from edge_agent.limits.settings import Budget, Limits
from edge_agent.runtime.admin import AdminAccess, change_refusal

_NAME = re.compile(r"^[\w.@:-]{1,64}$")
_MAX_LIFETIME_S = 10 * 365 * 86400


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _expiry(value: Any, now: float) -> float | None:
    """Unix seconds from a number or an ISO 8601 time; ValueError says what is wrong."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expires_at: expected unix seconds or an ISO 8601 time")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expires_at: not an ISO 8601 time: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            raise ValueError("expires_at: give a time zone (e.g. 2027-01-31T00:00:00Z)")
        at = parsed.timestamp()
    else:
        try:
            at = float(value)
        except OverflowError:
            at = math.inf
    if not math.isfinite(at) or at > now + _MAX_LIFETIME_S:
        raise ValueError("expires_at: expected a time within ten years")
    if at <= now:
        raise ValueError("expires_at: that time has passed")
    return at


def _own(model: type[Limits] | type[Budget], value: Any, where: str) -> dict[str, Any] | None:
    """A key's own limits or budget, validated as in the config; None when not given."""
    if value is None:
        return None
    try:
        parsed = model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise ValueError(
            f"{where}.{path}: {first['msg']}" if path else f"{where}: {first['msg']}"
        ) from None
    return parsed.model_dump(exclude_none=True) or None


def add_key_routes(
    app: web.Application, store: KeyStore, tenants: Tenants, admin_token: AdminAccess
) -> None:
    async def create(request: web.Request) -> web.Response:
        refusal = change_refusal(request, admin_token)
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            return _bad('send a JSON object: {"tenant": "...", "name": "...", "expires_at": ...}')
        if not isinstance(body, dict):
            return _bad("send a JSON object")
        unknown = set(body) - {"tenant", "name", "expires_at", "limits", "budget"}
        if unknown:
            return _bad(f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
        tenant, name = body.get("tenant"), body.get("name")
        if not isinstance(tenant, str) or (tenant not in tenants and tenant != DEFAULT_TENANT):
            known = ", ".join([*tenants.names, DEFAULT_TENANT])
            return _bad(f"tenant: expected one of the configured tenants ({known})")
        if not isinstance(name, str) or not _NAME.match(name):
            return _bad("name: 1-64 letters, digits or any of _ . @ : -")
        try:
            limits = _own(Limits, body.get("limits"), "limits")
            budget = _own(Budget, body.get("budget"), "budget")
            expires_at = _expiry(body.get("expires_at"), store.now())
            secret, record = await store.create(tenant, name, expires_at, limits, budget)
        except ValueError as exc:
            return _bad(str(exc))
        except KeyStoreError as exc:
            return _bad(str(exc), 503 if store.shared else 409)
        # The only time the key is shown: it is not kept anywhere.
        return web.json_response({**record.public(None), "key": secret}, status=201)

    async def listing(request: web.Request) -> web.Response:
        refusal = change_refusal(request, admin_token)
        if refusal is not None:
            return refusal
        try:
            return web.json_response({"keys": await store.listing()})
        except KeyStoreError as exc:
            return _bad(str(exc), 503)

    async def revoke(request: web.Request) -> web.Response:
        refusal = change_refusal(request, admin_token)
        if refusal is not None:
            return refusal
        key_id = request.match_info["key_id"]
        if key_id.startswith("config:"):
            return _bad("keys from the config are revoked by removing them from the config", 409)
        try:
            record = await store.revoke(key_id)
        except KeyStoreError as exc:
            return _bad(str(exc), 409 if not store.shared else 503)
        if record is None:
            return _bad(f"no key with id {key_id[:40]!r}", 404)
        return web.json_response({"revoked": record.public(None)})

    app.router.add_post("/admin/keys", create)
    app.router.add_get("/admin/keys", listing)
    app.router.add_delete("/admin/keys/{key_id}", revoke)
