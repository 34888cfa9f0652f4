"""The local DEMO upstream: a fake OpenAI-compatible provider (not a real LLM).

Names are loaded lazily so that ``python -m edge_agent.demo.upstream`` does not import the
module twice (runpy warns when a package pre-imports the module it is asked to run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread, RecordedRequest

__all__ = ["FakeOpenAI", "FakeOpenAIThread", "RecordedRequest"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from edge_agent.demo import upstream

        return getattr(upstream, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
