"""Memory per semantic-cache entry: RSS growth of a SemanticTier holding N entries.

Run: .venv/bin/python bench/semantic_memory.py [--entries 100000]
Vectors are random unit vectors of the local embedder's dimension (384); texts are
short synthetic questions; answer bodies are a shared 1 KB bytes object (the exact tier
holds the same object, so bodies are reported separately, not per entry).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
from collections.abc import Sequence

import numpy as np

from edge_agent.cache import verify
from edge_agent.cache.semantic import SemanticTier

DIM = 384


class NoEmbedder:
    id = "bench-random"
    dim = DIM
    cpu_s = 0.0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    async def close(self) -> None:
        pass


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(entries: int, hnsw_above: int) -> tuple[float, float]:
    tier = SemanticTier(NoEmbedder(), max_entries=entries + 1, ttl_s=3600, hnsw_above=hnsw_above)
    rng = np.random.default_rng(0)
    body = b"x" * 1024
    gc.collect()
    before = rss_bytes()
    for start in range(0, entries, 10_000):
        n = min(10_000, entries - start)
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i in range(n):
            text = f"How do I configure feature number {start + i} in product line {i % 97}?"
            tier.store("p", text, vectors[i], verify.signature(text), body)
    # Let the worker thread finish the index work before measuring.
    await asyncio.get_running_loop().run_in_executor(tier._worker, lambda: None)
    gc.collect()
    grown = rss_bytes() - before
    await tier.close()
    return grown / entries, grown / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    for label, hnsw_above in (("flat", 10**9), ("HNSW (M=32)", 1000)):
        per_entry, total_mib = asyncio.run(measure(args.entries, hnsw_above))
        print(
            f"{label:12s} {args.entries:>8,} entries: {per_entry:,.0f} bytes/entry "
            f"({total_mib:,.0f} MiB)"
        )


if __name__ == "__main__":
    main()
