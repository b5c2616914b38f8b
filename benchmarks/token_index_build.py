"""Token index build time by phase, on a synthetic embedded store (d=384, ~100 tokens/doc).

Usage::

    .venv/bin/python benchmarks/token_index_build.py [--docs 100000] [--tokens-per-doc 100]
        [--dir /tmp/tib_store] [--queries 50] [--candidates 200] [--keep-index]

The store (``MultiVectorStore(path, dim=384)`` + ``add_encoded``) is built once and cached
under ``--dir``; its documents are noisy draws of topic "vocabulary" directions, so k-means
has structure to find. Then ``build_token_index()`` is timed whole and by phase (the phases
are recorded by :func:`vllm_retrieval.store.indexing.build_postings`): listing the point ids,
reading the training sample, k-means, reading every document's token vectors, assigning
them, and writing the postings. With ``--queries``, ``hybrid`` search (dense + token index
candidates, MaxSim rerank) is timed and its overlap@10 with exhaustive exact MaxSim printed,
and the token index's own candidate recall: the fraction of the exact top 10 found among the
``--candidates`` best by the postings score alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integrations"))

DIM = 384
VOCAB = 8192
TOPICS = 400
TOPIC_WORDS = 96


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Corpus:
    """Deterministic clustered documents, generated a batch at a time."""

    def __init__(self, tokens: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.vocab = _unit(rng.standard_normal((VOCAB, DIM)))
        self.topic_words = rng.integers(0, VOCAB, size=(TOPICS, TOPIC_WORDS))
        self.tokens = tokens
        self.seed = seed

    def batch(self, start: int, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        rng = np.random.default_rng((self.seed, start))
        lo, hi = max(1, self.tokens - self.tokens // 5), self.tokens + self.tokens // 5
        lens = rng.integers(lo, hi + 1, size=n)
        topics = rng.integers(TOPICS, size=n)
        words = self.topic_words[
            np.repeat(topics, lens), rng.integers(TOPIC_WORDS, size=lens.sum())
        ]
        mix = rng.random(words.size) < 0.1
        words[mix] = rng.integers(0, VOCAB, size=int(mix.sum()))
        noise = rng.standard_normal((words.size, DIM), dtype=np.float32)
        flat = _unit(self.vocab[words] + 0.5 * noise / np.sqrt(DIM))
        toks = np.split(flat, np.cumsum(lens)[:-1])
        dense = _unit(np.stack([t.mean(0) for t in toks]))
        return dense, toks

    def query(self, q: int, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, 10**9 + q))
        target = int(rng.integers(n_docs))
        start = target - target % 1000
        _, toks = self.batch(start, min(1000, n_docs - start))
        doc = toks[target - start]
        pick = doc[rng.choice(len(doc), size=min(32, len(doc)), replace=False)]
        qt = _unit(pick + 0.7 * rng.standard_normal(pick.shape).astype(np.float32) / np.sqrt(DIM))
        return _unit(qt.mean(0)), qt


def build(path: Path, corpus: Corpus, n_docs: int) -> None:
    from vllm_retrieval.store import MultiVectorStore

    if (path / "vllm_retrieval.json").exists():
        with MultiVectorStore.open(path) as store:
            if len(store) == n_docs:
                return
        raise SystemExit(f"{path} holds a partial store: remove it and rerun")
    t0 = time.perf_counter()
    with MultiVectorStore(path=path, dim=DIM, batch_size=500) as store:
        step = 2000
        for s in range(0, n_docs, step):
            dense, toks = corpus.batch(s, min(step, n_docs - s))
            store.add_encoded(
                [f"d{i}" for i in range(s, s + len(toks))],
                dense,
                toks,
                ids=list(range(s, s + len(toks))),
            )
            print(
                f"\r  ingested {s + len(toks)}/{n_docs} ({time.perf_counter() - t0:.0f} s)",
                end="",
                flush=True,
            )
        print()
    print(f"  store built in {time.perf_counter() - t0:.0f} s")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_build(store: Any) -> tuple[float, dict[str, float], Any]:
    """``build_token_index()`` wall time and its phases (build_postings' ``timings``)."""
    from vllm_retrieval.store import indexing, maintenance

    phases: dict[str, float] = {}
    orig = maintenance.build_postings

    def recorded(*a: Any, **kw: Any) -> Any:
        return indexing.build_postings(*a, timings=phases, **kw)

    maintenance.build_postings = recorded  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        settings = store.build_token_index()
        total = time.perf_counter() - t0
    finally:
        maintenance.build_postings = orig  # type: ignore[assignment]
    return total, phases, settings


def quality(store: Any, corpus: Corpus, n_docs: int, n_queries: int, candidates: int) -> None:
    from vllm_retrieval.store.manifest import CENTROIDS

    queries = [corpus.query(q, n_docs) for q in range(n_queries)]
    index = store._token_index
    lat, got, cand = [], [], []
    for qd, qt in queries[:3]:
        store.search_encoded(qd, qt, k=10, mode="hybrid", candidates=candidates)
    for qd, qt in queries:
        t = time.perf_counter()
        hits = store.search_encoded(qd, qt, k=10, mode="hybrid", candidates=candidates)
        lat.append((time.perf_counter() - t) * 1000)
        got.append({h.id for h in hits})
        probe = index.probe(qt, store.manifest.token_index.nprobe)
        qe = store._backend.qe
        res = store._backend.shard.query(
            qe.QueryRequest(
                query=qe.Query.Nearest(qe.SparseVector(*probe), using=CENTROIDS),
                limit=candidates,
                with_payload=False,
            )
        )
        cand.append({int(p.id) for p in res})
    exact = [
        {h.id for h in store.search_encoded(qd, qt, k=10, mode="maxsim")} for qd, qt in queries
    ]
    ov = np.mean([len(g & e) / 10 for g, e in zip(got, exact, strict=True)])
    rc = np.mean([len(c & e) / 10 for c, e in zip(cand, exact, strict=True)])
    lat.sort()
    print(
        f"  hybrid (candidates={candidates}): p50 {statistics.median(lat):.1f} ms, "
        f"p95 {lat[min(len(lat) - 1, int(0.95 * len(lat)))]:.1f} ms, overlap@10 with exact "
        f"MaxSim {ov:.3f}; token-index-only recall of the exact top 10 in its "
        f"{candidates} candidates {rc:.3f}  [load {_load()}]"
    )


def main() -> None:
    from vllm_retrieval.store import MultiVectorStore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--tokens-per-doc", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tib_store"))
    ap.add_argument("--queries", type=int, default=0, help="also measure search (0: skip)")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--build-only", action="store_true", help="only build the cached store")
    args = ap.parse_args()
    path = args.dir / f"synthetic_{args.docs}_{args.tokens_per_doc}"
    corpus = Corpus(args.tokens_per_doc)
    print(f"== {args.docs} docs, ~{args.tokens_per_doc} tokens/doc, d={DIM}: {path}")
    build(path, corpus, args.docs)
    if args.build_only:
        return
    with MultiVectorStore.open(path) as store:
        total, phases, settings = timed_build(store)
        print(f"  build_token_index(): {total:.1f} s  [load {_load()}]")
        for name, sec in phases.items():
            print(f"    {name:<16} {sec:7.2f} s")
        # "assign" runs on a worker thread, overlapped with "read all" (this thread waited
        # "assign wait" for it): the rest of the wall time is after the postings.
        rest = total - sum(v for k, v in phases.items() if k != "assign")
        print(f"    {'other':<16} {rest:7.2f} s (optimize() after the build, manifest)")
        print(f"  {settings}")
        if args.queries:
            quality(store, corpus, args.docs, args.queries, args.candidates)


if __name__ == "__main__":
    main()
