"""The lexical leg on SciFact (training judgements): every search mode, fusions, a BM25 library.

Usage::

    .venv/bin/python benchmarks/lexical.py [--cache /tmp/vllm_retrieval_cache]
        [--max-queries N] [--skip-maxsim] [--rebuild]

Prints one table (nDCG@10, recall@100, search latency p50 per query) with:

* every store mode, the default (``fusion``: DBSF of MaxSim, BM25 and dense) and the other
  fusions (weighted, RRF, DBSF), and ``hybrid`` without BM25 (the default before BM25);
* ``bm25s`` — a well-known BM25 library — on the same corpus and the same terms (the store's
  tokenisation: Qdrant's word tokenizer, English stopwords, Snowball stemmer), with the same
  ``k``, ``b`` and Lucene's IDF: the store's BM25 should match it;
* a sweep of the weighted fusion's weights, computed from the store's own lists (dense,
  BM25, and ``hybrid``'s MaxSim-reranked pool, each ``candidates`` deep) with
  :func:`vllm_retrieval.store.plan.weighted_fusion`, exactly as the store fuses them, on all
  judged queries and on each half (even / odd): the best weights do not beat the default's
  parameter-free DBSF, which is why it is the default.

Documents are ``title + " " + text``; encodings and the store are cached under ``--cache``
(see ``benchmarks/scifact_store.py``). Latencies are wall times on this machine, with whatever
else it runs; the quality figures do not depend on it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integrations"))
sys.path.insert(0, str(REPO / "benchmarks"))
from scifact_store import DEFAULT_DATA, encodings, load_scifact  # noqa: E402

Run = dict[str, dict[str, float]]

# (row label, search_encoded keyword arguments); "text": False searches without the query text.
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("dense", {"mode": "dense"}),
    ("bm25", {"mode": "bm25"}),
    ("maxsim (exhaustive)", {"mode": "maxsim"}),
    ("hybrid, no BM25 (old default)", {"mode": "hybrid", "text": False}),
    ("hybrid (dense+index+bm25 pool)", {"mode": "hybrid"}),
    ("fusion default (dbsf m+b+d)", {}),
    (
        "fusion weighted .5/.3/.2 m+b+d",
        {"mode": "fusion", "fuse": ("maxsim", "bm25", "dense"), "weights": (0.5, 0.3, 0.2)},
    ),
    (
        "fusion weighted .5/.5 maxsim+bm25",
        {"mode": "fusion", "fuse": ("maxsim", "bm25"), "weights": (0.5, 0.5)},
    ),
    (
        "fusion weighted .5/.5 dense+bm25",
        {"mode": "fusion", "fuse": ("dense", "bm25"), "weights": (0.5, 0.5)},
    ),
    ("fusion rrf maxsim+bm25", {"mode": "fusion", "fuse": ("maxsim", "bm25"), "fusion": "rrf"}),
    (
        "fusion rrf maxsim+bm25+dense",
        {"mode": "fusion", "fuse": ("maxsim", "bm25", "dense"), "fusion": "rrf"},
    ),
    ("fusion rrf dense+maxsim", {"mode": "fusion", "fuse": ("dense", "maxsim"), "fusion": "rrf"}),
    ("fusion dbsf maxsim+bm25", {"mode": "fusion", "fuse": ("maxsim", "bm25"), "fusion": "dbsf"}),
    ("fusion dbsf dense+bm25", {"mode": "fusion", "fuse": ("dense", "bm25"), "fusion": "dbsf"}),
]


def metrics(qrels: dict[str, dict[str, int]], run: Run, qids: list[str]) -> tuple[float, float]:
    import ir_measures
    from ir_measures import R, nDCG

    agg = ir_measures.calc_aggregate(
        [nDCG @ 10, R @ 100], {q: qrels[q] for q in qids}, {q: run.get(q, {}) for q in qids}
    )
    return 100 * agg[nDCG @ 10], 100 * agg[R @ 100]


def library_run(
    corpus: dict[str, str], queries: dict[str, str], qids: list[str], settings: Any
) -> tuple[Run, float]:
    """bm25s over the store's own terms (term hashes as tokens), k and b of the store."""
    import bm25s

    from vllm_retrieval.store.lexical import Bm25Encoder

    enc = Bm25Encoder(settings)
    doc_ids = list(corpus)
    docs = [[str(t) for t, tf in enc.terms(corpus[d]).items() for _ in range(tf)] for d in doc_ids]
    model = bm25s.BM25(k1=settings.k, b=settings.b, method="lucene")
    model.index(docs, show_progress=False)
    run: Run = {}
    times = []
    for q in qids:
        t0 = time.perf_counter()
        terms = [str(t) for t in enc.terms(queries[q])]
        scores = model.get_scores(terms) if terms else np.zeros(len(doc_ids))
        top = np.argsort(-scores, kind="stable")[:100]
        times.append(time.perf_counter() - t0)
        run[q] = {doc_ids[i]: float(scores[i]) for i in top if scores[i] > 0}
    return run, 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/vllm_retrieval_cache"))
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--max-queries", type=int, default=0, help="0: all judged queries")
    ap.add_argument("--skip-maxsim", action="store_true", help="skip exhaustive MaxSim (slow)")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--dtype", default=None, help="engine dtype (default: the Encoder's auto)")
    args = ap.parse_args()

    from vllm_retrieval.store import MultiVectorStore
    from vllm_retrieval.store.plan import weighted_fusion

    corpus, queries, qrels = load_scifact(args.data)
    data, enc = encodings(args.cache, corpus, queries, args.dtype)
    dtype = enc.engine_settings.dtype
    index = args.cache / f"scifact_store_lexical_{dtype}"
    if args.rebuild and index.exists():
        shutil.rmtree(index)
    dim = int(data["doc_dense"].shape[1])
    store = MultiVectorStore(path=index, encoder=enc, dim=dim)
    if len(store) != len(corpus):
        t0 = time.perf_counter()
        store.add_encoded(
            list(corpus.values()), data["doc_dense"], data["doc_tokens"], ids=data["doc_ids"]
        )
        t1 = time.perf_counter()
        store.optimize()  # token index, BM25 avg_len measured, HNSW
        t2 = time.perf_counter()
        print(f"indexed {len(store)} docs in {t1 - t0:.0f} s, optimize() {t2 - t1:.0f} s")
    print(f"store: {store!r}\n  token index: {store.token_index}\n  bm25: {store.bm25}")
    n_q = len(data["q_ids"])
    q_index = list(range(args.max_queries or n_q))[:n_q]
    qids = [data["q_ids"][i] for i in q_index]
    halves = (qids[0::2], qids[1::2])
    print(
        f"SciFact train: {len(qids)} judged queries, {len(corpus)} docs, "
        f"candidates={args.candidates}; engine dtype {dtype}"
    )
    print(f"{'':32s} {'nDCG@10':>8s} {'R@100':>7s} {'p50 ms':>8s}")

    def row(label: str, run: Run, p50: float) -> None:
        nd, rc = metrics(qrels, run, qids)
        print(f"{label:32s} {nd:8.2f} {rc:7.2f} {p50:8.1f}", flush=True)

    lib, lib_ms = library_run(corpus, queries, qids, store.bm25)
    row("bm25s library (same terms)", lib, lib_ms)
    for label, kw in ROWS:
        if args.skip_maxsim and kw.get("mode") == "maxsim":
            continue
        kw = dict(kw)
        with_text = kw.pop("text", True)
        run: Run = {}
        times = []
        for qi, q in zip(q_index, qids, strict=True):
            t0 = time.perf_counter()
            hits = store.search_encoded(
                data["q_dense"][qi],
                data["q_tokens"][qi],
                k=100,
                candidates=args.candidates,
                text=queries[q] if with_text else None,
                **kw,
            )
            times.append(time.perf_counter() - t0)
            run[q] = {str(h.id): float(h.score) for h in hits}
        row(label, run, 1000 * float(np.median(times)))

    # The weight sweep: the store's three lists, fused as the store fuses them.
    lists: dict[str, dict[str, list[tuple[Any, float]]]] = {}
    for q, qi in zip(qids, q_index, strict=True):
        lists[q] = {}
        for name, mode in (("dense", "dense"), ("bm25", "bm25"), ("maxsim", "hybrid")):
            hits = store.search_encoded(
                data["q_dense"][qi],
                data["q_tokens"][qi],
                k=args.candidates,
                mode=mode,
                candidates=args.candidates,
                text=queries[q],
            )
            lists[q][name] = [(str(h.id), float(h.score)) for h in hits]
    store.close()
    print("\nweighted fusion sweep (maxsim, bm25, dense weights): nDCG@10 all / even / odd")
    grid = [
        (wm / 10, wb / 10, round(1 - wm / 10 - wb / 10, 1))
        for wm in range(2, 9)
        for wb in range(1, 8)
        if wm + wb <= 10
    ]
    results = []
    for w in grid:
        run = {
            q: dict(
                weighted_fusion([lists[q]["maxsim"], lists[q]["bm25"], lists[q]["dense"]], w, 100)
            )
            for q in qids
        }
        results.append(
            (metrics(qrels, run, qids)[0], w, [metrics(qrels, run, h)[0] for h in halves])
        )
    for nd, w, (a, b) in sorted(results, reverse=True)[:12]:
        print(f"  {w[0]:.1f} {w[1]:.1f} {w[2]:.1f}   {nd:6.2f} / {a:6.2f} / {b:6.2f}")


if __name__ == "__main__":
    main()
