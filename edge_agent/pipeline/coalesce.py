"""Stage: identical cacheable misses in flight wait for the first (here, or with Redis in
another process) instead of asking the provider again; the first leads and goes on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.extproc.decisions import Decision
from edge_agent.pipeline.base import StageRun
from edge_agent.pipeline.effects import SharedLease, SharedWait, WaitFor

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange


def wait_or_lead(ex: Exchange) -> StageRun:
    agent = ex.agent
    flights = agent.flights
    if flights is None or not ex.cache_lookup_wanted():
        return None
    assert ex.key is not None
    local = agent.cache.get(ex.key) if agent.cache is not None else None
    if local is not None:
        # Stored while this request waited on Redis: no second provider call.
        reply = ex.serve(local.body, "hit")
        if reply is not None:
            return reply
    flight, leader = flights.join(ex.key)
    wait_s = agent.config.cache.coalesce.max_wait_s
    if not leader:
        return _served(ex, (yield WaitFor(flight, wait_s)))
    ex.flight = flight
    if agent.shared is not None:
        if not (yield SharedLease(ex.key, wait_s)):
            entry = yield SharedWait(ex.key, wait_s)
            return _served(ex, entry.body if entry is not None else None)
        ex.lease = True
    return None


def _served(ex: Exchange, body: bytes | None) -> Decision | None:
    """After waiting for an identical request: its answer, or go on alone."""
    if body is not None:
        reply = ex.serve(body, "coalesced")
        if reply is not None:
            ex.agent.metrics.coalesced.labels("served").inc()
            return reply
    ex.agent.metrics.coalesced.labels("fell_through").inc()
    return None
