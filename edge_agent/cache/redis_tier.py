"""The shared cache tier and replica-sync bus on Redis (redis-py asyncio adapter).

Records, their encoding and the key layout live in `records.py` (sans-IO); this module
only moves them: entries with a TTL, a stream of sync events, coalescing leases.

Redis trouble must never fail or slow a request:
- request-path reads (`get`, `acquire_lease`, `wait_for`) are bounded by
  `timeout_ms` and return None/False on any error, never raise;
- writes (`put`, `evict`) are fire-and-forget through a bounded queue drained by a
  background task, in batches (one pipeline, a MULTI/EXEC transaction on a single
  node, so an entry and its store event land together);
- a circuit breaker (`Breaker`) turns a failing Redis into immediate misses/drops
  instead of a timeout per request. States: ``up``; ``down`` (failing, fewer than
  `failure_threshold` consecutive failures); ``open`` (short-circuit for `open_s`,
  then one probe call: success → up, failure → open again).
- a background reader follows the sync stream with XREAD BLOCK and hands other
  replicas' events to subscribers; after an error it reconnects with capped,
  jittered exponential backoff and resumes after the last id it saw (catch-up). Its
  outcomes feed the breaker too, so the state reflects Redis even without traffic.

Redis Cluster: every command touches one key, or runs in a non-transactional pipeline
that redis-py splits by node; nothing relies on cross-slot atomicity there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections import Counter as _Tally
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge_agent.cache import records as rec
from edge_agent.cache.records import PurgeFilter, SharedEntry, SyncEvent
from edge_agent.config import RedisCache
from edge_agent.redis_client import connect, password

log = logging.getLogger("edge_agent.cache.redis")

BreakerState = Literal["up", "down", "open"]
Outcome = Literal["ok", "error", "timeout", "dropped"]
SyncCallback = Callable[[SyncEvent], Awaitable[None] | None]
_T = TypeVar("_T")

_STATE_VALUE: dict[BreakerState, int] = {"up": 0, "down": 1, "open": 2}
_QUEUE_SIZE = 10_000  # pending writes; beyond this they are dropped (and counted)
_WRITE_BATCH = 64  # writes per pipeline
_READ_BLOCK_MS = 200  # XREAD BLOCK: new events reach subscribers well within 1 s
_READ_COUNT = 500
_SCAN_COUNT = 500
_WAIT_POLL_S = (0.02, 0.25)  # wait_for: first and longest poll interval
_CB_LOG_EVERY_S = 10.0  # subscriber errors: at most one log line per interval

# Index maintenance in one round trip; one key, so it is Cluster-safe. Expired
# members are trimmed on every write; the index lives as long as its latest entry.
_INDEX_LUA = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local ttl = tonumber(ARGV[4])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
# Only the owner may release: a lease that expired and was taken by another replica
# must not be deleted by the first owner finishing late.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisTierError(Exception):
    """An admin operation (purge) could not be carried out on Redis."""


async def _bounded(aw: Awaitable[_T], timeout_s: float) -> _T:
    """Await `aw` for at most `timeout_s` (TimeoutError after), in a task of its own.

    Not `asyncio.timeout` around the call: redis-py (8.1 here) can swallow a
    cancellation that lands at the wrong moment and finish the command instead, so the
    caller would wait for the reply or the socket timeout. Waiting on a separate task
    leaves at the deadline whatever the library does; the abandoned call is cancelled
    and ends on its own (at worst at its socket timeout).
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if not done:
        _abandon(task)
        raise TimeoutError
    return task.result()


def _abandon(task: asyncio.Future[Any]) -> None:
    task.cancel()
    # Retrieve the outcome so an abandoned call never logs "exception never retrieved".
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


# -- circuit breaker (sans-IO) ------------------------------------------------------


