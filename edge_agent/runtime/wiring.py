"""Builds one agent process's `Agent` with the tiers that need I/O to exist: the semantic
tier (loads the embedding model), the shared tier (a Redis client, started by the
service) and the JWT issuers' key fetcher."""

from __future__ import annotations

import os
from collections.abc import Mapping

from edge_agent.agent import Agent
from edge_agent.cache.semantic import build_semantic_tier
from edge_agent.cache.shared import SharedCache
from edge_agent.config import Config
from edge_agent.identity.jwks import JwksFetcher
from edge_agent.limits.redis_ledger import RedisLedger
from edge_agent.redis_client import connect


def build_agent(config: Config, environ: Mapping[str, str] | None = None) -> Agent:
    semantic = build_semantic_tier(config, environ) if config.cache.semantic.enabled else None
    agent = Agent(config, environ=environ, semantic=semantic)
    identity = agent.identity
    if identity is not None and identity.verifier is not None:
        identity.attach_jwks(JwksFetcher(identity.verifier))
    redis = config.cache.redis
    if agent.limiter is not None and redis.url is not None:
        # One client for keys, limits and spend (the shared tier has its own, with its
        # breaker and short timeouts).
        client = agent.aux_redis = connect(redis)
        agent.limiter.attach(RedisLedger(client, redis.key_prefix))
        agent.limiter.spend.attach(client, redis.key_prefix)
    if config.telemetry.tracing.enabled:
        from edge_agent.telemetry.tracing import Tracing

        assert agent.observer is not None
        agent.observer.tracing = Tracing(
            config.telemetry.tracing, os.environ if environ is None else environ, agent.metrics
        )
    if config.audit.sink != "off":
        from edge_agent.audit.trail import Audit
        from edge_agent.runtime.workers import WorkerContext

        worker = WorkerContext.from_environ()
        # Several workers: a file each (each process keeps its own chain).
        several = worker is not None and worker.count > 1
        agent.audit = Audit(config.audit, worker.index if several else None)
    if config.cache.redis.url is not None:
        agent.attach_shared(
            SharedCache(
                config, exact=agent.cache, semantic=semantic, registry=agent.metrics.registry
            )
        )
    return agent
