"""Request coalescing, sans-IO: identical cacheable misses in flight share one answer.

The first request for a cache key leads: it goes upstream. Identical requests arriving
while it is in flight follow: they wait (bounded, by the caller) for the leader's answer
to land in the cache and are answered from it, so N concurrent identical misses cost one
provider call. A leader whose answer cannot be cached (an error, a broken stream, too
large) releases its followers at once, and they go upstream themselves.
"""

from __future__ import annotations

from collections.abc import Callable

Waiter = Callable[[bytes | None], None]


class Flight:
    """One leader's request in flight; waiters learn its stored answer or None."""

    __slots__ = ("_waiters", "body", "done", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.done = False
        self.body: bytes | None = None
        self._waiters: list[Waiter] = []

    def add_waiter(self, waiter: Waiter) -> None:
        if self.done:
            waiter(self.body)
        else:
            self._waiters.append(waiter)

    def land(self, body: bytes | None) -> None:
        if self.done:
            return
        self.done, self.body = True, body
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter(body)


class Flights:
    """The flights in progress in this process, by cache key."""

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def join(self, key: str) -> tuple[Flight, bool]:
        """(the flight for `key`, True when the caller leads it)."""
        flight = self._by_key.get(key)
        if flight is not None:
            return flight, False
        flight = self._by_key[key] = Flight(key)
        return flight, True

    def land(self, flight: Flight, body: bytes | None) -> None:
        """The leader's outcome: its stored answer, or None when there is none."""
        if self._by_key.get(flight.key) is flight:
            del self._by_key[flight.key]
        flight.land(body)
