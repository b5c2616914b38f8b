"""Exhaustive MaxSim throughput: vllm-retrieval vs a naive per-document loop vs Qdrant Edge.

Random unit vectors, one query of ``Q`` tokens, documents of ``min_len..max_len`` tokens packed
into ``--tokens`` document tokens. Prints document tokens per second for

(a) the call users make first, ``maxsim(q, list_of_doc_arrays)`` (a list of separate fp32
    arrays, read in place by the kernel), against the same documents packed
    (``maxsim(q, PackedDocs)``) and the naive per-document loop
    ``torch.matmul(q, d.T).max(dim=1).values.sum()``: the three sides interleaved, ``--rounds``
    times, medians and the ratios list ÷ packed, list ÷ naive, packed ÷ naive;
(b) the project's exhaustive MaxSim (:func:`vllm_retrieval.scoring.maxsim.maxsim_topk`) for each
    storage dtype (and the tiled-GEMM fallback), with ratios to the naive loop of (a);
(c) Qdrant Edge's exhaustive multivector MaxSim (on the first ``--qdrant-tokens`` tokens'
    documents: ingestion into Edge is slow, and the project's kernel is re-measured on that
    same subset for the ratio),

and whether each top-10 equals the float64 reference's.

    .venv/bin/python benchmarks/maxsim.py                      # 1 M tokens
    .venv/bin/python benchmarks/maxsim.py --tokens 10000000    # 10 M tokens (~5 GiB fp32)
    .venv/bin/python benchmarks/maxsim.py --only-list          # (a) alone

Wall times vary with machine load: run it on a quiet machine, and compare ratios (the sides of
(a) alternate, so load affects them alike).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import vllm_retrieval.scoring.maxsim as ms
from vllm_retrieval.scoring.maxsim import PackedDocs, kernel_info, maxsim, maxsim_topk, pack

TOPK = 10


def make_corpus(
    tokens: int, dim: int, min_len: int, max_len: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[tokens, dim]`` fp32 unit rows and ``[n + 1]`` offsets of lengths in [min, max]."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=tokens // min_len + 1)
    ends = np.cumsum(lengths)
    n = int(np.searchsorted(ends, tokens, side="left")) + 1
    lengths = lengths[:n]
    lengths[-1] -= int(ends[n - 1]) - tokens  # the last document ends exactly at `tokens`
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    vec = np.empty((tokens, dim), dtype=np.float32)
    chunk = 1 << 20
    for s in range(0, tokens, chunk):
        part = rng.standard_normal((min(chunk, tokens - s), dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        vec[s : s + part.shape[0]] = part
    return vec, offsets


def make_query(q_len: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    q = rng.standard_normal((q_len, dim), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def reference_scores(q: np.ndarray, vec: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """float64 MaxSim (the ground truth for the top-10): numpy float64 GEMM over chunks of
    whole documents, then a per-document max; independent of the package's kernel."""
    q64 = q.astype(np.float64)
    n = offsets.size - 1
    out = np.empty(n, dtype=np.float64)
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(offsets, offsets[lo] + 65536, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        a, b = int(offsets[lo]), int(offsets[hi])
        sims = q64 @ vec[a:b].astype(np.float64).T  # [Q, rows of docs lo..hi-1]
        starts = offsets[lo:hi] - a
        out[lo:hi] = np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)
        lo = hi
    return out


def top10_status(idx: np.ndarray, ref: np.ndarray, tol: float = 1e-3) -> str:
    """'exact', 'equal up to ties' (scores within tol of the reference's), or 'DIFFERENT'."""
    order = np.argsort(-ref, kind="stable")[:TOPK]
    if np.array_equal(idx, order):
        return "exact"
    if len(idx) == len(order) and np.allclose(ref[idx], ref[order], rtol=0, atol=tol):
        return "equal up to ties"
    return "DIFFERENT"