class Breaker:
    """Consecutive-failure breaker with one probe after the open period.

    `allow()` is asked before a call (it claims the probe when the open period is
    over); `success()` / `failure()` report the outcome; `release()` gives back a
    probe whose call was cancelled. `passive=True` reports evidence from outside the
    request path (the stream reader): it never claims or reopens through the probe
    and is ignored while the open period runs.
    """

    def __init__(
        self,
        failure_threshold: int,
        open_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState, str], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "up"
        self._consecutive = 0
        self._open_until = 0.0
        self._probe_at: float | None = None

    @property
    def state(self) -> BreakerState:
        return self._state

    def rejecting(self) -> bool:
        """True while calls would be refused; claims nothing."""
        if self._state != "open":
            return False
        now = self._clock()
        return now < self._open_until or self._probe_busy(now)

    def allow(self) -> bool:
        if self._state != "open":
            return True
        now = self._clock()
        if now < self._open_until or self._probe_busy(now):
            return False
        self._probe_at = now
        return True

    def release(self) -> None:
        self._probe_at = None

    def success(self, *, passive: bool = False) -> None:
        if passive and self._state == "open" and self._clock() < self._open_until:
            return
        self._consecutive = 0
        self._probe_at = None
        self._set("up", "call succeeded")

    def failure(self, why: str, *, passive: bool = False) -> None:
        now = self._clock()
        if self._state == "open":
            if passive or self._probe_at is None:
                return  # already open; only the probe's outcome decides
            self._probe_at = None
            self._open_until = now + self.open_s
            self._set("open", f"probe failed: {why}", force_log=True)
            return
        self._consecutive += 1
        if self._consecutive >= self.failure_threshold:
            self._open_until = now + self.open_s
            self._set(
                "open",
                f"{self._consecutive} consecutive failures, last: {why}; "
                f"retry in {self.open_s:g} s",
            )
        else:
            self._set("down", why)

    def _probe_busy(self, now: float) -> bool:
        # A probe that never reports (cancelled without release) frees itself.
        return self._probe_at is not None and now - self._probe_at < self.open_s

    def _set(self, state: BreakerState, why: str, *, force_log: bool = False) -> None:
        old = self._state
        if old == state and not force_log:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(old, state, why)


# -- metrics ------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.ops = Counter(
            "edge_agent_redis_operations",
            "Shared-tier operations by op and outcome: hit, miss, ok, error, timeout, "
            "dropped (breaker open or queue full).",
            ["op", "outcome"],
            registry=r,
        )
        self.breaker = Gauge(
            "edge_agent_redis_breaker_state",
            "Redis circuit breaker: 0 up, 1 down (failing), 2 open (calls short-circuited).",
            registry=r,
            # Across worker processes the worst state is the one to see.
            multiprocess_mode="max",
        )
        self.sync = Counter(
            "edge_agent_redis_sync_events",
            "Sync events from other replicas: received, applied (every subscriber took "
            "it), dropped (undecodable or newer schema), failed (a subscriber raised).",
            ["outcome"],
            registry=r,
        )
        self.records_dropped = Counter(
            "edge_agent_redis_records_dropped",
            "Records read from Redis and dropped, by record (entry, event) and reason.",
            ["record", "reason"],
            registry=r,
        )
        self.warm = Counter(
            "edge_agent_redis_warm_entries_loaded",
            "Entries handed to the local tiers by warm start.",
            registry=r,
        )
        self.queue_drops = Counter(
            "edge_agent_redis_put_queue_drops",
            "Writes dropped before reaching Redis: full (queue), open (breaker), expired.",
            ["reason"],
            registry=r,
        )


# -- write queue items --------------------------------------------------------------


@dataclass(slots=True)
class _Put:
    entry: SharedEntry
    op: str = "put"


@dataclass(slots=True)
class _Evict:
    keys: tuple[str, ...]
    op: str = "evict"


@dataclass(slots=True)
class _Release:
    key: str
    done: asyncio.Future[bool]
    op: str = "lease_release"


_Item = _Put | _Evict | _Release


@dataclass(slots=True)
class _Waiters:
    futures: list[asyncio.Future[SharedEntry]] = field(default_factory=list)


# -- the tier -----------------------------------------------------------------------


