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
    model: str = ""  # the client-facing model, for purges by model
    tenant: str = ""  # whose request it answered, for purges by tenant (erasure)


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
        self.purges = 0  # purge() calls so far (answer.py: a deferred store checks it)
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

    def put(
        self,
        key: str,
        body: bytes,
        *,
        model: str = "",
        tenant: str = "",
        ttl_s: float | None = None,
    ) -> bool:
        """Store an answer (for `ttl_s`, default the tier's); False when too large to keep."""
        if len(body) > self.max_entry_bytes:
            return False
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        if ttl <= 0:
            return False
        now = self._clock()
        if key in self._data:
            self._drop(key)
        self._data[key] = CacheEntry(body, now + ttl, model, tenant)
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

    def purge(
        self, *, model: str | None = None, key: str | None = None, tenant: str | None = None
    ) -> int:
        """Drop entries matching every given filter (none given: everything)."""
        self.purges += 1  # an answer stored later must not bring them back (answer.py)
        if model is None and key is None and tenant is None:
            dropped = len(self._data)
            self.clear()
            return dropped
        doomed = [
            k
            for k, e in self._data.items()
            if (key is None or k == key)
            and (model is None or e.model == model)
            and (tenant is None or e.tenant == tenant)
        ]
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key)
        self.bytes -= len(entry.body)
