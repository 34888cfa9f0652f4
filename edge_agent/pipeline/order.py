"""The request pipeline's order: the stages, with the configured ones in their slots.

Two runs: on the request's headers (who is calling: settled before the body is read)
and on its body (everything else).
"""

from __future__ import annotations

from edge_agent.guardrails import stage as guardrails_stage
from edge_agent.identity import stage as identity
from edge_agent.limits import stage as limits_stage
from edge_agent.pipeline import coalesce, exact, parse, route, semantic, shared
from edge_agent.pipeline.base import Stage


def header_stages(
    slots: dict[str, list[Stage]] | None = None, *, auth: bool = False
) -> list[Stage]:
    """The stages on the request's headers; `auth`: the agent checks credentials."""
    slots = slots or {}
    return [*((identity.identify,) if auth else ()), *slots.get("identity", ())]


def request_stages(
    slots: dict[str, list[Stage]] | None = None,
    *,
    auth: bool = False,
    limits: bool = False,
    guardrails: bool = False,
) -> list[Stage]:
    """The stages on the request's body, in order, with `slots` (name → stages) filled
    in; `limits`: some tenant or key has limits or a budget; `guardrails`: the config's
    built-in guardrails are on."""
    slots = slots or {}
    return [
        parse.parse,
        *((identity.model_access,) if auth else ()),
        *((limits_stage.admit,) if limits else ()),
        *slots.get("policy", ()),
        *((guardrails_stage.check,) if guardrails else ()),
        *slots.get("guardrails", ()),
        exact.lookup,
        shared.lookup,
        coalesce.wait_or_lead,
        semantic.lookup,
        *((limits_stage.gate,) if limits else ()),
        route.route,
    ]
