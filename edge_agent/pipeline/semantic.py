"""Stage: the semantic tier — embed, search, verify; serve a hit (mode serve) or count
the would-be hit (mode shadow).

Only a lookup that may serve is waited for. In shadow mode (and for a request that
asked not to be served from the cache) the lookup runs beside the request, which goes
to the provider at once; its result is counted when it lands, and the answer is stored
with its vector once both are there (extproc/answer.py). A lookup the tier cannot
afford now is shed (cache/shedding.py): counted, and the request goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from edge_agent.extproc.decisions import Respond
from edge_agent.pipeline.base import StageRun
from edge_agent.pipeline.effects import SemanticLookup
from edge_agent.pipeline.route import count_shadow_savings
from edge_agent.telemetry.observe import semantic_steps

if TYPE_CHECKING:
    from edge_agent.cache.semantic import LookupResult
    from edge_agent.extproc.exchange import Exchange

log = logging.getLogger("edge_agent.pipeline.semantic")
SCORE_HEADER = "x-edge-agent-cache-score"
_SHED = {"queue": "shed_queue", "cpu": "shed_cpu"}  # the shedder's rule → outcome label


def lookup(ex: Exchange) -> StageRun:
    if ex.scope is None:
        return None
    agent = ex.agent
    tier = agent.semantic
    assert tier is not None and ex.policy is not None
    shed = tier.admit()
    if shed is not None:
        agent.metrics.semantic_lookups.labels(_SHED[shed]).inc()
        return None
    if agent.semantic_mode == "shadow" or not ex.policy.lookup:
        task: asyncio.Task[LookupResult] = yield SemanticLookup(*ex.scope, beside=True)
        ex.semantic_pending = task
        task.add_done_callback(lambda done: _landed(ex, done))
        return None
    ex.semantic = yield SemanticLookup(*ex.scope)
    if ex.trace is not None:
        semantic_steps(ex.trace, ex.semantic.marks, beside=False)
    return _decide(ex, ex.semantic)


def _landed(ex: Exchange, task: asyncio.Task[LookupResult]) -> None:
    """A lookup the request did not wait for is done (on the event loop)."""
    ex.semantic_pending = None
    if task.cancelled():  # shutting down
        return
    ex.semantic = task.result()  # lookup() never raises
    if ex.trace is not None:
        semantic_steps(ex.trace, ex.semantic.marks, beside=True)
    _decide(ex, ex.semantic)
    hit = ex.shadow_hit
    if hit is not None and ex.target is not None:
        # Routed already (the usual case): count what serving it would have saved now;
        # otherwise route counts it.
        ex.shadow_hit = None
        count_shadow_savings(ex, hit, ex.target)


def _decide(ex: Exchange, result: LookupResult) -> Respond | None:
    agent = ex.agent
    assert ex.policy is not None
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
