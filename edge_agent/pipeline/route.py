"""Stage: pick the target (strategy, health, capabilities, the client's overrides) and
tell Envoy: the routing header, and for a single target the provider's path,
credentials and body; a failover chain leaves those to each attempt (upstream)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from edge_agent.api.errors import ApiError
from edge_agent.extproc.attempt_log import ATTEMPT_KEY_HEADER
from edge_agent.extproc.decisions import Continue
from edge_agent.extproc.provider_call import ProviderCall, tokens_of
from edge_agent.pipeline.parse import EXCLUDE_HEADER, PIN_HEADER
from edge_agent.providers.headers import CLIENT_ONLY_HEADERS
from edge_agent.routing.router import needs_of
from edge_agent.telemetry.observe import traceparent_of

if TYPE_CHECKING:
    from edge_agent.cache.semantic import SemanticHit
    from edge_agent.extproc.exchange import Exchange
    from edge_agent.routing.router import Target


def route(ex: Exchange) -> Continue:
    agent = ex.agent
    req, endpoint = ex.request, ex.endpoint
    assert req is not None and endpoint is not None
    pin, exclude = ex.overrides
    choice = agent.router.pick(req.model, endpoint, needs_of(req, len(ex.raw)), pin, exclude)
    target = ex.target = choice.target
    agent.metrics.routing_decisions.labels(ex.model, target.key, choice.reason).inc()
    if ex.shadow_hit is not None:
        count_shadow_savings(ex, ex.shadow_hit, target)
    caching = ex.key is not None and ex.policy is not None and ex.policy.store
    chain = agent.router.chain_cluster(req.model, target) if choice.chain else None
    if chain is not None:
        # Failover: Envoy tries the chain's targets in order; the upstream filter
        # (attempt.py) translates and authenticates each attempt. Nothing of the
        # provider's is set here.
        ex.chained = chain
        trace = traceparent_of(ex.trace.span) if ex.trace is not None else None
        ex.attempt_key = agent.attempts.begin(ex.path, ex.query, ex.tenant_label, trace)
        set_headers = [
            (agent.config.envoy.routing_header, chain),
            (ATTEMPT_KEY_HEADER, ex.attempt_key),  # overwrites any client value
            ("accept-encoding", "identity"),  # any attempt may translate
        ]
        new_body = None
    else:
        call = ex.call = ProviderCall(agent, target, req, ex.model, ex.tenant_label)
        try:
            provider_headers, new_body = call.request_changes(ex.query, ex.raw)
        except ApiError:
            target.health.on_cancel()  # never sent: release a half-open probe it took
            raise
        set_headers = [(agent.config.envoy.routing_header, target.provider.name)]
        set_headers += provider_headers
        if caching and not call.translating:
            # A compressed answer could not be parsed for the cache.
            set_headers.append(("accept-encoding", "identity"))
    if ex.body_changed and new_body is None:
        new_body = ex.raw  # rewritten by a stage (redacted): never the client's original
    injected = {name for name, _ in set_headers}
    ex.sent_at = agent.clock()
    if ex.trace is not None:
        ex.trace.sent_ns = time.time_ns()
        ex.trace.span.set_attribute("edge_agent.route.reason", choice.reason)
    return Continue(
        set_headers=set_headers,
        remove_headers=[
            *(h for h in CLIENT_ONLY_HEADERS if h not in injected),
            *agent.identity_headers,
            PIN_HEADER,
            EXCLUDE_HEADER,
        ],
        body=new_body,
        clear_route_cache=True,
    )


def count_shadow_savings(ex: Exchange, hit: SemanticHit, target: Target) -> None:
    # What serving the would-be hit would have saved: its usage at this target's prices.
    price = target.provider.model(target.model)
    usage = tokens_of(ex.schema.usage_of(hit.entry.body))
    saved = price.cost_usd(*usage) if price is not None and usage is not None else 0.0
    ex.agent.metrics.semantic_shadow_saved.labels(ex.model).inc(saved)
