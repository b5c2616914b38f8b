"""Speed and size side by side, in one run: ingestion, index builds, bytes, quality, MaxSim.

Usage::

    .venv/bin/python benchmarks/summary.py [--cache /tmp/vllm_retrieval_cache]
        [--pools 1,2] [--dims 384,128,64] [--compressions none,fp16] [--docs N]
        [--max-queries N] [--ingest-docs 600] [--rounds 3] [--skip-ingest] [--keep DIR]

One process, one engine, one table per part (SciFact: 5,183 abstracts, the training claims
with judgements; encodings cached as ``benchmarks/scifact_store.py`` caches them):

1. **Ingestion** — ``encoder.encode_documents`` vs ``store.add_texts`` on the same abstracts,
   paired rounds (``benchmarks/ingest.py``'s measurement): docs/s and add_texts ÷ encode.
2. **Per store setting** (pool factor × dims × compression) — a fresh embedded store filled
   with ``add_encoded`` from the cached vectors (write s: pooling, projection-free writes,
   WAL), then ``optimize()`` (build s: the PCA fit and reduced copy when dims < 384, the
   token index, BM25). Then a fresh process opens it and runs every query (``hybrid``, the
   default candidates): nDCG@10 and its change against pool 1 / 384 / none, p50 latency, and
   the resident bytes it added per original token (RSS after the queries minus before
   opening). Disk: allocated bytes per original token and × the raw float32 vectors.
3. **MaxSim** — ``maxsim(q, list of arrays)`` vs ``maxsim(q, PackedDocs)`` vs the naive torch
   loop over the SciFact token vectors (``benchmarks/maxsim.py``'s measurement).

``--docs`` keeps every judged document plus others up to N, for a quicker run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integrations"))
sys.path.insert(0, str(HERE))
from disk import footprint, total  # noqa: E402
from scifact_store import DEFAULT_DATA, encodings, load_scifact  # noqa: E402

# The part run in a fresh process per store: open, search every query, report.
_SEARCH = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
from vllm_retrieval.store import MultiVectorStore
z = np.load(sys.argv[2], allow_pickle=False)
q_dense, q_flat, q_off = z["q_dense"], z["q_flat"], z["q_off"]
before = rss()
store = MultiVectorStore.open(sys.argv[1])
run, lat = {}, []
for i in range(len(q_dense)):
    toks = q_flat[q_off[i] : q_off[i + 1]]
    t0 = time.perf_counter()
    hits = store.search_encoded(q_dense[i], toks, k=10, mode="hybrid")
    lat.append(time.perf_counter() - t0)
    run[str(i)] = {str(h.id): float(h.score) for h in hits}
print(json.dumps({"run": run, "p50_ms": 1e3 * float(np.median(lat)), "rss": rss() - before}))
"""


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def build_store(
    path: Path, enc: dict[str, Any], pool: int, dims: int, compression: str | None
) -> dict[str, float]:
    """Fill a fresh store from the cached vectors and optimise it; returns the timings."""
    from vllm_retrieval.store import MultiVectorStore

    full = enc["doc_dense"].shape[1]
    store = MultiVectorStore(
        path,
        dim=full,
        compression=compression,
        pool_factor=pool,
        reduce_to=None if dims >= full else dims,
    )
    try:
        t0 = time.perf_counter()
        store.add_encoded(enc["texts"], enc["doc_dense"], enc["doc_tokens"], ids=enc["doc_ids"])
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.optimize()
        if store.reduction is not None and not store.reduction.fitted:  # < 1,000 documents
            store.reduce_dimensions()
        build_s = time.perf_counter() - t0
    finally:
        store.close()
    return {"write_s": write_s, "build_s": build_s}


