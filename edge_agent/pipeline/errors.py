"""Errors more than one stage raises."""

from __future__ import annotations

from edge_agent.api import errors

TOO_DEEP = errors.invalid_request(
    "Request body nests JSON too deeply (more than 254 levels); flatten it.", code="too_deep"
)
