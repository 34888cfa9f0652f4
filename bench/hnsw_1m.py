"""HNSW search latency at 1M entries (the build takes minutes, so it is its own script).

Usage: .venv/bin/python bench/hnsw_1m.py [--entries N]

Builds the agent's HNSW index kind (faiss IndexHNSWFlat, M and efSearch as in
edge_agent/cache/semantic.py) over N random unit vectors of dimension 384, then times
300 single-query searches on one OpenMP thread, as the agent's lookup thread runs them.
Random vectors are the hard case for HNSW (no clusters), so the times are an upper bound
for real embeddings. Prints the build time, memory and p50/p99.
"""

from __future__ import annotations

import argparse
import resource
import time

import faiss
import numpy as np

from edge_agent.cache import semantic

DIM = 384


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    index = faiss.IndexHNSWFlat(DIM, semantic._HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = semantic._HNSW_EF_SEARCH
    started = time.perf_counter()
    for start in range(0, args.entries, 100_000):
        batch = rng.standard_normal((min(100_000, args.entries - start), DIM)).astype(np.float32)
        batch /= np.linalg.norm(batch, axis=1, keepdims=True)
        index.add(batch)
        print(f"  {start + len(batch):,} added ({time.perf_counter() - started:.0f} s)", flush=True)
    built = time.perf_counter() - started
    probes = rng.standard_normal((300, DIM)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    faiss.omp_set_num_threads(1)
    lat = []
    for v in probes:
        t0 = time.perf_counter()
        index.search(v.reshape(1, -1), 4)
        lat.append(time.perf_counter() - t0)
    p50, p99 = (float(np.percentile(lat, q) * 1000) for q in (50, 99))
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(
        f"IndexHNSWFlat M={semantic._HNSW_M} efSearch={semantic._HNSW_EF_SEARCH}, "
        f"{args.entries:,} entries: build {built:.0f} s, peak RSS {rss_gb:.1f} GB, "
        f"search p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )


if __name__ == "__main__":
    main()
