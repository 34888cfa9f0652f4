"""`edge-agent keys create | list | revoke | hash`: virtual keys from a shell.

create/list/revoke call the running agent's admin API (`/admin/keys` on listen.admin,
with the token that admin.token_env names), so they work the same with and without
Redis; `hash` needs nothing running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from edge_agent.config import Config
from edge_agent.identity.keys import hash_key, new_secret


def add_parser(sub: Any, add: Any) -> None:
    p = add("keys", "Make, list and revoke virtual API keys (docs/security.md).")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = keys.add_parser("create", help="make a key for a tenant (shown once)")
    c.add_argument("--tenant", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--expires-at", metavar="TIME", help="unix seconds or ISO 8601 with zone")
    c.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help="the key's own limit, on top of its tenant's (requests_per_minute, "
        "tokens_per_minute, concurrent_requests); repeatable",
    )
    c.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="NAME=USD",
        help="the key's own budget (usd_per_day, usd_per_month); repeatable",
    )
    keys.add_parser("list", help="the keys: ids, names, tenants, last use (never the keys)")
    r = keys.add_parser("revoke", help="revoke a key by id")
    r.add_argument("key_id")
    h = keys.add_parser(
        "hash", help="the config line for a static key (a new key, or one read from stdin)"
    )
    h.add_argument("--name", default="my-key", help="the key's name in the config line")
    h.add_argument("--stdin", action="store_true", help="hash the key given on stdin")
    for q in (c, keys.choices["list"], r):
        q.add_argument(
            "--admin-url", metavar="URL", help="the agent's admin URL (default: listen.admin)"
        )
        # Also after the action (`keys create --config F`); SUPPRESS keeps a --config
        # given before the action.
        q.add_argument(
            "--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="YAML config"
        )


def cmd_keys(args: argparse.Namespace, config: Config | None) -> int:
    if args.keys_command == "hash":
        return _hash(args)
    if config is None:
        return 2
    if args.keys_command == "create":
        body: dict[str, Any] = {"tenant": args.tenant, "name": args.name}
        for field, pairs in (("limits", args.limit), ("budget", args.budget)):
            values = {}
            for pair in pairs:
                name, _, value = pair.partition("=")
                try:
                    values[name] = float(value) if field == "budget" else int(value)
                except ValueError:
                    print(
                        f"error: --{field.rstrip('s')} {pair}: expected NAME=NUMBER",
                        file=sys.stderr,
                    )
                    return 2
            if values:
                body[field] = values
        if args.expires_at:
            at = args.expires_at
            body["expires_at"] = float(at) if at.replace(".", "", 1).isdigit() else at
        status, answer = _call(config, args, "POST", "/admin/keys", body)
        if status == 201:
            print(f"key: {answer['key']}")
            print(f"id: {answer['id']}  (shown once: the gateway keeps only its hash)")
            return 0
    elif args.keys_command == "list":
        status, answer = _call(config, args, "GET", "/admin/keys")
        if status == 200:
            print(json.dumps(answer["keys"], indent=2))
            return 0
    else:
        key_id = urllib.parse.quote(args.key_id, safe="")
        status, answer = _call(config, args, "DELETE", f"/admin/keys/{key_id}")
        if status == 200:
            print(f"revoked {args.key_id}")
            return 0
    print(f"error ({status}): {answer.get('error', answer)}", file=sys.stderr)
    return 1


def _hash(args: argparse.Namespace) -> int:
    if args.stdin:
        secret = sys.stdin.readline().strip()
        if not secret:
            print("error: no key on stdin", file=sys.stderr)
            return 1
    else:
        secret = new_secret()
        print(f"# the key (give it to the caller; it is not shown again): {secret}")
    print(f'- {{name: {args.name}, sha256: "{hash_key(secret)}"}}')
    return 0


def _call(
    config: Config,
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    base = args.admin_url
    if not base:
        host, port = config.listen.addr("admin")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        base = f"http://{host}:{port}"
    headers = {"content-type": "application/json"}
    var = config.admin.token_env
    if var and os.environ.get(var):
        headers["authorization"] = f"Bearer {os.environ[var].strip()}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base.rstrip("/") + path, data, headers, method=method)
    # No proxies: the admin token and a new key go to the agent and nowhere else.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": f"cannot reach the agent's admin API at {base}: {exc}"}
