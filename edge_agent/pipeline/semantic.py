"""Stage: the semantic tier — embed, search, verify; serve a hit (mode serve) or count
the would-be hit (mode shadow)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge_agent.pipeline.base import StageRun
from edge_agent.pipeline.effects import SemanticLookup

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange

log = logging.getLogger("edge_agent.pipeline.semantic")
SCORE_HEADER = "x-edge-agent-cache-score"


def lookup(ex: Exchange) -> StageRun:
    if ex.scope is None:
        return None
    agent = ex.agent
    assert ex.policy is not None
    result = ex.semantic = yield SemanticLookup(*ex.scope)
    m = agent.metrics
    if result.error is not None:
        m.semantic_lookups.labels("timeout" if result.timed_out else "error").inc()
        _warn_throttled(agent.clock(), "semantic lookup skipped: %s", result.error)
    elif not ex.policy.lookup:
        # cache-control: no-cache: looked up only for the vector, to store the answer.
        m.semantic_lookups.labels("store_only").inc()
    elif result.hit is None:
        m.semantic_lookups.labels("refused" if result.refused else "miss").inc()
        if result.refused:
            m.semantic_refusals.labels(result.refused).inc()
    elif agent.semantic_mode == "shadow":
        m.semantic_lookups.labels("shadow_hit").inc()
        ex.shadow_hit = result.hit
    else:
        reply = ex.serve(result.hit.entry.body, "semantic-hit")
        if reply is None:
            # Stored, but not replayable as asked: worthless, drop it.
            m.semantic_lookups.labels("unservable").inc()
            assert agent.semantic is not None
            agent.semantic.remove(result.hit.entry.id)
        else:
            m.semantic_lookups.labels("hit").inc()
            m.semantic_score.observe(result.hit.score)
            reply.headers.append((SCORE_HEADER, f"{result.hit.score:.4f}"))
            return reply
    return None


_last_warning = [float("-inf")]


def _warn_throttled(now: float, message: str, *args: object) -> None:
    # A dead embedder fails every request's lookup: one log line per 10 s says it,
    # the metric counts every one.
    if now - _last_warning[0] >= 10.0:
        _last_warning[0] = now
        log.warning(message + " (further ones for 10 s only in metrics)", *args)
