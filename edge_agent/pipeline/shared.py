"""Stage: the shared tier (Redis), after an exact miss in this process."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from edge_agent.pipeline.base import StageRun
from edge_agent.pipeline.effects import SharedLookup

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange


def lookup(ex: Exchange) -> StageRun:
    if ex.shared_lookup_wanted():
        assert ex.key is not None
        started = time.time_ns() if ex.trace is not None else 0
        entry = yield SharedLookup(ex.key)
        if ex.trace is not None:
            ex.trace.step(
                "cache.lookup shared",
                started,
                time.time_ns(),
                **{"db.system.name": "redis", "edge_agent.cache.hit": entry is not None},
            )
        if entry is not None:
            return ex.serve(entry.body, "hit")
    return None
