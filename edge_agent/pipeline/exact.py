"""Stage: the cache policy, the key, and the exact tier in this process. Also computes
the semantic tier's partition, only after an exact miss (hits never pay for it)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson

from edge_agent.api.errors import TOO_DEEP
from edge_agent.cache.keys import cache_key, cache_policy, request_variant, semantic_scope
from edge_agent.extproc.decisions import Decision

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange

log = logging.getLogger("edge_agent.pipeline.exact")


def lookup(ex: Exchange) -> Decision | None:
    agent = ex.agent
    if agent.cache is None and agent.semantic is None:
        return None
    req = ex.request
    assert req is not None
    policy = ex.policy = cache_policy(
        req, ex.req_headers, allow_nonzero_temperature=agent.allow_nonzero_temperature
    )
    if not (policy.lookup or policy.store):
        return None
    # The query and answer-changing headers are forwarded: they belong in the key.
    variant = request_variant(ex.query, ex.req_headers, agent.vary_headers)
    try:
        key = ex.key = cache_key(ex.cache_namespace, req, variant)
    except orjson.JSONEncodeError:
        raise TOO_DEEP from None
    if policy.lookup:
        ex.cache_result = "miss"
        started = time.time_ns() if ex.trace is not None else 0
        entry = agent.cache.get(key) if agent.cache is not None else None
        if ex.trace is not None:
            ex.trace.step(
                "cache.lookup exact",
                started,
                time.time_ns(),
                **{"edge_agent.cache.hit": bool(entry)},
            )
        if entry is not None:
            reply = ex.serve(entry.body, "hit")
            if reply is not None:
                return reply
            # An entry that cannot be replayed is worthless: drop it and ask upstream.
            log.warning("dropping a cache entry that cannot be replayed as a stream")
            assert agent.cache is not None
            agent.cache.delete(key)
    if agent.semantic is not None:
        try:
            ex.scope = semantic_scope(
                ex.cache_namespace,
                req,
                history=agent.semantic_history,
                max_chars=agent.semantic_max_chars,
                variant=variant,
            )
        except orjson.JSONEncodeError:
            raise TOO_DEEP from None
    return None