def timed(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[float, Any]:
    """Median seconds over ``repeats`` runs (after one warm-up run), and the last result."""
    result = fn() if warmup else None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def naive_loop(q: torch.Tensor, docs: list[torch.Tensor]) -> np.ndarray:
    scores = torch.empty(len(docs))
    for i, d in enumerate(docs):
        scores[i] = torch.matmul(q, d.T).max(dim=1).values.sum()
    return scores.numpy()


def list_packed_naive(
    q: np.ndarray, vec: np.ndarray, offsets: np.ndarray, ref: np.ndarray, rounds: int
) -> dict[str, float]:
    """(a): ``maxsim`` over a list of separate fp32 arrays vs the same documents packed vs the
    naive torch loop, interleaved ``rounds`` times; prints and returns the median tokens/s."""
    n = offsets.size - 1
    tokens = int(offsets[-1])
    # Separate arrays, as an encoder returns them (not views of one matrix).
    docs = [vec[offsets[i] : offsets[i + 1]].copy() for i in range(n)]
    packed = PackedDocs(vec, offsets)
    qt = torch.from_numpy(q)
    docs_t = [torch.from_numpy(d) for d in docs]
    sides: dict[str, Callable[[], np.ndarray]] = {
        "list": lambda: maxsim(q, docs),
        "packed": lambda: maxsim(q, packed),
        "naive": lambda: naive_loop(qt, docs_t),
    }
    status = {}
    for name, fn in sides.items():  # warm-up, and the top-10 of each side
        scores = fn()
        status[name] = top10_status(np.argsort(-scores, kind="stable")[:TOPK], ref)
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:  # the order rotates: no side always first
            t0 = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - t0)
    rate = {name: tokens / statistics.median(t) for name, t in times.items()}
    labels = {
        "list": "maxsim(q, list of arrays)",
        "packed": "maxsim(q, PackedDocs)",
        "naive": "naive torch loop",
    }
    for name in sides:
        spread = ", ".join(f"{tokens / t / 1e6:.2f}" for t in times[name])
        print(
            f"  {labels[name]:26s} {rate[name] / 1e6:6.2f} M tok/s  (rounds: {spread})  "
            f"top-10 vs float64: {status[name]}"
        )
    per_round = [p / lst for lst, p in zip(times["list"], times["packed"], strict=True)]
    print(
        f"  ratio list / packed = {rate['list'] / rate['packed']:.2f}x "
        f"(per round: {', '.join(f'{r:.2f}' for r in per_round)}); "
        f"list / naive = {rate['list'] / rate['naive']:.2f}x; "
        f"packed / naive = {rate['packed'] / rate['naive']:.2f}x"
    )
    return rate


