"""The request pipeline's order: the stages, with the configured ones in their slots."""

from __future__ import annotations

from edge_agent.pipeline import coalesce, exact, parse, route, semantic, shared
from edge_agent.pipeline.base import Stage


def request_stages(slots: dict[str, list[Stage]] | None = None) -> list[Stage]:
    """The stages in order, with `slots` (name → stages) filled in."""
    slots = slots or {}
    return [
        parse.parse,
        *slots.get("identity", ()),
        *slots.get("policy", ()),
        *slots.get("guardrails", ()),
        exact.lookup,
        shared.lookup,
        coalesce.wait_or_lead,
        semantic.lookup,
        route.route,
    ]
