"""A test-only request stage, as docs/architecture.md ("How to add a stage") describes:
refuses requests that carry `x-example-refuse`, in the client's own error shape.

Put in the pipeline by one line of config: `pipeline: {guardrails: [tests.example_stage:
refuse_flagged]}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.api.errors import ApiError

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange

HEADER = "x-example-refuse"


def refuse_flagged(ex: Exchange) -> None:
    if HEADER in ex.req_headers:
        raise ApiError(
            403,
            f"Refused by the example stage: the request carries {HEADER}.",
            type="permission_error",
            code="example_refused",
        )
