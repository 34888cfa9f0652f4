"""The exact tier: a bounded LRU of complete responses with a TTL, in this process."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CacheEntry:
    body: bytes  # the complete JSON answer, as the provider sent it (or assembled from SSE)
    expires_at: float


class ExactCache:
    """LRU bounded by entries and bytes, with a TTL. One instance per event loop."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        *,
        max_entry_bytes: int = 1 << 20,
        max_bytes: int = 256 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()
        self.bytes = 0  # body bytes held, for the size gauge

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> CacheEntry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return entry

    def put(self, key: str, body: bytes) -> bool:
        """Store an answer; False when it is too large to keep."""
        if len(body) > self.max_entry_bytes:
            return False
        now = self._clock()
        if key in self._data:
            self._drop(key)
        self._data[key] = CacheEntry(body, now + self.ttl_s)
        self.bytes += len(body)
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._data)))
        return True

    def delete(self, key: str) -> bool:
        if key in self._data:
            self._drop(key)
            return True
        return False

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key)
        self.bytes -= len(entry.body)