class RedisTier:
    """One process's view of the shared tier. Not thread-safe: one event loop."""

    def __init__(
        self,
        cfg: RedisCache,
        *,
        replica_id: str,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        queue_size: int = _QUEUE_SIZE,
        reconnect_base_s: float = 0.1,
        reconnect_max_s: float = 5.0,
    ) -> None:
        if cfg.url is None:
            raise ValueError("cache.redis.url is not set")
        self.cfg = cfg
        self._password = password(cfg)
        self.replica_id = replica_id
        self._prefix = cfg.key_prefix
        self._stream = rec.stream_name(self._prefix)
        self._clock = clock
        self._timeout_s = cfg.timeout_ms / 1000
        # Writes, scans and purges are off the request path: give them more room.
        self._slow_timeout_s = max(4 * self._timeout_s, 0.25)
        self._reconnect = (reconnect_base_s, reconnect_max_s)
        # Metric names are fixed: one RedisTier per registry.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._m = _Metrics(self.registry)
        self._breaker = Breaker(cfg.failure_threshold, cfg.open_s, on_change=self._changed)
        self._m.breaker.set(0)
        # One immediate retry (a pooled connection gone stale after a Redis restart);
        # anything longer is for the breaker to decide.
        self._client = self._connect(socket_timeout=self._slow_timeout_s, retries=1)
        # Blocking reads get their own connections and a socket timeout above BLOCK;
        # no retries: the reader loop has its own backoff.
        self._reader_client = self._connect(
            socket_timeout=_READ_BLOCK_MS / 1000 + self._slow_timeout_s + 0.5, retries=0
        )
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._pending: _Tally[str] = _Tally()  # keys with a put in the queue
        self._callbacks: list[SyncCallback] = []
        self._waiters: dict[str, _Waiters] = {}
        self._last_id: bytes | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stray: set[asyncio.Future[bool]] = set()  # late-lease releases in flight
        self._cb_logged_at = -_CB_LOG_EVERY_S

    def _connect(self, *, socket_timeout: float, retries: int) -> Redis | RedisCluster:
        return connect(
            self.cfg,
            socket_timeout=socket_timeout,
            connect_timeout=self._slow_timeout_s,
            retries=retries,
            secret=self._password or "",
        )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        return self._breaker.state

    @property
    def reading(self) -> bool:
        """True once the reader knows where the stream stood (events after it arrive)."""
        return self._last_id is not None

    async def start(self) -> None:
        """Start the writer and the sync reader. Never raises when Redis is down."""
        if self._tasks:
            return
        # Pin the stream position now if Redis answers in time, so events written after
        # start() returns are delivered; otherwise the reader pins it when it connects.
        with contextlib.suppress(Exception):
            self._last_id = await _bounded(self._tail_id(), self._slow_timeout_s)
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="edge-agent-redis-writer"),
            asyncio.create_task(self._read_loop(), name="edge-agent-redis-reader"),
        ]

    async def close(self, flush_s: float = 1.0) -> None:
        """Flush queued writes (bounded by `flush_s`), stop the tasks, disconnect."""
        if self._tasks and not self._queue.empty():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_s):
                    await self._queue.join()
        for task in self._tasks:
            task.cancel()
        # wait(), not `await task`: suppressing the task's CancelledError would also
        # swallow a cancellation of close() itself. Bounded: a stuck task is abandoned.
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=2 * self._slow_timeout_s)
            if pending:
                log.warning("redis tier: %d background task(s) did not stop", len(pending))
        self._tasks = []
        for client in (self._client, self._reader_client):
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> SharedEntry | None:
        """The live entry for `key`, or None (miss, error, timeout, breaker open)."""
        name = rec.entry_name(self._prefix, key)
        outcome, raw = await self._call(lambda c: c.get(name), self._timeout_s)
        if outcome != "ok":
            self._m.ops.labels("get", outcome).inc()
            return None
        entry = self._decode_entry(raw)
        self._m.ops.labels("get", "miss" if entry is None else "hit").inc()
        return entry

    def _decode_entry(self, raw: bytes | None) -> SharedEntry | None:
        if raw is None:
            return None
        entry = rec.decode_entry(raw, self._dropped_entry)
        if entry is None or entry.expires_at <= self._clock():
            return None
        return entry

    def _dropped_entry(self, reason: rec.DropReason) -> None:
        self._m.records_dropped.labels("entry", reason).inc()

    def _dropped_event(self, reason: rec.DropReason) -> None:
        self._m.records_dropped.labels("event", reason).inc()

    async def warm(self, limit: int | None = None) -> AsyncIterator[SharedEntry]:
        """Live entries for a warm start, at most min(limit, warm_max_entries).

        SCAN + MGET in batches; expired and undecodable entries are skipped. Stops
        early (with one log line) when Redis fails: warming is best-effort.
        """
        cap = self.cfg.warm_max_entries if limit is None else min(limit, self.cfg.warm_max_entries)
        if cap <= 0:
            return
        loaded = 0
        names: list[bytes] = []
        scan = self._client.scan_iter(match=rec.entry_pattern(self._prefix), count=_SCAN_COUNT)
        try:
            done = False
            while not done and loaded < cap:
                outcome, name = await self._call(lambda _c: anext(scan, None), self._slow_timeout_s)
                if outcome != "ok":
                    self._m.ops.labels("warm", outcome).inc()
                    log.warning("warm start stopped after %d entries: redis %s", loaded, outcome)
                    return
                if name is not None:
                    names.append(name)
                done = name is None
                if names and (done or len(names) >= _SCAN_COUNT):
                    batch, names = names, []
                    outcome, values = await self._call(
                        lambda c, b=batch: self._mget(c, b), self._slow_timeout_s
                    )
                    if outcome != "ok":
                        self._m.ops.labels("warm", outcome).inc()
                        log.warning(
                            "warm start stopped after %d entries: redis %s", loaded, outcome
                        )
                        return
                    for raw in values:
                        entry = self._decode_entry(raw)
                        if entry is None:
                            continue
                        self._m.warm.inc()
                        loaded += 1
                        yield entry
                        if loaded >= cap:
                            break
            self._m.ops.labels("warm", "ok").inc()
        finally:
            with contextlib.suppress(Exception):
                await scan.aclose()

    def _mget(self, client: Any, names: list[bytes]) -> Awaitable[list[bytes | None]]:
        if self.cfg.cluster:
            return client.mget_nonatomic(names)  # keys live on different nodes
        return client.mget(names)

    # -- writes ------------------------------------------------------------------------

    def put(self, entry: SharedEntry) -> None:
        """Store `entry` and announce it to the other replicas. Never blocks or raises."""
        if entry.ttl_ms(self._clock()) <= 0:
            self._drop("put", "expired")
            return
        if self._enqueue(_Put(entry)):
            self._pending[entry.key] += 1

    def evict(self, keys: Iterable[str]) -> None:
        """Delete entries everywhere (fire-and-forget). Never blocks or raises."""
        keys = tuple(keys)
        if keys:
            self._enqueue(_Evict(keys))

    def _enqueue(self, item: _Item) -> bool:
        if self._breaker.rejecting():
            self._drop(item.op, "open")
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._drop(item.op, "full")
            return False
        return True

    def _drop(self, op: str, reason: str) -> None:
        self._m.queue_drops.labels(reason).inc()
        self._m.ops.labels(op, "dropped").inc()

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _WRITE_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception:  # a bug must not kill the writer: the queue would fill up
                log.exception("redis writer failed on a batch of %d", len(batch))
            finally:
                for item in batch:
                    if isinstance(item, _Put):
                        self._pending[item.entry.key] -= 1
                        if self._pending[item.entry.key] <= 0:
                            del self._pending[item.entry.key]
                    elif not item.done.done():
                        item.done.set_result(False)
                    self._queue.task_done()

    async def _write(self, batch: list[_Item]) -> None:
        now = self._clock()
        spans: list[tuple[_Item, int, int]] = []  # item, first result index, count

        def build(client: Any) -> Awaitable[list[Any]]:
            pipe = client.pipeline(transaction=not self.cfg.cluster)
            n = 0
            for item in batch:
                start = n
                if isinstance(item, _Put):
                    n += self._add_put(pipe, item.entry, now)
                elif isinstance(item, _Evict):
                    for key in item.keys:
                        pipe.unlink(rec.entry_name(self._prefix, key))
                    self._add_event(pipe, SyncEvent.evict(self.replica_id, item.keys))
                    n += len(item.keys) + 1
                else:
                    pipe.eval(
                        _RELEASE_LUA, 1, rec.lease_name(self._prefix, item.key), self.replica_id
                    )
                    n += 1
                spans.append((item, start, n - start))
            # Per-command errors come back as values: one bad entry spoils only itself.
            return pipe.execute(raise_on_error=False)

        outcome, results = await self._call(build, self._slow_timeout_s)
        for item, start, count in spans or [(i, 0, 0) for i in batch]:
            if outcome != "ok":
                self._m.ops.labels(item.op, outcome).inc()
                continue
            if count == 0:
                self._drop(item.op, "expired")
                continue
            mine = results[start : start + count]
            failed = any(isinstance(r, Exception) for r in mine)
            self._m.ops.labels(item.op, "error" if failed else "ok").inc()
            if isinstance(item, _Release) and not item.done.done():
                item.done.set_result(not failed and bool(mine and mine[0]))

    def _add_put(self, pipe: Any, entry: SharedEntry, now: float) -> int:
        ttl = entry.ttl_ms(now)
        if ttl <= 0:  # expired while queued: nothing to write (counted as dropped)
            return 0
        pipe.set(rec.entry_name(self._prefix, entry.key), rec.encode_entry(entry), px=ttl)
        n = 1
        for index, value in (
            (rec.tenant_index_name, entry.tenant),
            (rec.model_index_name, entry.model),
        ):
            if value:
                pipe.eval(
                    _INDEX_LUA, 1, index(self._prefix, value), entry.expires_at, entry.key, now, ttl
                )
                n += 1
        self._add_event(pipe, SyncEvent.store(self.replica_id, entry))
        return n + 1

    def _add_event(self, pipe: Any, event: SyncEvent) -> None:
        fields = {
            rec.STREAM_REPLICA_FIELD: self.replica_id,
            rec.STREAM_DATA_FIELD: rec.encode_event(event),
        }
        pipe.xadd(self._stream, fields, maxlen=self.cfg.stream_maxlen, approximate=True)

    async def purge(
        self,
        *,
        tenant: str | None = None,
        model: str | None = None,
        key: str | None = None,
        all: bool = False,
    ) -> int:
        """Delete matching entries in Redis and tell every other replica; returns how many.

        Filters combine with AND. The caller clears its own local tiers (its own events
        are not delivered back to it). Raises ValueError without a filter, and
        RedisTierError when Redis cannot be reached (the purge did not reach the others).
        """
        filt = PurgeFilter(tenant=tenant, model=model, key=key, all=all)
        if filt.all:
            deleted = await self._unlink_scan(rec.entry_pattern(self._prefix), count=True)
            await self._unlink_scan(rec.index_pattern(self._prefix), count=False)
        else:
            deleted = await self._purge_selected(filt)
        event = SyncEvent.purge_(self.replica_id, filt)
        await self._must(lambda c: self._xadd(c, event), "purge")
        self._m.ops.labels("purge", "ok").inc()
        return deleted

    def _xadd(self, client: Any, event: SyncEvent) -> Awaitable[Any]:
        fields = {
            rec.STREAM_REPLICA_FIELD: self.replica_id,
            rec.STREAM_DATA_FIELD: rec.encode_event(event),
        }
        return client.xadd(self._stream, fields, maxlen=self.cfg.stream_maxlen, approximate=True)

    async def _purge_selected(self, filt: PurgeFilter) -> int:
        now = self._clock()
        candidates: set[str] | None = {filt.key} if filt.key is not None else None
        indexes: list[str] = []
        for value, index in (
            (filt.tenant, rec.tenant_index_name),
            (filt.model, rec.model_index_name),
        ):
            if value is None:
                continue
            name = index(self._prefix, value)
            indexes.append(name)
            members = await self._must(
                lambda c, n=name: c.zrangebyscore(n, f"({now}", "+inf"), "purge"
            )
            found = {m.decode() for m in members}
            candidates = found if candidates is None else candidates & found
        keys = sorted(candidates or ())
        deleted = 0
        for i in range(0, len(keys), _SCAN_COUNT):
            chunk = keys[i : i + _SCAN_COUNT]

            def run(client: Any, chunk: list[str] = chunk) -> Awaitable[list[Any]]:
                pipe = client.pipeline(transaction=False)
                for k in chunk:
                    pipe.unlink(rec.entry_name(self._prefix, k))
                for name in indexes:
                    pipe.zrem(name, *chunk)
                return pipe.execute()

            results = await self._must(run, "purge")
            deleted += sum(int(r) for r in results[: len(chunk)])
        return deleted

    async def _unlink_scan(self, pattern: str, *, count: bool) -> int:
        scan = self._client.scan_iter(match=pattern, count=_SCAN_COUNT)
        deleted = 0
        try:
            names: list[bytes] = []
            while True:
                name = await self._must(lambda _c: anext(scan, None), "purge")
                if name is not None:
                    names.append(name)
                if names and (name is None or len(names) >= _SCAN_COUNT):
                    batch, names = names, []

                    def run(client: Any, batch: list[bytes] = batch) -> Awaitable[list[Any]]:
                        pipe = client.pipeline(transaction=False)
                        for n in batch:
                            pipe.unlink(n)
                        return pipe.execute()

                    deleted += sum(int(r) for r in await self._must(run, "purge"))
                if name is None:
                    return deleted if count else 0
        finally:
            with contextlib.suppress(Exception):
                await scan.aclose()

    async def _must(self, fn: Callable[[Any], Awaitable[Any]], op: str) -> Any:
        outcome, value = await self._call(fn, self._slow_timeout_s)
        if outcome != "ok":
            self._m.ops.labels(op, outcome).inc()
            raise RedisTierError(f"redis {outcome} during {op} (breaker {self.state})")
        return value

    # -- leases (cross-replica coalescing) ---------------------------------------------

    async def acquire_lease(self, key: str, ttl_ms: int) -> bool:
        """True if this replica now owns the lease on `key` for `ttl_ms`.

        False when another replica holds it, and also when Redis is unavailable: the
        caller's `wait_for` then returns None at once and it goes upstream itself.
        """
        name = rec.lease_name(self._prefix, key)
        outcome, got = await self._call(
            lambda c: c.set(name, self.replica_id, nx=True, px=ttl_ms), self._timeout_s
        )
        if outcome != "ok":
            self._m.ops.labels("lease_acquire", outcome).inc()
            # The SET may still land after the deadline: release it (owner-checked), or
            # this replica would wait for its own lease.
            task = asyncio.ensure_future(self.release_lease(key))
            self._stray.add(task)
            task.add_done_callback(self._stray.discard)
            return False
        self._m.ops.labels("lease_acquire", "hit" if got else "miss").inc()
        return bool(got)

    async def release_lease(self, key: str) -> bool:
        """Release the lease if this replica owns it; True when it was released.

        A put of `key` still queued is written first (the release queues behind it),
        so a waiter never sees the lease gone before the entry is there.
        """
        if key in self._pending and self._tasks:
            done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            if not self._enqueue(_Release(key, done)):
                return False  # the lease's own TTL ends it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * self._slow_timeout_s):
                    return await asyncio.shield(done)
            return False
        name = rec.lease_name(self._prefix, key)
        outcome, n = await self._call(
            lambda c: c.eval(_RELEASE_LUA, 1, name, self.replica_id), self._slow_timeout_s
        )
        self._m.ops.labels("lease_release", outcome).inc()
        return outcome == "ok" and bool(n)

    async def wait_for(self, key: str, timeout_s: float) -> SharedEntry | None:
        """Wait (at most `timeout_s`) for another replica to store `key`.

        Returns the entry, or None on timeout, when the lease is gone without an entry
        (the owner gave up), or when Redis is unavailable. Wakes on the owner's store
        event; polls in case the event is missed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        fut: asyncio.Future[SharedEntry] = loop.create_future()
        slot = self._waiters.setdefault(key, _Waiters())
        slot.futures.append(fut)
        entry_key = rec.entry_name(self._prefix, key)
        lease_key = rec.lease_name(self._prefix, key)
        delay = _WAIT_POLL_S[0]

        def poll(client: Any) -> Awaitable[list[Any]]:
            pipe = client.pipeline(transaction=False)
            pipe.get(entry_key)
            pipe.get(lease_key)
            return pipe.execute()

        try:
            while True:
                outcome, values = await self._call(poll, self._timeout_s)
                if outcome != "ok":
                    self._m.ops.labels("wait", outcome).inc()
                    return None
                entry = self._decode_entry(values[0])
                if entry is not None:
                    self._m.ops.labels("wait", "hit").inc()
                    return entry
                remaining = deadline - loop.time()
                owner = values[1]
                own = owner is not None and _text(owner) == self.replica_id
                # No lease: its holder gave up. Our own: a stale one (a late SET), not
                # worth waiting for — this process coalesces its own requests locally.
                if owner is None or own or remaining <= 0:
                    self._m.ops.labels("wait", "miss").inc()
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, remaining)):
                        entry = await asyncio.shield(fut)
                        self._m.ops.labels("wait", "hit").inc()
                        return entry
                delay = min(delay * 2, _WAIT_POLL_S[1])
        finally:
            slot.futures.remove(fut)
            if not slot.futures:
                self._waiters.pop(key, None)

    # -- sync stream ---------------------------------------------------------------------

    def subscribe(self, callback: SyncCallback) -> Callable[[], None]:
        """Call `callback(event)` for each event another replica/worker writes.

        Sync or async callbacks; they run on the reader task, in stream order, so a
        slow callback delays later events. Returns a function that unsubscribes.
        """
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    async def _tail_id(self) -> bytes:
        # XREAD with "$" would lose whatever is written between two calls: pin the id.
        last = await self._reader_client.xrevrange(self._stream, count=1)
        return last[0][0] if last else b"0-0"

    async def _read_loop(self) -> None:
        base, cap = self._reconnect
        attempt = 0
        while True:
            try:
                if self._last_id is None:
                    self._last_id = await _bounded(self._tail_id(), self._slow_timeout_s)
                reply = await _bounded(
                    self._reader_client.xread(
                        {self._stream: self._last_id}, count=_READ_COUNT, block=_READ_BLOCK_MS
                    ),
                    _READ_BLOCK_MS / 1000 + self._slow_timeout_s,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == 0:
                    log.warning("redis sync reader lost the stream (%r); reconnecting", exc)
                self._breaker.failure(f"sync read: {exc!r}", passive=True)
                delay = min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if attempt:
                log.info("redis sync reader resumed after %d failed attempts", attempt)
                attempt = 0
            self._breaker.success(passive=True)
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    await self._handle(fields)

    async def _handle(self, fields: dict[bytes, bytes]) -> None:
        if fields.get(rec.STREAM_REPLICA_FIELD) == self.replica_id.encode():
            return  # our own event: skip it without parsing it
        data = fields.get(rec.STREAM_DATA_FIELD)
        if data is None:
            self._dropped_event("corrupt")
            event = None
        else:
            event = rec.decode_event(data, self._dropped_event)
        if event is None:
            self._m.sync.labels("dropped").inc()
            return
        if event.replica == self.replica_id:
            return
        self._m.sync.labels("received").inc()
        if event.kind == "store" and event.entry is not None:
            slot = self._waiters.get(event.entry.key)
            for fut in slot.futures if slot else ():
                if not fut.done():
                    fut.set_result(event.entry)
        ok = True
        for callback in list(self._callbacks):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                ok = False
                now = time.monotonic()
                if now - self._cb_logged_at >= _CB_LOG_EVERY_S:
                    self._cb_logged_at = now
                    log.exception(
                        "redis sync subscriber failed (logged once per %gs)", _CB_LOG_EVERY_S
                    )
        self._m.sync.labels("applied" if ok else "failed").inc()

    # -- the guarded call --------------------------------------------------------------

    async def _call(
        self, fn: Callable[[Any], Awaitable[Any]], timeout_s: float
    ) -> tuple[Outcome, Any]:
        """Run one Redis round trip under the breaker and a deadline. Never raises
        (except cancellation of the caller)."""
        if not self._breaker.allow():
            return "dropped", None
        try:
            value = await _bounded(fn(self._client), timeout_s)
        except asyncio.CancelledError:
            self._breaker.release()
            raise
        except (TimeoutError, RedisTimeoutError):
            self._breaker.failure(f"timeout after {timeout_s * 1000:.0f} ms")
            return "timeout", None
        except (RedisError, OSError) as exc:
            self._breaker.failure(repr(exc))
            return "error", None
        except Exception as exc:
            # A bug or an unexpected reply must cost the request its cache, never more.
            log.exception("unexpected error in a redis call")
            self._breaker.failure(repr(exc))
            return "error", None
        self._breaker.success()
        return "ok", value

    def _changed(self, old: BreakerState, new: BreakerState, why: str) -> None:
        self._m.breaker.set(_STATE_VALUE[new])
        level = logging.INFO if new == "up" else logging.WARNING
        log.log(level, "redis tier %s -> %s (%s)", old, new, why)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
