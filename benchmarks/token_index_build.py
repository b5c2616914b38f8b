"""Token index build time by phase, on a synthetic embedded store (d=384, ~100 tokens/doc).

Usage::

    .venv/bin/python benchmarks/token_index_build.py [--docs 100000] [--tokens-per-doc 100]
        [--dir /tmp/tib_store] [--queries 50] [--candidates 200] [--build-only]

The store (``benchmarks/search.py``'s synthetic corpus at d=384: noisy draws of topic
"vocabulary" directions, so k-means has structure to find; ``add_encoded``, ``optimize()``)
is built once and cached under ``--dir``. Then ``build_token_index()`` is timed whole and by
phase (the phases are recorded by :func:`vllm_retrieval.store.indexing.build_postings`):
listing the point ids, reading the training sample, k-means, reading every document's token
vectors, assigning them, and writing the postings. With ``--queries``, ``hybrid`` search
(dense + token index candidates, MaxSim rerank) is timed and its overlap@10 with exhaustive
exact MaxSim printed, and the token index's own candidate recall: the fraction of the exact
top 10 found among the ``--candidates`` best by the postings score alone.
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
sys.path.insert(0, str(REPO / "benchmarks"))
from search import Corpus, build  # noqa: E402  (the synthetic corpus and its cached store)

DIM = 384


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_build(store: Any) -> tuple[float, dict[str, float], Any]:
    """``build_token_index()`` wall time and its phases (build_postings' ``timings``)."""
    from vllm_retrieval.errors import StoreError
    from vllm_retrieval.store import indexing, maintenance

    phases: dict[str, float] = {}
    orig = maintenance.build_postings

    def recorded(*a: Any, **kw: Any) -> Any:
        return indexing.build_postings(*a, timings=phases, **kw)

    maintenance.build_postings = recorded  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        try:
            settings = store.build_token_index()
        except StoreError as exc:  # the optimisation after the build (Edge: disk space)
            settings = f"index recorded ({store.manifest.token_index}); then: {exc}"
        total = time.perf_counter() - t0
    finally:
        maintenance.build_postings = orig  # type: ignore[assignment]
    return total, phases, settings


def quality(store: Any, corpus: Corpus, n_docs: int, n_queries: int, candidates: int) -> None:
    from vllm_retrieval.store.manifest import CENTROIDS

    queries = [corpus.query(q, n_docs) for q in range(n_queries)]
    index = store._token_index
    lat, got, cand = [], [], []
    for qd, qt, _ in queries[:3]:
        store.search_encoded(qd, qt, k=10, mode="hybrid", candidates=candidates)
    for qd, qt, _ in queries:
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
        {h.id for h in store.search_encoded(qd, qt, k=10, mode="maxsim")} for qd, qt, _ in queries
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
    corpus = Corpus(dim=DIM, tokens=args.tokens_per_doc)
    print(f"== {args.docs} docs, ~{args.tokens_per_doc} tokens/doc, d={DIM}: {path}")
    build(path, corpus, args.docs, None)
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
