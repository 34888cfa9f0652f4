"""The shared tier wired to this process's local tiers (exact LRU and FAISS).

`RedisTier` (redis_tier.py) talks to Redis; this module decides what flows between it
and the local tiers:

- an answer stored here is also written to Redis (with its vector when the semantic tier
  stored it), and announced on the sync stream;
- an answer another replica or worker stored arrives as a sync event and is put into the
  local exact tier and, when it carries a vector of this process's embedder, the FAISS
  tier — so the next lookup is local;
- at start, entries already in Redis are loaded the same way (bounded, in the
  background: readiness waits for it);
- purges apply locally and reach every other process through the stream.

Redis trouble never fails a request: the tier answers "nothing" fast and heals itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.cache.records import PurgeFilter, SemanticPart, SharedEntry, SyncEvent
from edge_agent.cache.redis_tier import RedisTier

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from edge_agent.cache.exact import ExactCache
    from edge_agent.cache.semantic import SemanticTier
    from edge_agent.config import Config

log = logging.getLogger("edge_agent.cache.shared")


def replica_id() -> str:
    """Unique per process: own sync events are recognised and skipped by it."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class SharedCache:
    def __init__(
        self,
        config: Config,
        *,
        exact: ExactCache | None,
        semantic: SemanticTier | None,
        registry: CollectorRegistry | None,
    ) -> None:
        redis = config.cache.redis
        assert redis.url is not None
        self.tier = RedisTier(redis, replica_id=replica_id(), registry=registry)
        self.exact = exact
        self.semantic = semantic
        self.ttl_s = config.cache.exact.ttl_s
        self.warm_limit = redis.warm_max_entries
        self.warmed = False  # readiness waits for the warm start (or its failure)
        self.warm_loaded = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._warm_done = asyncio.Event()
        self._warm_task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._warm_done = asyncio.Event()
        self.tier.subscribe(self.apply)
        await self.tier.start()
        self._warm_task = self._spawn(self._warm())

    async def close(self) -> None:
        # Lease releases still pending must reach Redis (other replicas would wait out
        # the lease otherwise); the warm start may simply stop.
        pending = [t for t in self._tasks if t is not self._warm_task]
        if self._warm_task is not None:
            self._warm_task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        await self.tier.close()

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _warm(self) -> None:
        started = time.monotonic()
        try:
            async for entry in self.tier.warm(self.warm_limit):
                self.fill(entry)
                self.warm_loaded += 1
                if self.warm_loaded % 10_000 == 0:
                    log.info("warm start: %d entries loaded from Redis", self.warm_loaded)
            log.info(
                "warm start: %d entries loaded from Redis in %.1f s",
                self.warm_loaded,
                time.monotonic() - started,
            )
        except Exception as exc:  # Redis down at start: serve from local tiers, cold
            log.warning("warm start from Redis failed (%r); starting cold", exc)
        finally:
            self.warmed = True
            self._warm_done.set()

    async def wait_warm(self) -> None:
        await self._warm_done.wait()

    # ---- the request path ----------------------------------------------------------
    async def get(self, key: str) -> SharedEntry | None:
        entry = await self.tier.get(key)
        if entry is not None:
            self.fill(entry)  # the next identical request is local
        return entry

    def put(
        self,
        key: str,
        body: bytes,
        *,
        model: str,
        endpoint: str,
        tenant: str = "",
        semantic: tuple[str, str, str, np.ndarray] | None = None,
    ) -> None:
        """Share a stored answer (semantic: namespace, partition, text, vector)."""
        part = SemanticPart.from_array(*semantic) if semantic is not None else None
        entry = SharedEntry(
            key=key,
            body=body,
            expires_at=time.time() + self.ttl_s,
            model=model,
            tenant=tenant,
            endpoint=endpoint,
            semantic=part,
        )
        self.tier.put(entry)

    async def acquire_lease(self, key: str, ttl_s: float) -> bool:
        return await self.tier.acquire_lease(key, int(ttl_s * 1000))

    def release_lease(self, key: str) -> None:
        self._spawn(self.tier.release_lease(key))

    async def wait_for(self, key: str, timeout_s: float) -> SharedEntry | None:
        entry = await self.tier.wait_for(key, timeout_s)
        if entry is not None:
            self.fill(entry)
        return entry

    async def purge(
        self,
        *,
        model: str | None = None,
        key: str | None = None,
        tenant: str | None = None,
        everything: bool = False,
    ) -> tuple[int, int | None]:
        """(local entries dropped, Redis entries dropped or None when Redis failed)."""
        local = (
            self.purge_local()
            if everything
            else self.purge_local(model=model, key=key, tenant=tenant)
        )
        try:
            shared: int | None = await self.tier.purge(
                model=model, key=key, tenant=tenant, all=everything
            )
        except Exception as exc:
            log.warning("purge in Redis failed (%r); the local tiers were purged", exc)
            shared = None
        return local, shared

    # ---- what arrives from Redis ------------------------------------------------------
    def apply(self, event: SyncEvent) -> None:
        if event.kind == "store" and event.entry is not None:
            self.fill(event.entry)
        elif event.kind == "evict":
            for key in event.keys:
                if self.exact is not None:
                    self.exact.delete(key)
        elif event.kind == "purge" and event.purge is not None:
            self.apply_purge(event.purge)

    def apply_purge(self, purge: PurgeFilter) -> int:
        if purge.all:
            return self.purge_local()
        if purge.model is None and purge.key is None and purge.tenant is None:
            # A filter a newer agent understands: never read as "everything".
            return 0
        return self.purge_local(model=purge.model, key=purge.key, tenant=purge.tenant)

    def purge_local(
        self, *, model: str | None = None, key: str | None = None, tenant: str | None = None
    ) -> int:
        dropped = 0
        if self.exact is not None:
            dropped += self.exact.purge(model=model, key=key, tenant=tenant)
        if self.semantic is not None:
            dropped += self.semantic.purge(model=model, key=key, tenant=tenant)
        return dropped

    def fill(self, entry: SharedEntry) -> None:
        """Put an entry from Redis into the local tiers, for the rest of its life."""
        remaining = entry.expires_at - time.time()
        if remaining <= 0:
            return
        if self.exact is not None:
            self.exact.put(
                entry.key, entry.body, model=entry.model, tenant=entry.tenant, ttl_s=remaining
            )
        part = entry.semantic
        tier = self.semantic
        if part is not None and tier is not None and part.namespace == tier.namespace:
            vector = part.array()
            if vector.shape != (tier.embedder.dim,):
                return
            tier.store(
                part.partition,
                part.text,
                vector,
                None,  # signed on the tier's verifier thread, off the event loop
                entry.body,
                model=entry.model,
                key=entry.key,  # the tier skips an answer it already holds
                tenant=entry.tenant,
                ttl_s=remaining,
            )
