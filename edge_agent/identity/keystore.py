"""Where keys made at run time live: this process only, or Redis for every replica.

With Redis (`cache.redis`), records are kept in one hash (`{<prefix>:keys}`, id → record
JSON, never the key itself) beside a version token that every change replaces, in the
same MULTI/EXEC (a random token, not a counter: a counter lost to eviction or a Redis
restart could come back to a value a process already holds). Each process polls the
token every `_POLL_S` and reloads the hash when it changed, and reloads it anyway every
`_RESYNC_S`, so a revocation reaches every replica and worker in well under a second and
a Redis that was down catches up by itself. Last use is written back at most every
`_USED_FLUSH_S`. The keys need a Redis that does not evict them (noeviction, or a
database of their own): docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from edge_agent.identity.keys import KeyRecord, KeyRing, mint

log = logging.getLogger("edge_agent.identity.keystore")

_POLL_S = 0.25
_RESYNC_S = 30.0
_USED_FLUSH_S = 5.0
_TIMEOUT_S = 2.0


class KeyStoreError(Exception):
    """The store could not carry out an admin change (the message says why)."""


class KeyStore:
    """Runtime keys in this process (`client=None`) or shared through Redis (the
    process's client, which the runtime owns and closes)."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        client: Redis | RedisCluster | None = None,
        prefix: str = "",
        wall_clock: Callable[[], float],
        single_process: bool = True,
    ) -> None:
        self.ring = ring
        self._clock = wall_clock
        self._single = single_process
        self._client = client
        self._prefix = prefix
        self._version: bytes | None = None
        self._flushed: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def now(self) -> float:
        return self._clock()

    @property
    def shared(self) -> bool:
        return self._client is not None

    # One hash tag: the three keys share a Cluster slot, so one MULTI/EXEC covers them.
    @property
    def _hash(self) -> str:
        return f"{{{self._prefix}:keys}}"

    @property
    def _version_key(self) -> str:
        return f"{{{self._prefix}:keys}}:version"

    @property
    def _used_hash(self) -> str:
        return f"{{{self._prefix}:keys}}:used"

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is None:
            return
        try:
            await asyncio.wait_for(self._sync(force=True), _TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            # Redis down at start must not stop the agent: config keys work, runtime
            # keys arrive when the poll reaches Redis.
            log.warning("cannot read API keys from Redis at start (%r); will retry", exc)
        self._tasks = [
            asyncio.ensure_future(self._poll_loop()),
            asyncio.ensure_future(self._used_loop()),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._flush_used()

    # ---- admin changes -----------------------------------------------------------------
    async def create(
        self,
        tenant: str,
        name: str,
        expires_at: float | None = None,
        limits: dict[str, Any] | None = None,
        budget: dict[str, Any] | None = None,
    ) -> tuple[str, KeyRecord]:
        secret, record = mint(tenant, name, self._clock(), expires_at, limits, budget)
        if self._client is None:
            self._local_only()
            self.ring.add(record)
            return secret, record
        try:
            await asyncio.wait_for(self._write(record.id, record.to_json()), _TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            raise KeyStoreError(f"Redis did not store the key ({exc.__class__.__name__})") from None
        self.ring.add(record)
        return secret, record

    async def revoke(self, key_id: str) -> KeyRecord | None:
        if self._client is None:
            self._local_only()
            return self.ring.remove(key_id)
        try:
            raw = await asyncio.wait_for(self._client.hget(self._hash, key_id), _TIMEOUT_S)
            # Written even when the record is gone: a new token makes every process
            # reload, whatever an earlier, failed change left behind.
            await asyncio.wait_for(self._write(key_id, None), _TIMEOUT_S)
            if raw is None:
                return None
        except (RedisError, OSError, TimeoutError) as exc:
            raise KeyStoreError(
                f"Redis did not revoke the key ({exc.__class__.__name__}); retry"
            ) from None
        self.ring.remove(key_id)
        return KeyRecord.from_json(raw)

    async def listing(self) -> list[dict[str, Any]]:
        used = dict(self.ring.last_used)
        if self._client is not None:
            try:
                await asyncio.wait_for(self._sync(force=True), _TIMEOUT_S)
                raw = await asyncio.wait_for(self._client.hgetall(self._used_hash), _TIMEOUT_S)
            except (RedisError, OSError, TimeoutError) as exc:
                raise KeyStoreError(f"Redis did not answer ({exc.__class__.__name__})") from None
            for key_id, at in raw.items():
                ident = key_id.decode() if isinstance(key_id, bytes) else key_id
                used[ident] = max(used.get(ident, 0.0), float(at))
        return [r.public(used.get(r.id)) for r in self.ring.records()]

    def _local_only(self) -> None:
        if not self._single:
            raise KeyStoreError(
                "keys made at run time need cache.redis when more than one worker runs "
                "(each worker would know only its own); set cache.redis.url, or put the "
                "key in the config (tenants[].keys)"
            )

    async def _write(self, key_id: str, record: bytes | None) -> None:
        assert self._client is not None
        async with self._client.pipeline(transaction=True) as pipe:
            if record is None:
                pipe.hdel(self._hash, key_id)
                pipe.hdel(self._used_hash, key_id)
            else:
                pipe.hset(self._hash, key_id, record)
            pipe.set(self._version_key, uuid.uuid4().hex)
            await pipe.execute()

    # ---- following the other processes ----------------------------------------------
    async def _sync(self, *, force: bool = False) -> None:
        assert self._client is not None
        version = await self._client.get(self._version_key)
        if version == self._version and not force:
            return
        raw = await self._client.hgetall(self._hash)
        records = [r for r in (KeyRecord.from_json(v) for v in raw.values()) if r is not None]
        self.ring.replace_runtime(records)
        self._version = version

    async def _poll_loop(self) -> None:
        failing = False
        resync_at = time.monotonic() + _RESYNC_S
        while True:
            await asyncio.sleep(_POLL_S)
            force = time.monotonic() >= resync_at
            try:
                await asyncio.wait_for(self._sync(force=force), _TIMEOUT_S)
                if force:
                    resync_at = time.monotonic() + _RESYNC_S
                failing = False
            except (RedisError, OSError, TimeoutError) as exc:
                if not failing:  # once per outage, not every poll
                    log.warning("cannot read API keys from Redis (%r); keeping the last", exc)
                failing = True

    async def _used_loop(self) -> None:
        while True:
            await asyncio.sleep(_USED_FLUSH_S)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._flush_used(), _TIMEOUT_S)

    async def _flush_used(self) -> None:
        assert self._client is not None
        fresh = {
            key_id: at
            for key_id, at in self.ring.last_used.items()
            if at > self._flushed.get(key_id, 0.0)
        }
        if fresh:
            await self._client.hset(self._used_hash, mapping=fresh)  # type: ignore[arg-type]
            self._flushed.update(fresh)
