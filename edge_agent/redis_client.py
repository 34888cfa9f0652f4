"""redis-py asyncio clients from `cache.redis` (URL, Cluster, password variable): the
shared cache tier's, and the one client keys, limits and spend share in a process."""

from __future__ import annotations

import logging
import os
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from edge_agent.config import RedisCache

log = logging.getLogger("edge_agent.redis")


_said: set[str] = set()


def password(cfg: RedisCache) -> str | None:
    """The password from `password_env`; a named but unset variable is said once."""
    if cfg.password_env is None:
        return None
    value = os.environ.get(cfg.password_env) or None
    if value is None and cfg.password_env not in _said:
        _said.add(cfg.password_env)  # the shared tier and the other clients all ask
        log.warning(
            "cache.redis.password_env names %s, which is not set: connecting without a password",
            cfg.password_env,
        )
    return value


def connect(
    cfg: RedisCache,
    *,
    socket_timeout: float = 2.0,
    connect_timeout: float | None = None,
    retries: int | None = None,
    secret: str | None = None,
) -> Redis | RedisCluster:
    """A client; `secret` defaults to `password(cfg)` ("" for none), `retries` to
    redis-py's own."""
    assert cfg.url is not None
    opts: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout or socket_timeout,
    }
    if retries is not None:
        opts["retry"] = Retry(NoBackoff(), retries)
    secret = password(cfg) if secret is None else secret
    if secret:
        opts["password"] = secret
    if cfg.cluster:
        return RedisCluster.from_url(cfg.url, **opts)
    return Redis.from_url(cfg.url, **opts)
