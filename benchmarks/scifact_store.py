"""SciFact (training judgements) through ``MultiVectorStore``: nDCG@10 and recall@100 per mode.

Usage::

    .venv/bin/python benchmarks/scifact_store.py [--cache /tmp/vllm_retrieval_cache]
        [--compression none|fp16|int8|binary] [--candidates 200] [--backend edge|client]
        [--dtype float32|bfloat16] [--no-token-index] [--max-queries N]

Documents are ``title + " " + text`` (5,183 abstracts); queries are the training claims that
have judgements. Encoding the corpus with the packaged all-MiniLM-L6-v2 on the vLLM CPU
engine takes several minutes on 2 cores, so the encodings are cached (packed ``.npz``, no
pickle) under ``--cache``; the built index is cached there too (one per compression).
"""

from __future__ import annotations

import argparse
import json
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
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
from vllm_retrieval.store import MODES  # noqa: E402  (light: no engine, no Qdrant)


def load_scifact(data: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus id -> text, query id -> text for judged queries, qrels)."""
    qrels: dict[str, dict[str, int]] = {}
    with (data / "qrels" / "train.tsv").open() as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    queries: dict[str, str] = {}
    with (data / "queries.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]
    corpus: dict[str, str] = {}
    with (data / "corpus.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            corpus[row["_id"]] = (row.get("title", "") + " " + row["text"]).strip()
    return corpus, queries, qrels


def _pack(tokens: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([t.shape[0] for t in tokens])
    return np.concatenate(tokens).astype(np.float32), offsets


def _unpack(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def encodings(
    cache: Path, corpus: dict[str, str], queries: dict[str, str], dtype: str | None = None
) -> tuple[dict[str, Any], Any]:
    """Encoded corpus and queries, from the cache or from the packaged model (then cached)."""
    from vllm_retrieval import Encoder

    enc = Encoder(show_progress=True, dtype=dtype)
    path = cache / f"scifact_minilm_encodings_{enc.engine_settings.dtype}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        doc_ids = [str(x) for x in z["doc_ids"]]
        q_ids = [str(x) for x in z["q_ids"]]
        if doc_ids == list(corpus) and q_ids == list(queries):
            return {
                "doc_ids": doc_ids,
                "doc_dense": z["doc_dense"],
                "doc_tokens": _unpack(z["doc_flat"], z["doc_off"]),
                "q_ids": q_ids,
                "q_dense": z["q_dense"],
                "q_tokens": _unpack(z["q_flat"], z["q_off"]),
            }, enc
    t0 = time.perf_counter()
    enc.start()
    print(f"engine ready in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    d_dense, d_tok = enc.encode_documents(list(corpus.values()))
    q_dense, q_tok = enc.encode_queries(list(queries.values()))
    print(
        f"encoded {len(corpus)} docs + {len(queries)} queries in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    cache.mkdir(parents=True, exist_ok=True)
    d_flat, d_off = _pack(d_tok)
    q_flat, q_off = _pack(q_tok)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        doc_ids=np.array(list(corpus)),
        doc_dense=d_dense,
        doc_flat=d_flat,
        doc_off=d_off,
        q_ids=np.array(list(queries)),
        q_dense=q_dense,
        q_flat=q_flat,
        q_off=q_off,
    )
    tmp.replace(path)
    return {
        "doc_ids": list(corpus),
        "doc_dense": d_dense,
        "doc_tokens": d_tok,
        "q_ids": list(queries),
        "q_dense": q_dense,
        "q_tokens": q_tok,
    }, enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/vllm_retrieval_cache"))
    ap.add_argument("--compression", default="none")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--backend", choices=("edge", "client"), default="edge")
    ap.add_argument("--encode-only", action="store_true")
    ap.add_argument(
        "--max-queries",
        type=int,
        default=0,
        help="evaluate only the first N judged queries (0: all 809; exhaustive MaxSim over "
        "1.5 M tokens is ~1 s/query on 2 cores)",
    )
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--dtype", default=None, help="engine dtype (default: the Encoder's auto)")
    ap.add_argument(
        "--no-token-index",
        action="store_true",
        help="hybrid from the dense prefetch alone (the index is not built)",
    )
    args = ap.parse_args()

    import ir_measures
    from ir_measures import R, nDCG

    corpus, queries, qrels = load_scifact(args.data)
    enc_data, enc = encodings(args.cache, corpus, queries, args.dtype)
    dtype = enc.engine_settings.dtype
    if args.encode_only:
        return
    from vllm_retrieval.store import MultiVectorStore

    compression = None if args.compression == "none" else args.compression
    dim = int(enc_data["doc_dense"].shape[1])
    n_tokens = sum(t.shape[0] for t in enc_data["doc_tokens"])
    if args.backend == "edge":
        tag = "_dense" if args.no_token_index else ""
        index = args.cache / f"scifact_store_{args.compression}_{dtype}{tag}"
        if args.rebuild and index.exists():
            shutil.rmtree(index)
        fresh = not index.exists()
        store = MultiVectorStore(path=index, encoder=enc, compression=compression, dim=dim)
    else:
        fresh = True
        store = MultiVectorStore(location=":memory:", encoder=enc, compression=compression, dim=dim)
    if fresh or len(store) != len(corpus):
        t0 = time.perf_counter()
        store.add_encoded(
            list(corpus.values()),
            enc_data["doc_dense"],
            enc_data["doc_tokens"],
            ids=enc_data["doc_ids"],
            show_progress=True,
        )
        if args.no_token_index:
            store._backend.optimize()  # HNSW and quantisation only
        else:
            store.optimize()
        print(
            f"indexed {len(store)} docs ({n_tokens} tokens) in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    print(f"store: {store!r}; engine dtype {dtype}; token index: {store.token_index}")
    q_index = list(range(len(enc_data["q_ids"])))
    if args.max_queries:
        q_index = q_index[: args.max_queries]
    chosen = {enc_data["q_ids"][i] for i in q_index}
    qrels_list = [
        ir_measures.Qrel(q, d, s)
        for q, docs in qrels.items()
        if q in chosen
        for d, s in docs.items()
    ]
    print(
        f"SciFact train: {len(q_index)} of {len(queries)} judged queries, {len(corpus)} docs, "
        f"candidates={args.candidates}, compression={args.compression}"
    )
    print(f"{'mode':8s} {'nDCG@10':>8s} {'R@100':>8s} {'ms/query':>9s}")
    for mode in MODES:
        run = []
        t0 = time.perf_counter()
        for qi in q_index:
            qid = enc_data["q_ids"][qi]
            hits = store.search_encoded(
                enc_data["q_dense"][qi],
                enc_data["q_tokens"][qi],
                k=100,
                mode=mode,
                candidates=max(args.candidates, 100),
            )
            run.extend(ir_measures.ScoredDoc(qid, str(h.id), float(h.score)) for h in hits)
        ms = (time.perf_counter() - t0) * 1000 / len(q_index)
        res = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], qrels_list, run)
        print(
            f"{mode:8s} {100 * res[nDCG @ 10]:8.2f} {100 * res[R @ 100]:8.2f} {ms:9.1f}", flush=True
        )
    store.close()


if __name__ == "__main__":
    main()