def search_store(path: Path, queries: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _SEARCH, str(path), str(queries), str(HERE.parent / "integrations")],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def store_settings(args: argparse.Namespace, enc: dict[str, Any], qrels: Any) -> None:
    from vllm_retrieval.evaluation import evaluate_run

    n_tokens = sum(len(t) for t in enc["doc_tokens"])
    raw = 4 * n_tokens * enc["doc_dense"].shape[1]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vr-summary-"))
    root.mkdir(parents=True, exist_ok=True)
    queries = root / "queries.npz"
    np.savez(
        queries,
        q_dense=enc["q_dense"],
        q_flat=np.concatenate(enc["q_tokens"]),
        q_off=np.concatenate([[0], np.cumsum([len(t) for t in enc["q_tokens"]])]),
    )
    judged = {str(i): qrels[q] for i, q in enumerate(enc["q_ids"])}
    print(
        f"\n## 2. Store settings: {len(enc['doc_ids'])} documents, {n_tokens} token vectors "
        f"({raw / 2**20:.0f} MB raw float32), {len(judged)} queries, hybrid search"
    )
    head = (
        f"{'pool':>4} {'dims':>4} {'compr':>5} {'write s':>8} {'build s':>8} {'disk MB':>8} "
        f"{'B/tok':>6} {'x raw':>6} {'RSS B/tok':>9} {'nDCG@10':>8} {'change':>7} {'p50 ms':>7}"
    )
    print(head, flush=True)
    base = None
    for pool in args.pools:
        for dims in args.dims:
            for comp in args.compressions:
                path = root / f"p{pool}_d{dims}_{comp}"
                shutil.rmtree(path, ignore_errors=True)
                t = build_store(path, enc, pool, dims, None if comp == "none" else comp)
                size = total(footprint(path))
                res = search_store(path, queries)
                ndcg = 100 * evaluate_run(judged, res["run"])["nDCG@10"]
                base = ndcg if base is None else base
                print(
                    f"{pool:>4} {dims:>4} {comp:>5} {t['write_s']:8.1f} {t['build_s']:8.1f} "
                    f"{size / 2**20:8.0f} {size / n_tokens:6.0f} {size / raw:6.2f} "
                    f"{res['rss'] / n_tokens:9.0f} {ndcg:8.2f} {ndcg - base:+7.2f} "
                    f"{res['p50_ms']:7.1f}",
                    flush=True,
                )
                if not args.keep:
                    shutil.rmtree(path, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def maxsim_part(enc: dict[str, Any], rounds: int) -> None:
    from maxsim import list_packed_naive, reference_scores

    vec = np.concatenate(enc["doc_tokens"]).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in enc["doc_tokens"]])])
    q = np.ascontiguousarray(enc["q_tokens"][0], dtype=np.float32)
    print(f"\n## 3. MaxSim: one query over {offsets[-1]} SciFact token vectors, {rounds} rounds")
    list_packed_naive(q, vec, offsets, reference_scores(q, vec, offsets), rounds)


def ingest_part(texts: list[str], rounds: int) -> None:
    from ingest import paired_rounds, start_encoder

    print(f"## 1. Ingestion: {len(texts)} SciFact abstracts, {rounds} paired rounds", flush=True)
    enc = start_encoder(texts, 256)
    paired_rounds(enc, texts, rounds)
    enc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/vllm_retrieval_cache"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--pools", type=_ints, default=[1, 2])
    ap.add_argument("--dims", type=_ints, default=[384, 128, 64])
    ap.add_argument("--compressions", type=lambda s: s.split(","), default=["none", "fp16"])
    ap.add_argument("--docs", type=int, default=None, help="judged documents + others up to N")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--ingest-docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--keep", default=None, help="keep the stores in this folder")
    args = ap.parse_args()

    corpus, queries, qrels = load_scifact(args.data)
    if not args.skip_ingest:
        ingest_part(list(corpus.values())[: args.ingest_docs], args.rounds)
    enc, _ = encodings(args.cache, corpus, queries)
    q_pick = [i for i, q in enumerate(enc["q_ids"]) if q in qrels][: args.max_queries]
    keep = list(range(len(enc["doc_ids"])))
    if args.docs is not None:
        wanted = {d for i in q_pick for d in qrels[enc["q_ids"][i]]}
        judged = [i for i, d in enumerate(enc["doc_ids"]) if d in wanted]
        others = [i for i, d in enumerate(enc["doc_ids"]) if d not in wanted]
        keep = sorted(judged + others[: max(args.docs - len(judged), 0)])
    enc = {
        "doc_ids": [enc["doc_ids"][i] for i in keep],
        "texts": [corpus[enc["doc_ids"][i]] for i in keep],
        "doc_dense": enc["doc_dense"][keep],
        "doc_tokens": [enc["doc_tokens"][i] for i in keep],
        "q_ids": [enc["q_ids"][i] for i in q_pick],
        "q_dense": enc["q_dense"][q_pick],
        "q_tokens": [enc["q_tokens"][i] for i in q_pick],
    }
    store_settings(args, enc, qrels)
    maxsim_part(enc, args.rounds)


if __name__ == "__main__":
    main()
