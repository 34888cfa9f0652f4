"""A redis-py asyncio client from `cache.redis` (URL, Cluster, password variable), for
the adapters that keep state there besides the shared cache tier (keys, limits)."""

from __future__ import annotations

import os
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from edge_agent.config import RedisCache


def connect(cfg: RedisCache, timeout_s: float = 2.0) -> Redis | RedisCluster:
    assert cfg.url is not None
    opts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if cfg.password_env is not None and os.environ.get(cfg.password_env):
        opts["password"] = os.environ[cfg.password_env]
    if cfg.cluster:
        return RedisCluster.from_url(cfg.url, **opts)
    return Redis.from_url(cfg.url, **opts)
