#!/usr/bin/env python3
"""Quality and cost of the semantic cache's hit decision (`make bench-cache`).

Pairwise: for a labelled pair (a, b), would the entry stored for prompt a answer the
query b? Three decisions are compared on the same embeddings (LocalEmbedder,
all-MiniLM-L6-v2 int8):

  cosine only   hit when cosine >= t
  before        the decision as it was before the alignment guard: cosine >= 0.82, the
                word guards (as they are now) and the frame guard, overruled at cosine
                >= 0.95
  shipped       hit when cosine >= t and edge_agent.cache.verify.check() agrees; the
                default is t = verify.DEFAULT_THRESHOLD

Data: the project's near-miss set (bench/semantic_nearmiss_pairs.jsonl: prompts of the
kind people send to assistants at work by ten writers; `dev` tuned on; `test` and
`holdout` written by others, each first evaluated with the verifier frozen and then
used to fix what it found, see docs/semantic-cache.md), the earlier question set
(bench/semantic_pairs.jsonl, `dev` / `test`) and a fixed-seed balanced sample of the
Quora question pairs in ../shared/semantic-eval/ (read from there, never copied; see
its SOURCE.md).

Also measured: what each guard buys (leave-one-out at the default threshold), the
verifier's cost per lookup, single-query embedding latency, and index search latency.

Usage: .venv/bin/python bench/cache_quality.py [--qqp-sample N] [--seed S] [--quick]
                                               [--write-docs]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.cache import verify
from edge_agent.cache.embedders import LocalEmbedder
from edge_agent.config import SemanticCache

ROOT = Path(__file__).resolve().parent.parent

PAIRS = ROOT / "bench" / "semantic_pairs.jsonl"
NEARMISS = ROOT / "bench" / "semantic_nearmiss_pairs.jsonl"
QQP = ROOT.parent / "shared" / "semantic-eval" / "qqp_pairs.json.gz"
DOCS = ROOT / "docs" / "semantic-cache.md"
DOCS_START = "<!-- cache-quality:results:start -->"
DOCS_END = "<!-- cache-quality:results:end -->"

RECALLS = (0.3, 0.5, 0.7)
PRECISIONS = (0.95, 0.97, 0.99)
DIM = 384
REFUSED = -2.0  # score offset of a refused pair: ranks below every accepted one


@dataclass
class Dataset:
    name: str
    a: list[str]
    b: list[str]
    labels: np.ndarray  # 1 = the entry may answer the query
    kinds: list[str]
    cos: np.ndarray | None = None
    sig_a: list[verify.Signature] | None = None
    sig_b: list[verify.Signature] | None = None


# --------------------------------------------------------------------------- data


def load_pairs(path: Path, prefix: str) -> dict[str, Dataset]:
    rows: dict[str, list[dict[str, object]]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["split"], []).append(row)
    return {
        split: Dataset(
            f"{prefix}/{split}",
            [str(r["a"]) for r in items],
            [str(r["b"]) for r in items],
            np.asarray([int(str(r["label"])) for r in items], dtype=np.int8),
            [str(r["kind"]) for r in items],
        )
        for split, items in sorted(rows.items())
    }


def load_qqp(path: Path, sample: int, seed: int) -> Dataset:
    """A balanced sample (half duplicates) drawn with a fixed seed."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = json.load(f)
    rng = random.Random(seed)
    pos = [r for r in rows if r["label"] == 1]
    neg = [r for r in rows if r["label"] == 0]
    half = min(sample // 2, len(pos), len(neg))
    picked = rng.sample(pos, half) + rng.sample(neg, half)
    return Dataset(
        f"quora ({2 * half} pairs, seed {seed})",
        [r["text_a"] for r in picked],
        [r["text_b"] for r in picked],
        np.asarray([r["label"] for r in picked], dtype=np.int8),
        ["duplicate" if r["label"] else "not duplicate" for r in picked],
    )


def embed_all(embedder: LocalEmbedder, texts: Sequence[str]) -> dict[str, np.ndarray]:
    # Sorted by length so each batch pads little; every text is embedded once.
    unique = sorted(set(texts), key=len)
    vectors = embedder.embed_sync(unique)
    return dict(zip(unique, vectors, strict=True))


def prepare(ds: Dataset, vectors: dict[str, np.ndarray]) -> None:
    va = np.stack([vectors[t] for t in ds.a])
    vb = np.stack([vectors[t] for t in ds.b])
    ds.cos = np.einsum("ij,ij->i", va, vb).astype(np.float64)
    ds.sig_a = verify.signatures(ds.a)
    ds.sig_b = verify.signatures(ds.b)


# The decision before the alignment guard (for comparison): these guards at cosine
# >= 0.82, a frame-guard refusal overruled at cosine >= 0.95.
BEFORE_GUARDS = (*[g for g in verify.GUARDS if g != "align"], "frame")
BEFORE_THRESHOLD = 0.82
BEFORE_CEILING = 0.95
FRAME_REASONS = frozenset({"a key word differs", "a key word was added"})
# Kinds in which a single wrong answer misses the goal (issue: no wrong answer there).
ZERO_KINDS = ("direction", "negation", "role-swap")


def passes(ds: Dataset, guards: Sequence[str] | None) -> np.ndarray:
    """Pairs the verifier lets through, whatever the threshold."""
    assert ds.sig_a is not None and ds.sig_b is not None and ds.cos is not None
    ok = np.empty(len(ds.a), dtype=bool)
    for i, (x, y) in enumerate(zip(ds.sig_a, ds.sig_b, strict=True)):
        ok[i] = verify.check(x, y, guards) is None
    return ok


def before(ds: Dataset) -> np.ndarray:
    """Hits of the decision shipped before the alignment guard."""
    assert ds.sig_a is not None and ds.sig_b is not None and ds.cos is not None
    ok = np.empty(len(ds.a), dtype=bool)
    for i, (x, y) in enumerate(zip(ds.sig_a, ds.sig_b, strict=True)):
        reason = verify.check(x, y, BEFORE_GUARDS)
        ok[i] = reason is None or (reason in FRAME_REASONS and ds.cos[i] >= BEFORE_CEILING)
    return ok & (ds.cos >= BEFORE_THRESHOLD)


# --------------------------------------------------------------------------- metrics


@dataclass
class Curve:
    prec_at_recall: list[float | None]  # None: the decision cannot reach that recall
    recall_at_prec: list[float]
    auc: float
    max_recall: float


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties averaged."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    r = _ranks(scores)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def curve(cos: np.ndarray, labels: np.ndarray, ok: np.ndarray | None) -> Curve:
    """Precision/recall of the family "hit when cosine >= t (and the guards agree)",
    over every threshold t. Refused pairs are never hits, so recall stops below 1."""
    ok = np.ones(len(cos), dtype=bool) if ok is None else ok
    n_pos = int(labels.sum())
    cand = np.flatnonzero(ok)
    order = cand[np.argsort(-cos[cand], kind="mergesort")]
    y = labels[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(y) + 1)
    # Only cut between distinct scores: a threshold cannot split tied pairs.
    s = cos[order]
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)
    tp, k = tp[last], k[last]
    recall = tp / max(n_pos, 1)
    precision = tp / k
    p_at_r: list[float | None] = []
    for r in RECALLS:
        hit = np.flatnonzero(recall >= r)
        p_at_r.append(float(precision[hit[0]]) if len(hit) else None)
    r_at_p = []
    for p in PRECISIONS:
        good = np.flatnonzero(precision >= p)
        r_at_p.append(float(recall[good].max()) if len(good) else 0.0)
    scores = np.where(ok, cos, cos + REFUSED)
    return Curve(p_at_r, r_at_p, roc_auc(scores, labels), float(recall[-1]) if len(recall) else 0.0)


