"""What a stage is, and how the pipeline runs until it decides or needs an effect."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.extproc.decisions import BodyMode, Decision
from edge_agent.pipeline.effects import Effect

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange

StageRun = Generator[Effect, Any, Decision | None]
# A stage: plain (no I/O) or a generator that yields effects.
Stage = Callable[["Exchange"], Decision | StageRun | None]
SLOTS = ("identity", "policy", "guardrails")


class ResponseStage(Protocol):
    """A stage on the answer, in the client's schema, before it is metered and stored."""

    def headers(self, ex: Exchange, status: str, headers: Mapping[str, str]) -> BodyMode | None:
        """The answer's headers: the body mode this stage needs to see the body (None:
        as it comes, if anyone reads it)."""
        ...

    def body(self, ex: Exchange, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """One chunk (the whole body when buffered); a replacement, or None."""
        ...


@dataclass(slots=True)
class Pending:
    """The pipeline is waiting for `effect`; `send` its result to go on."""

    effect: Effect
    _run: Generator[Effect, Any, Decision]

    def send(self, result: Any) -> Decision | Pending:
        return advance(self._run, result)


def advance(run: Generator[Effect, Any, Decision], value: Any = None) -> Decision | Pending:
    """Run the pipeline until it decides or asks for an effect."""
    try:
        effect = run.send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    return Pending(effect, run)
