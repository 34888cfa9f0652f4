"""The I/O a request stage asks for: `result = yield Effect(...)`.

A stage stays sans-IO; the servicer's trampoline performs each effect (`perform`) and
sends the result back into the stage. An effect with `wait_s` set may take longer than
Envoy's message timeout: the trampoline first asks Envoy to wait that much longer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.cache.coalesce import Flight


class Effect:
    """Something only the I/O side can do; `perform` does it."""

    wait_s: float | None = None  # may outlast Envoy's message timeout by this much

    async def perform(self, agent: Agent) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SemanticLookup(Effect):
    """Embed `text` and search `partition` (the tier admitted it): a `LookupResult`, or
    with `beside` the lookup's `asyncio.Task`, which the request does not wait for."""

    partition: str
    text: str
    beside: bool = False

    async def perform(self, agent: Agent) -> Any:
        assert agent.semantic is not None
        lookup = agent.semantic.lookup(self.partition, self.text, admitted=True)
        return asyncio.ensure_future(lookup) if self.beside else await lookup


@dataclass(frozen=True, slots=True)
class SharedLookup(Effect):
    """`key` in the shared tier (Redis): a `SharedEntry` or None."""

    key: str

    async def perform(self, agent: Agent) -> Any:
        assert agent.shared is not None
        return await agent.shared.get(self.key)


@dataclass(frozen=True, slots=True)
class SharedLease(Effect):
    """The cross-process lease on `key`: True when this process got it."""

    key: str
    ttl_s: float

    async def perform(self, agent: Agent) -> Any:
        assert agent.shared is not None
        return await agent.shared.acquire_lease(self.key, self.ttl_s)


@dataclass(frozen=True, slots=True)
class SharedWait(Effect):
    """Another process's answer to `key` (up to `wait_s`): a `SharedEntry` or None."""

    key: str
    wait_s: float

    async def perform(self, agent: Agent) -> Any:
        assert agent.shared is not None
        return await agent.shared.wait_for(self.key, self.wait_s)


@dataclass(frozen=True, slots=True)
class WaitFor(Effect):
    """The stored answer of the identical request in flight here (up to `wait_s`), or
    None."""

    flight: Flight
    wait_s: float

    async def perform(self, agent: Agent) -> Any:
        landed: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

        def on_land(body: bytes | None) -> None:
            if not landed.done():
                landed.set_result(body)

        self.flight.add_waiter(on_land)
        try:
            return await asyncio.wait_for(landed, self.wait_s)
        except TimeoutError:
            return None