@dataclass
class Point:
    precision: float
    recall: float
    hits: int
    false_hits: int


def point(cos: np.ndarray, labels: np.ndarray, ok: np.ndarray, threshold: float) -> Point:
    hit = (cos >= threshold) & ok
    tp = int((hit & (labels == 1)).sum())
    fp = int((hit & (labels == 0)).sum())
    return Point(tp / max(tp + fp, 1), tp / max(int(labels.sum()), 1), tp + fp, fp)


def cosine_precision_at(cos: np.ndarray, labels: np.ndarray, recall: float) -> float | None:
    """Precision of cosine alone at the first threshold that reaches `recall`."""
    order = np.argsort(-cos, kind="mergesort")
    tp = np.cumsum(labels[order])
    k = np.flatnonzero(tp / max(int(labels.sum()), 1) >= recall)
    return float(tp[k[0]] / (k[0] + 1)) if len(k) else None


# --------------------------------------------------------------------------- latency


def percentiles_ms(samples: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@contextlib.contextmanager
def one_search_thread() -> Iterator[None]:
    """Search as the agent does: its lookup thread runs faiss on one OpenMP thread."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _measure(probes: np.ndarray, search: Callable[[np.ndarray], object]) -> tuple[float, float]:
    lat = []
    with one_search_thread():
        for v in probes:
            t = time.perf_counter()
            search(v)
            lat.append(time.perf_counter() - t)
    return percentiles_ms(lat)


def verifier_cost(datasets: Sequence[Dataset], threshold: float) -> list[list[str]]:
    """What the verifier adds to a lookup with a candidate above the threshold: the
    query's signature and one check (the entry's signature was made at store time).
    Cold: every cache of word knowledge emptied first (a prompt of new words; the
    WordNet files stay in the page cache, as they do in a running agent); warm: the
    caches as a running agent has them."""
    work = [
        (a, b)
        for ds in datasets
        for a, b, c in zip(ds.a, ds.b, ds.cos if ds.cos is not None else [], strict=True)
        if c >= threshold
    ]
    entries = {a: verify.signature(a) for a, _ in work}
    rows: list[list[str]] = []
    for label, cold in (("warm caches", False), ("cold caches", True)):
        lat: dict[str, list[float]] = {"short (< 300 chars)": [], "long (>= 300 chars)": []}
        for a, b in work:
            if cold:
                verify.clear_caches()
            t0 = time.perf_counter()
            verify.check(verify.signature(b), entries[a])
            lat["short (< 300 chars)" if len(b) < 300 else "long (>= 300 chars)"].append(
                time.perf_counter() - t0
            )
        for size, samples in lat.items():
            if samples:
                p50, p99 = percentiles_ms(samples)
                rows.append([f"{size}, {label}", str(len(samples)), f"{p50:.2f}", f"{p99:.2f}"])
    return rows


def search_latency(queries: list[str], embedder: LocalEmbedder, quick: bool) -> list[list[str]]:
    """Index search latency on random unit vectors (a search costs the same whatever the
    vectors mean), and embed + search end to end on the agent's index at 100k."""
    import faiss

    from edge_agent.cache import semantic

    rows: list[list[str]] = []
    rng = np.random.default_rng(0)
    probes = unit_vectors(rng, 300)
    sizes = (10_000,) if quick else (10_000, 100_000)
    data = unit_vectors(rng, max(sizes))
    m, ef = semantic._HNSW_M, semantic._HNSW_EF_SEARCH
    hnsw_above = SemanticCache().hnsw_above  # the config default

    def row(name: str, n: int, built_s: float, search: Callable[[np.ndarray], object]) -> None:
        p50, p99 = _measure(probes, search)
        rows.append([name, f"{n:,}", f"{p50:.2f}", f"{p99:.2f}", f"{built_s:.1f} s"])
        print(f"  {name}, {n:,}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({built_s:.1f} s)", flush=True)

    largest = None
    for n in sizes:
        t0 = time.perf_counter()
        part = semantic.PartitionIndex(DIM, hnsw_above)
        for i in range(n):
            part.add(data[i], i)
        kind = "HNSW" if part.hnsw else "flat"
        row(
            f"PartitionIndex ({kind})",
            n,
            time.perf_counter() - t0,
            lambda v, part=part: part.search(v, 4),
        )
        largest = part
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(DIM)
        flat.add(data[:n])
        row(
            "faiss IndexFlatIP",
            n,
            time.perf_counter() - t0,
            lambda v, idx=flat: idx.search(v.reshape(1, -1), 4),
        )
        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(DIM, m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = ef
        hnsw.add(data[:n])
        row(
            f"faiss IndexHNSWFlat (M={m}, efSearch={ef})",
            n,
            time.perf_counter() - t0,
            lambda v, idx=hnsw: idx.search(v.reshape(1, -1), 4),
        )
        del flat, hnsw
    if quick:
        return rows

    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    for _ in range(10):
        flat.add(unit_vectors(rng, 100_000))
    row(
        "faiss IndexFlatIP",
        1_000_000,
        time.perf_counter() - t0,
        lambda v, idx=flat: idx.search(v.reshape(1, -1), 4),
    )
    del flat
    rows.append(
        [
            f"faiss IndexHNSWFlat (M={m})",
            "1,000,000",
            "not measured",
            "",
            "its build takes ~10x the 100k build, over the 2-minute budget",
        ]
    )
    if largest is not None:
        # End to end as a lookup does it: embed one query (one thread), then search.
        lat = []
        with one_search_thread():
            for q in queries:
                t0 = time.perf_counter()
                largest.search(embedder.embed_sync([q])[0], 4)
                lat.append(time.perf_counter() - t0)
        p50, p99 = percentiles_ms(lat)
        rows.append(
            [
                "embed + PartitionIndex search",
                f"{largest.live:,}",
                f"{p50:.2f}",
                f"{p99:.2f}",
                "real queries",
            ]
        )
        print(f"  embed + search: p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
    return rows


# --------------------------------------------------------------------------- report


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qqp-sample", type=int, default=4000, help="balanced Quora pairs")
    # Seed 7: the verifier was developed on Quora samples drawn with seeds 0-4 and 1234.
    ap.add_argument("--seed", type=int, default=7, help="seed of the Quora sample")
    ap.add_argument("--quick", action="store_true", help="skip the 100k/1M index builds")
    ap.add_argument("--write-docs", action="store_true", help=f"rewrite results in {DOCS}")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    threshold = verify.DEFAULT_THRESHOLD

    print("loading data and models ...", flush=True)
    datasets = [*load_pairs(NEARMISS, "nearmiss").values(), *load_pairs(PAIRS, "pairs").values()]
    if QQP.exists():
        datasets.append(load_qqp(QQP, args.qqp_sample, args.seed))
    else:
        print(f"  {QQP} not found: Quora pairs skipped", file=sys.stderr)
    bulk = LocalEmbedder(threads=os.cpu_count() or 1, max_batch=64)
    single = LocalEmbedder()  # the agent's own settings: one thread

    t0 = time.perf_counter()
    texts = [t for ds in datasets for t in (*ds.a, *ds.b)]
    vectors = embed_all(bulk, texts)
    print(f"  embedded {len(vectors):,} texts in {time.perf_counter() - t0:.1f} s", flush=True)
    for ds in datasets:
        prepare(ds, vectors)

    # ---- curves, the default operating point, hits by kind
    curve_rows: list[list[str]] = []
    op_rows: list[list[str]] = []
    kind_rows: list[list[str]] = []
    goal_rows: list[list[str]] = []
    oks: dict[str, np.ndarray] = {}
    for ds in datasets:
        assert ds.cos is not None
        ok = oks[ds.name] = passes(ds, None)
        for name, mask in (("cosine only", None), ("shipped (cosine + guards)", ok)):
            c = curve(ds.cos, ds.labels, mask)
            curve_rows.append(
                [ds.name, name]
                + [fmt(p) for p in c.prec_at_recall]
                + [fmt(r) for r in c.recall_at_prec]
                + [fmt(c.auc), fmt(c.max_recall)]
            )
        pt = point(ds.cos, ds.labels, ok, threshold)
        old = before(ds)
        old_pt = point(ds.cos, ds.labels, old, 0.0)
        cos_pt = point(ds.cos, ds.labels, np.ones_like(ok), threshold)
        op_rows.append(
            [
                ds.name,
                f"{len(ds.a)} ({int(ds.labels.sum())} pos)",
                fmt(pt.precision),
                fmt(pt.recall),
                f"{pt.hits} / {pt.false_hits}",
                f"{fmt(old_pt.precision)} / {fmt(old_pt.recall)} ({old_pt.false_hits} false)",
                f"{fmt(cos_pt.precision)} / {fmt(cos_pt.recall)}",
            ]
        )
        if ds.name.startswith("quora"):
            continue
        hit = (ds.cos >= threshold) & ok
        wrong_zero = 0
        kinds = sorted(set(ds.kinds), key=lambda k: (-int(ds.labels[ds.kinds.index(k)]), k))
        for kind in kinds:
            idx = np.array([k == kind for k in ds.kinds])
            positive = bool(ds.labels[idx][0])
            n = int(idx.sum())
            cells = [
                int(((ds.cos >= threshold) & idx).sum()),
                int((old & idx).sum()),
                int((hit & idx).sum()),
            ]
            if not positive and kind in ZERO_KINDS:
                wrong_zero += cells[2]
            kind_rows.append(
                [ds.name, kind, "serve" if positive else "refuse", str(n)]
                + [f"{c} ({c / n:.0%})" for c in cells]
            )
        goal_rows.append([ds.name, fmt(pt.precision), fmt(pt.recall), str(wrong_zero)])

    # ---- what each guard buys: leave-one-out at the default threshold
    guard_rows: list[list[str]] = []
    for guard in ("(none: cosine only)", *verify.GUARDS, *verify.CANDIDATE_GUARDS):
        cells = [guard if guard.startswith("(") else f"`{guard}`"]
        for ds in datasets:
            assert ds.cos is not None
            if guard.startswith("("):
                mask = np.ones(len(ds.a), dtype=bool)
            elif guard in verify.GUARDS:
                mask = passes(ds, [g for g in verify.GUARDS if g != guard])
            else:
                mask = passes(ds, [*verify.GUARDS, guard])
            alone = passes(ds, [guard]) if not guard.startswith("(") else mask
            above = ds.cos >= threshold
            refused_neg = int((above & ~alone & (ds.labels == 0)).sum())
            refused_pos = int((above & ~alone & (ds.labels == 1)).sum())
            pt = point(ds.cos, ds.labels, mask, threshold)
            cells.append(f"{fmt(pt.precision)} / {fmt(pt.recall)} ({refused_neg}/{refused_pos})")
        guard_rows.append(cells)
    full = ["**all shipped guards**"]
    for ds in datasets:
        assert ds.cos is not None
        pt = point(ds.cos, ds.labels, oks[ds.name], threshold)
        full.append(f"**{fmt(pt.precision)} / {fmt(pt.recall)}**")
    guard_rows.append(full)

    # ---- verifier cost per lookup: the query's signature + the checks of its candidates
    cost_rows = verifier_cost([ds for ds in datasets if ds.name.startswith("nearmiss/")], threshold)

    # ---- embedding latency, single queries on the agent's one-thread embedder
    queries = list(dict.fromkeys(t for ds in datasets for t in ds.a if len(t) < 300))[:200]
    single.embed_sync(queries[:5])
    emb_lat = []
    for q in queries:
        t = time.perf_counter()
        single.embed_sync([q])
        emb_lat.append(time.perf_counter() - t)
    emb_p50, emb_p99 = percentiles_ms(emb_lat)
    print(f"  embed one query: p50 {emb_p50:.2f} ms, p99 {emb_p99:.2f} ms", flush=True)

    print("index search latency ...", flush=True)
    index_rows = search_latency(queries, single, args.quick)
    elapsed = time.perf_counter() - started

    # ---- report
    names = [ds.name for ds in datasets]
    report = "\n\n".join(
        [
            f"Run {dt.date.today().isoformat()} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"`DEFAULT_THRESHOLD` = {threshold}; whole run {elapsed:.0f} s.",
            "**Curves** (every threshold). P@R = precision at that recall; R@P = the "
            "largest recall with at least that precision; a dash: the decision never "
            "reaches that recall, because the guards refuse the rest. AUC ranks refused "
            "pairs below all others (a penalty of 2 on the cosine).",
            table(
                ["data", "decision"]
                + [f"P@R{r}" for r in RECALLS]
                + [f"R@P{p}" for p in PRECISIONS]
                + ["ROC-AUC", "max recall"],
                curve_rows,
            ),
            "**The goal** (issue: precision >= 0.99 with recall >= 0.6 on the near-miss "
            "set; no wrong answer in the direction, negation and role-swap kinds).",
            table(
                ["data", "precision", "recall", "wrong in direction / negation / role-swap"],
                goal_rows,
            ),
            f"**Default operating point** (cosine >= {threshold} and the guards agree). "
            "Recall is the share of paraphrases served from cache; hits / false hits count "
            "pairs; *before*: cosine >= 0.82, today's word guards and the frame guard (overruled "
            "at cosine >= 0.95), the decision as it was before the alignment guard.",
            table(
                [
                    "data",
                    "pairs",
                    "precision",
                    "recall",
                    "hits / false hits",
                    "before: precision / recall",
                    f"cosine only at {threshold}: precision / recall",
                ],
                op_rows,
            ),
            "**Served, by kind**: pairs a cache would answer from the stored prompt. "
            "*serve* kinds should be served (recall), *refuse* kinds never (each one served "
            "is a wrong answer).",
            table(
                [
                    "data",
                    "kind",
                    "should",
                    "pairs",
                    f"cosine >= {threshold}",
                    "before",
                    "shipped",
                ],
                kind_rows,
            ),
            "**What each guard buys** at the default threshold: precision / recall of the "
            "shipped decision *without* that guard (candidates: *with* it), and in brackets "
            "how many negatives / positives above the threshold the guard refuses on its own.",
            table(["guard", *names], guard_rows),
            "**Verifier cost per lookup** with a candidate above the threshold (the query's "
            "signature + one check; queries of the near-miss set). Warm: word knowledge "
            "cached as in a running agent; cold: all such caches emptied before each "
            f"lookup. For comparison, embedding one query: {emb_p50:.2f} ms p50 / "
            f"{emb_p99:.2f} ms p99 (LocalEmbedder, one thread).",
            table(["query", "lookups", "p50 ms", "p99 ms"], cost_rows),
            "**Index search** (k = 4, one query at a time, random unit vectors of "
            f"dimension {DIM}; faiss on one OpenMP thread per search, as the agent runs it). "
            "`PartitionIndex` is the agent's own index (edge_agent/cache/semantic.py), "
            "filled through its `add()`.",
            table(["index", "entries", "p50 ms", "p99 ms", "build"], index_rows),
        ]
    )
    print()
    print(report)
    if args.write_docs:
        write_docs(report)
    return 0


def write_docs(report: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    start, end = text.find(DOCS_START), text.find(DOCS_END)
    if start < 0 or end < start:
        raise SystemExit(f"{DOCS}: markers {DOCS_START} / {DOCS_END} not found")
    text = text[: start + len(DOCS_START)] + "\n" + report + "\n" + text[end:]
    DOCS.write_text(text, encoding="utf-8")
    print(f"\nwrote {DOCS.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
