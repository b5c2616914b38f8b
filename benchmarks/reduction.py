"""Smaller token indexes on SciFact (training judgements): token pooling × PCA dims.

Usage::

    .venv/bin/python benchmarks/reduction.py [--cache /tmp/vllm_retrieval_cache]
        [--candidates 200] [--max-queries N]

For every setting (pool factor 1/2/3 × dims 384/128/64) it stores the documents' token
vectors as the store would (``store.reduction.pool_tokens`` at write time, a
``store.reduction.Projection`` fitted on a sample of the stored vectors, applied to documents
and queries), then ranks each query's dense top-``candidates`` by MaxSim over the reduced
vectors, and prints: stored tokens (and the change against pool factor 1), bytes per
original token (float32 and float16 storage), nDCG@10 and its change against the full
vectors, and the time the reduction took. The candidates are the same for every setting
(the full 384-d dense list), so the figures isolate what the token vectors lose.

Encodings are cached under ``--cache`` (``benchmarks/scifact_store.py``).
"""

from __future__ import annotations

import argparse
import os
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
from vllm_retrieval import maxsim  # noqa: E402
from vllm_retrieval.evaluation import evaluate_run  # noqa: E402
from vllm_retrieval.store.reduction import Projection, pool_tokens  # noqa: E402

POOLS = (1, 2, 3)
DIMS = (384, 128, 64)


def _run(
    q_ids: list[str],
    q_tokens: list[np.ndarray],
    doc_ids: list[str],
    doc_tokens: list[np.ndarray],
    cands: np.ndarray,
) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for qi, qid in enumerate(q_ids):
        idx = cands[qi]
        scores = maxsim(q_tokens[qi], [doc_tokens[j] for j in idx])
        run[qid] = {doc_ids[j]: float(s) for j, s in zip(idx, np.asarray(scores), strict=True)}
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/vllm_retrieval_cache"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--sample", type=int, default=200_000, help="vectors to fit PCA on")
    args = ap.parse_args()

    corpus, queries, qrels = load_scifact(args.data)
    enc, _ = encodings(args.cache, corpus, queries)
    judged = [i for i, q in enumerate(enc["q_ids"]) if q in qrels][: args.max_queries]
    q_ids = [enc["q_ids"][i] for i in judged]
    q_tokens = [enc["q_tokens"][i] for i in judged]
    q_dense = enc["q_dense"][judged]
    doc_ids: list[str] = enc["doc_ids"]
    doc_tokens: list[np.ndarray] = enc["doc_tokens"]
    qrels = {q: qrels[q] for q in q_ids}
    cands = np.argsort(-(q_dense @ enc["doc_dense"].T), axis=1)[:, : args.candidates]
    full_tokens = sum(len(t) for t in doc_tokens)
    print(
        f"SciFact train: {len(q_ids)} judged queries, {len(doc_ids)} documents, "
        f"{full_tokens} token vectors ({doc_tokens[0].shape[1]}-d); MaxSim over each query's "
        f"dense top-{args.candidates}",
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    base_ndcg = None
    for pool in POOLS:
        t0 = time.perf_counter()
        pooled = pool_tokens(doc_tokens, pool)
        pool_s = time.perf_counter() - t0
        n_tok = sum(len(t) for t in pooled)
        flat = np.concatenate(pooled)
        for dims in DIMS:
            t0 = time.perf_counter()
            if dims == flat.shape[1]:
                docs, qs = pooled, q_tokens
            else:
                proj = Projection.fit(flat, dims, max_rows=args.sample)
                docs = [proj(t) for t in pooled]
                qs = [proj(t) for t in q_tokens]
            proj_s = time.perf_counter() - t0
            ndcg = evaluate_run(qrels, _run(q_ids, qs, doc_ids, docs, cands))["nDCG@10"]
            if base_ndcg is None:
                base_ndcg = ndcg
            rows.append(
                {
                    "pool": pool,
                    "dims": dims,
                    "tokens": n_tok,
                    "tok_change": 100.0 * (n_tok / full_tokens - 1.0),
                    "b32": 4.0 * dims * n_tok / full_tokens,
                    "b16": 2.0 * dims * n_tok / full_tokens,
                    "ndcg": 100.0 * ndcg,
                    "delta": 100.0 * (ndcg - base_ndcg),
                    "secs": pool_s + proj_s,
                }
            )
            r = rows[-1]
            print(
                f"pool {pool} dims {dims:>3}: tokens {r['tokens']:>8} ({r['tok_change']:+.1f} %)"
                f"  bytes/token fp32 {r['b32']:>6.0f} fp16 {r['b16']:>5.0f}"
                f"  nDCG@10 {r['ndcg']:.2f} ({r['delta']:+.2f})  reduce {r['secs']:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