def qdrant_edge_run(
    q: np.ndarray, vec: np.ndarray, offsets: np.ndarray, repeats: int
) -> tuple[float, np.ndarray, float] | None:
    """(query seconds, top-10 indices, ingest seconds) with Qdrant Edge's exhaustive MaxSim."""
    try:
        import qdrant_edge as qe
    except ImportError:
        print("qdrant_edge is not installed: skipping Qdrant Edge")
        return None
    dim = vec.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        config = qe.EdgeConfig(
            vectors={
                "colbert": qe.EdgeVectorParams(
                    size=dim,
                    distance=qe.Distance.Cosine,
                    multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                    hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=0),
                )
            }
        )
        shard = qe.EdgeShard.create(os.path.join(tmp, "shard"), config)
        t0 = time.perf_counter()
        batch = 256
        for s in range(0, offsets.size - 1, batch):
            points = [
                qe.Point(id=i, vector={"colbert": vec[offsets[i] : offsets[i + 1]].tolist()})
                for i in range(s, min(s + batch, offsets.size - 1))
            ]
            shard.update(qe.UpdateOperation.upsert_points(points))
        shard.optimize()
        ingest = time.perf_counter() - t0
        query = q.tolist()

        def search() -> list[Any]:
            req = qe.QueryRequest(
                limit=TOPK, query=qe.Query.Nearest(query, using="colbert"), with_payload=False
            )
            return list(shard.query(req))

        seconds, res = timed(search, repeats)
        idx = np.array([int(p.id) for p in res], dtype=np.int64)
        shard.close()
    return seconds, idx, ingest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1_000_000, help="document tokens in total")
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--min-len", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds of (a) list/packed/naive"
    )
    ap.add_argument("--only-list", action="store_true", help="run (a) only")
    ap.add_argument(
        "--dtypes", default="float32,bfloat16,float16,int8", help="storage dtypes to measure"
    )
    ap.add_argument(
        "--qdrant-tokens",
        type=int,
        default=250_000,
        help="tokens (whole documents) ingested into Qdrant Edge; 0 skips it",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch and MaxSim threads (0: the defaults)"
    )
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        os.environ["VLLM_RETRIEVAL_MAXSIM_THREADS"] = str(args.threads)

    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"cpu capability={torch.backends.cpu.get_cpu_capability()}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
        f"load average={os.getloadavg()[0]:.1f}"
    )
    print(f"MaxSim CPU kernel: {kernel_info()}")
    vec, offsets = make_corpus(args.tokens, args.dim, args.min_len, args.max_len, args.seed)
    q = make_query(args.query_tokens, args.dim, args.seed)
    n = offsets.size - 1
    print(
        f"corpus: {args.tokens:,} doc tokens, {n:,} documents of {args.min_len}-{args.max_len} "
        f"tokens, d={args.dim}; query Q={args.query_tokens}; top-{TOPK}; median of "
        f"{args.repeats}"
    )
    t0 = time.perf_counter()
    ref = reference_scores(q, vec, offsets)
    print(f"float64 reference: {time.perf_counter() - t0:.1f} s")

    print(
        f"\n(a) maxsim over a list of {n:,} separate fp32 arrays vs the same documents packed vs "
        f"the naive torch loop; interleaved, median of {args.rounds} rounds"
    )
    first = list_packed_naive(q, vec, offsets, ref, args.rounds)
    naive_rate = first["naive"]
    if args.only_list:
        return

    rate: dict[str, float] = {}
    print("\n(b) vllm-retrieval exhaustive MaxSim (maxsim_topk over PackedDocs) per storage dtype")
    for dtype in args.dtypes.split(","):
        t0 = time.perf_counter()
        packed = pack_from(vec, offsets, dtype)
        pack_s = time.perf_counter() - t0
        seconds, (idx, _) = timed(lambda p=packed: maxsim_topk(q, p, TOPK), args.repeats)
        rate[dtype] = args.tokens / seconds
        print(
            f"  {dtype:9s} {seconds * 1e3:8.1f} ms  {rate[dtype] / 1e6:6.2f} M tok/s  "
            f"top-10 vs float64: {top10_status(idx, ref)}  (packing {pack_s:.2f} s)  "
            f"ours / naive = {rate[dtype] / naive_rate:.2f}x"
        )
        del packed
    best = max(rate, key=lambda k: rate[k])
    if ms._native is not None:
        # The tiled-GEMM path (MKL sgemm + segmented max), used where the C kernel is absent.
        packed = pack_from(vec, offsets, "float32")
        ms._cpu_kernel = "gemm"
        try:
            seconds, (idx, _) = timed(lambda p=packed: maxsim_topk(q, p, TOPK), args.repeats)
        finally:
            ms._cpu_kernel = "auto"
        gemm_rate = args.tokens / seconds
        print(
            f"  float32 via the tiled-GEMM fallback {seconds * 1e3:8.1f} ms  "
            f"{gemm_rate / 1e6:6.2f} M tok/s  top-10 vs float64: {top10_status(idx, ref)}; "
            f"fused kernel / GEMM = {rate['float32'] / gemm_rate:.2f}x"
            if "float32" in rate
            else f"  float32 via the tiled-GEMM fallback {gemm_rate / 1e6:6.2f} M tok/s"
        )
        del packed

    if args.qdrant_tokens > 0:
        sub_n = int(np.searchsorted(offsets, min(args.qdrant_tokens, args.tokens), side="right"))
        sub_n = max(1, sub_n - 1)
        sub_tokens = int(offsets[sub_n])
        sub_off = offsets[: sub_n + 1]
        print(
            f"\n(c) Qdrant Edge exhaustive multivector MaxSim on the first {sub_n:,} documents "
            f"({sub_tokens:,} tokens; fewer than (a) because ingestion is slow)"
        )
        qd = qdrant_edge_run(q, vec[:sub_tokens], sub_off, args.repeats)
        if qd is not None:
            seconds, idx, ingest = qd
            qd_rate = sub_tokens / seconds
            sub_ref = ref[:sub_n]
            print(
                f"  qdrant    {seconds * 1e3:8.1f} ms  {qd_rate / 1e6:6.2f} M tok/s  "
                f"top-10 vs float64: {top10_status(idx, sub_ref)}  (ingest {ingest:.1f} s)"
            )
            for dtype in rate:
                packed = pack_from(vec[:sub_tokens], sub_off, dtype)
                s2, (idx2, _) = timed(lambda p=packed: maxsim_topk(q, p, TOPK), args.repeats)
                print(
                    f"  ours[{dtype}] on the same subset: {sub_tokens / s2 / 1e6:6.2f} M tok/s, "
                    f"ratio ours / qdrant = {sub_tokens / s2 / qd_rate:.2f}x, "
                    f"top-10: {top10_status(idx2, sub_ref)}"
                )

    target = 10e6
    verdict = "meets" if rate[best] >= target else "misses"
    print(
        f"\nbest: {best} at {rate[best] / 1e6:.2f} M doc tokens/s — {verdict} the 10 M tok/s "
        f"target on {os.cpu_count()} logical cores"
    )


def pack_from(vec: np.ndarray, offsets: np.ndarray, dtype: str) -> PackedDocs:
    """Store an fp32 corpus in ``dtype`` without a list of per-document arrays."""
    if dtype == "float32":
        return PackedDocs(vec, offsets)
    if dtype == "float16":
        return PackedDocs(vec.astype(np.float16), offsets)
    if dtype == "bfloat16":
        return PackedDocs(torch.from_numpy(vec).to(torch.bfloat16), offsets)
    if dtype == "int8":
        whole = pack([vec], dtype="int8")
        return PackedDocs(whole.vectors, offsets, whole.scales)
    raise ValueError(f"unknown dtype {dtype!r}")


if __name__ == "__main__":
    main()
