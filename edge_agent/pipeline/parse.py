"""Stage: parse and validate the body in the client's schema; the model must exist;
routing overrides are checked here, before any cache could answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.api import errors
from edge_agent.extproc.decisions import Decision

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange

PIN_HEADER = "x-edge-agent-pin"  # client routing overrides (routing.client_overrides)
EXCLUDE_HEADER = "x-edge-agent-exclude"


def parse(ex: Exchange) -> Decision | None:
    assert ex.endpoint is not None
    agent = ex.agent
    req = ex.request = ex.schema.parse(ex.endpoint, ex.raw)
    if not agent.router.knows(req.model):
        raise errors.model_not_found(req.model, agent.visible_models(ex.caller))
    ex.model = req.model
    ex.overrides = client_overrides(ex)
    return None


def client_overrides(ex: Exchange) -> tuple[str | None, frozenset[str]]:
    """The client's pin / exclude headers, when the config lets clients steer."""
    pin = ex.req_headers.get(PIN_HEADER, "").strip() or None
    raw = ex.req_headers.get(EXCLUDE_HEADER, "")
    exclude = frozenset(p.strip() for p in raw.split(",") if p.strip())
    if (pin or exclude) and not ex.agent.config.routing.client_overrides:
        raise errors.invalid_request(
            f"The headers {PIN_HEADER} / {EXCLUDE_HEADER} are not enabled on this "
            "gateway (routing.client_overrides: false); remove them, or ask the "
            "gateway's operator to enable them.",
            code="routing_override_disabled",
        )
    return pin, exclude
