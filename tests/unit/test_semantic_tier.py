"""The FAISS tier: partitions, flat → HNSW, removal, TTL, bounds, and the decision."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from edge_agent.cache.embedders import EmbedderError
from edge_agent.cache.semantic import PartitionIndex, SemanticTier
from tests.helpers import Clock

DIM = 16


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class TableEmbedder:
    """Vectors chosen by the test: text → vector, so scores are exact and known."""

    id = "test-table"
    dim = DIM
    cpu_s = 0.0

    def __init__(self) -> None:
        self.table: dict[str, np.ndarray] = {}
        self.fail = False
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise EmbedderError("embedder down (test)")
        return np.vstack([self.table[t] for t in texts])

    async def close(self) -> None:
        pass


def test_partition_index_flat_then_hnsw_with_removal() -> None:
    part = PartitionIndex(DIM, hnsw_above=1000)
    vectors = {i: unit(i) for i in range(1, 1301)}
    for i, v in vectors.items():
        part.add(v, i)
        if i == 10:
            assert not part.hnsw
    assert part.hnsw and part.live == 1300
    assert part.search(vectors[77], 1)[0][0] == 77
    part.remove(77)
    assert all(i != 77 for i, _ in part.search(vectors[77], 4))
    # Removals leave tombstones in the graph; a rebuild drops them before they
    # reach a fifth of the index.
    rebuilt = False
    for i in range(1, 400):
        if i != 77:
            before = len(part.dead)
            part.remove(i)
            rebuilt = rebuilt or len(part.dead) < before
            assert len(part.dead) * 5 <= part.live + len(part.dead)
    assert rebuilt and part.live == 901
    assert part.search(vectors[900], 1)[0][0] == 900


def make_tier(embedder: TableEmbedder, clock: Clock | None = None, **kw: object) -> SemanticTier:
    args: dict = {"max_entries": 100, "ttl_s": 60.0, "threshold": 0.9, "use_verifier": False}
    args.update(kw)
    return SemanticTier(embedder, clock=clock or Clock(), **args)


def near(v: np.ndarray, cos: float, seed: int = 99) -> np.ndarray:
    """A unit vector at cosine `cos` from v."""
    other = unit(seed)
    other -= other.dot(v) * v
    other /= np.linalg.norm(other)
    return (cos * v + np.sqrt(1 - cos**2) * other).astype(np.float32)


async def test_hit_above_threshold_only_in_the_same_partition() -> None:
    emb = TableEmbedder()
    base = unit(1)
    emb.table = {"q": base, "close": near(base, 0.95), "far": near(base, 0.8)}
    tier = make_tier(emb)
    first = await tier.lookup("p1", "q")
    # No candidate: the query was not parsed (the verifier only runs for candidates).
    assert first.hit is None and first.vector is not None and first.signature is None
    tier.store("p1", "q", first.vector, first.signature, b'{"answer": 1}')
    hit = await tier.lookup("p1", "close")
    assert hit.hit is not None and hit.hit.entry.body == b'{"answer": 1}'
    assert hit.hit.score == pytest.approx(0.95, abs=1e-4)
    assert (await tier.lookup("p1", "far")).hit is None
    assert (await tier.lookup("p2", "close")).hit is None  # another context


async def test_ttl_and_max_entries() -> None:
    emb = TableEmbedder()
    clock = Clock()
    tier = make_tier(emb, clock, max_entries=2, ttl_s=10.0)
    for i in range(3):
        emb.table[f"t{i}"] = unit(10 + i)
        r = await tier.lookup("p", f"t{i}")
        assert r.vector is not None
        tier.store("p", f"t{i}", r.vector, r.signature, b"{}")
    assert len(tier) == 2
    assert (await tier.lookup("p", "t0")).hit is None  # evicted: oldest first
    assert (await tier.lookup("p", "t2")).hit is not None
    clock.now += 11
    assert (await tier.lookup("p", "t2")).hit is None  # expired


async def test_embedder_failure_is_a_result_not_an_exception() -> None:
    emb = TableEmbedder()
    emb.fail = True
    result = await make_tier(emb).lookup("p", "anything")
    assert result.hit is None and result.vector is None
    assert result.error and "embedder down" in result.error


async def test_verifier_refuses_a_number_swap_cosine_would_accept() -> None:
    emb = TableEmbedder()
    base = unit(3)
    a, b = "Convert 30 degrees Celsius to Fahrenheit", "Convert 35 degrees Celsius to Fahrenheit"
    emb.table = {a: base, b: near(base, 0.97)}
    for use_verifier, expect_hit in ((False, True), (True, False)):
        tier = make_tier(emb, use_verifier=use_verifier, threshold=0.9)
        r = await tier.lookup("p", a)
        assert r.vector is not None
        tier.store("p", a, r.vector, r.signature, b"{}")
        found = await tier.lookup("p", b)
        assert (found.hit is not None) is expect_hit
        if not expect_hit:
            assert found.refused


async def test_large_partitions_move_off_the_event_loop() -> None:
    emb = TableEmbedder()
    tier = make_tier(emb, max_entries=5000, hnsw_above=3000)
    for i in range(2100):
        tier.store("p", f"t{i}", unit(1000 + i), _sig(f"t{i}"), b"{}")
    emb.table["q"] = unit(1000 + 2050)
    result = await tier.lookup("p", "q")
    assert result.hit is not None and result.hit.entry.text == "t2050"
    await tier.close()


def _sig(text: str):  # type: ignore[no-untyped-def]
    from edge_agent.cache import verify

    return verify.signature(text)


async def test_a_slow_lookup_gives_up_within_its_budget() -> None:
    import asyncio
    import time

    class SlowEmbedder(TableEmbedder):
        async def embed(self, texts: Sequence[str]) -> np.ndarray:
            await asyncio.sleep(5)
            return await super().embed(texts)

    tier = make_tier(SlowEmbedder(), lookup_timeout_s=0.05)
    started = time.monotonic()
    result = await tier.lookup("p", "anything")
    assert time.monotonic() - started < 1
    assert result.hit is None and result.timed_out and result.error


async def test_empty_partitions_are_dropped_and_bytes_are_bounded() -> None:
    emb = TableEmbedder()
    tier = make_tier(emb, max_entries=3, max_bytes=250)
    for i in range(10):  # ten conversations, one entry each
        tier.store(f"p{i}", f"t{i}", unit(200 + i), _sig(f"t{i}"), b"x" * 50)
    assert len(tier) == 3 and tier.partition_count() == 3
    tier.store("big", "big", unit(300), _sig("big"), b"y" * 200)
    assert tier.bytes == 250 and len(tier) == 2  # the two oldest answers made room
    tier.store("huge", "huge", unit(301), _sig("huge"), b"z" * 300)
    assert "huge" not in {e.text for e in tier._entries.values()}  # larger than the cap
    tier.clear()
    assert tier.partition_count() == 0 and tier.bytes == 0


async def test_a_broken_index_costs_the_lookup_not_the_request() -> None:
    emb = TableEmbedder()
    emb.table["q"] = unit(7)
    tier = make_tier(emb)
    tier.store("p", "q", unit(7), _sig("q"), b"{}")

    def boom(*_: object) -> list[tuple[int, float]]:
        raise RuntimeError("faiss exploded (test)")

    for part in tier._partitions.values():
        part.search = boom  # type: ignore[method-assign]
    result = await tier.lookup("p", "q")
    assert result.hit is None and result.error and "exploded" in result.error


async def test_rebuilds_happen_beside_the_serving_index() -> None:
    import asyncio

    emb = TableEmbedder()
    tier = make_tier(emb, max_entries=100_000, hnsw_above=1000)
    vectors = {i: unit(5000 + i) for i in range(3000)}
    for i in range(2500):
        tier.store("p", f"t{i}", vectors[i], _sig(f"t{i}"), b"{}")
    # Removals (and more adds) while graphs are being rebuilt elsewhere.
    for i in range(0, 1200, 2):
        tier.remove(next(e.id for e in tier._entries.values() if e.text == f"t{i}"))
    for i in range(2500, 3000):
        tier.store("p", f"t{i}", vectors[i], _sig(f"t{i}"), b"{}")
    [part] = tier._partitions.values()
    loop = asyncio.get_running_loop()
    for _ in range(400):  # let the builder and the worker settle
        await loop.run_in_executor(tier._builder, lambda: None)
        await loop.run_in_executor(tier._worker, lambda: None)
        if not part.rebuilding:
            break
    assert not part.rebuilding and part.hnsw
    assert part.live == len(tier) == 3000 - 600
    live_texts = {e.text for e in tier._entries.values()}
    for i in (0, 2, 1, 3, 1199, 2999):
        emb.table["q"] = vectors[i]
        found = await tier.lookup("p", "q")
        if f"t{i}" in live_texts:
            assert found.hit is not None and found.hit.entry.text == f"t{i}"
        else:
            assert found.hit is None or found.hit.entry.text != f"t{i}"
    await tier.close()


async def test_an_entry_is_parsed_the_first_time_it_is_a_candidate() -> None:
    """Entries are stored without a signature (most never become a candidate); the
    verifier thread parses one when a lookup first finds it above the threshold."""
    emb = TableEmbedder()
    emb.table = {"How tall is Everest?": unit(7), "Where is Paris?": unit(8)}
    tier = make_tier(emb, use_verifier=True)
    tier.store("p", "How tall is Everest?", unit(7), None, b"{}")
    entry = next(iter(tier._entries.values()))
    r = await tier.lookup("p", "Where is Paris?")  # far below the threshold
    assert r.hit is None and entry.signature is None and r.signature is None
    cpu = tier.verify_cpu.s
    r = await tier.lookup("p", "How tall is Everest?")
    assert r.hit is not None and r.hit.entry is entry
    assert entry.signature is not None and r.signature is not None
    assert tier.verify_cpu.s > cpu  # the verifier's work is charged to the tier


async def test_an_entry_purged_during_verification_is_not_served() -> None:
    emb = TableEmbedder()
    emb.table = {"How tall is Everest?": unit(7)}
    tier = make_tier(emb, use_verifier=True)
    first = await tier.lookup("p", "How tall is Everest?")
    tier.store("p", "How tall is Everest?", first.vector, first.signature, b"{}")
    entry_id = next(iter(tier._entries))
    verify_one = tier._verify

    def purge_then_verify(text, candidates):  # type: ignore[no-untyped-def]
        tier.remove(entry_id)  # a purge lands while the verifier thread works
        return verify_one(text, candidates)

    tier._verify = purge_then_verify  # type: ignore[method-assign]
    r = await tier.lookup("p", "How tall is Everest?")
    assert r.hit is None
