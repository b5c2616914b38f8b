"""Nearest-centroid assignment, the token index build's arithmetic: the store's exact search
against the cheaper options, one process.

Usage::

    .venv/bin/python benchmarks/centroid_assign.py [--centroids 2048] [--tokens 262144]
        [--cache /tmp/vllm_retrieval_cache] [--target-tokens 10000000]

Token vectors are SciFact's (the encodings ``benchmarks/scifact_store.py`` caches under
``--cache``) when that cache exists, else ``benchmarks/search.py``'s synthetic corpus (d=384).
Centroids: spherical k-means (the store's ``CentroidIndex.train``) on ``64 K`` other tokens.
Each option assigns the same ``--tokens`` rows, both cores free; printed: k tokens/s, the
ratio to the store's faiss search, the FLOP rate that equals (``2 d K`` per token) and the
fraction of tokens given the exact nearest centroid (the store's postings must stay exact:
recall is the issue's condition), and the seconds each would take for ``--target-tokens``.

* ``faiss`` (the store): ``IndexFlatIP`` search, k=1, 64k rows per call.
* ``torch fp32``: one ``mm`` + ``argmax`` per 16k rows.
* ``bf16 top-4 + fp32``: candidates from a bfloat16 ``mm``, the best of 4 rescored in fp32.
* ``bf16``: the bfloat16 ``argmax`` alone.
* ``two-level p``: ``sqrt(K)`` groups of centroids (k-means on the centroids); each token
  searches the members of its ``p`` nearest groups only.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integrations"))
sys.path.insert(0, str(REPO / "benchmarks"))
from search import Corpus  # noqa: E402
from vllm_retrieval.store.token_index import CentroidIndex  # noqa: E402

CHUNK = 16384


def tokens(cache: Path, n: int) -> tuple[str, np.ndarray]:
    """Where the tokens come from, and all of them (``main`` draws the ``n`` to assign and
    the k-means sample from them, disjoint; the synthetic corpus makes ``3 n``)."""
    found = sorted(glob.glob(str(cache / "scifact_minilm_encodings_*.npz")))
    if found:
        flat = np.load(found[0], allow_pickle=False)["doc_flat"]
        return f"SciFact ({Path(found[0]).name})", np.asarray(flat, dtype=np.float32)
    corpus, rows, i = Corpus(0), [], 0
    while sum(len(r) for r in rows) < 3 * n:
        rows.append(corpus.doc(i))
        i += 1
    return "synthetic (benchmarks/search.py)", np.concatenate(rows).astype(np.float32)


def two_level(x: np.ndarray, cents: np.ndarray, probe: int) -> Callable[[], np.ndarray]:
    import faiss
    import torch

    groups = max(2, round(float(np.sqrt(cents.shape[0]))))
    km = faiss.Kmeans(cents.shape[1], groups, niter=20, seed=0, spherical=True, verbose=False)
    km.train(cents)
    means = torch.from_numpy(np.asarray(km.centroids, dtype=np.float32))
    of = CentroidIndex(np.asarray(km.centroids, dtype=np.float32)).nearest(cents)
    members = [np.flatnonzero(of == g) for g in range(groups)]
    c = torch.from_numpy(cents)

    def run() -> np.ndarray:
        out = np.empty(x.shape[0], np.int64)
        xt = torch.from_numpy(x)
        for s in range(0, x.shape[0], CHUNK):
            xb = xt[s : s + CHUNK]
            top = torch.mm(xb, means.T).topk(probe, 1).indices.numpy()
            best = np.full(xb.shape[0], -np.inf, np.float32)
            arg = np.zeros(xb.shape[0], np.int64)
            for g, ids in enumerate(members):
                rows = np.flatnonzero((top == g).any(1))
                if rows.size == 0 or ids.size == 0:
                    continue
                val, at = torch.mm(xb[rows], c[ids].T).max(1)
                v = val.numpy()
                better = v > best[rows]
                best[rows[better]] = v[better]
                arg[rows[better]] = ids[at.numpy()][better]
            out[s : s + xb.shape[0]] = arg
        return out

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--centroids", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=262_144)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/vllm_retrieval_cache"))
    ap.add_argument("--target-tokens", type=int, default=10_000_000)
    args = ap.parse_args()
    import torch

    source, pool = tokens(args.cache, args.tokens)
    k, n = args.centroids, args.tokens
    rng = np.random.default_rng(0)
    order = rng.permutation(pool.shape[0])
    x = np.ascontiguousarray(pool[order[:n]])
    train = pool[order[n : n + 64 * k]]
    t0 = time.perf_counter()
    index = CentroidIndex.train(train, k)
    cents = index.centroids
    print(f"{source}: {n} tokens x {x.shape[1]}, K={index.k} (k-means on {len(train)} other")
    print(f"  tokens: {time.perf_counter() - t0:.1f} s), torch threads {torch.get_num_threads()}")
    c32 = torch.from_numpy(cents)
    c16 = c32.to(torch.bfloat16)

    def by_chunks(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            out = np.empty(x.shape[0], np.int64)
            xt = torch.from_numpy(x)
            for s in range(0, x.shape[0], CHUNK):
                out[s : s + CHUNK] = fn(xt[s : s + CHUNK]).numpy()
            return out

        return run

    def refine(xb: torch.Tensor) -> torch.Tensor:
        cand = torch.mm(xb.to(torch.bfloat16), c16.T).topk(4, 1).indices
        scores = torch.einsum("nd,ntd->nt", xb, c32[cand])
        return cand.gather(1, scores.argmax(1, keepdim=True))[:, 0]

    options: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("faiss (the store)", lambda: index.nearest(x)),
        ("torch fp32", by_chunks(lambda xb: torch.mm(xb, c32.T).argmax(1))),
        ("bf16 top-4 + fp32", by_chunks(refine)),
        ("bf16", by_chunks(lambda xb: torch.mm(xb.to(torch.bfloat16), c16.T).argmax(1))),
        *[(f"two-level p={p}", two_level(x, cents, p)) for p in (2, 4, 8)],
    ]
    exact: np.ndarray | None = None
    base = 0.0
    flop = 2.0 * x.shape[1] * index.k
    head = ("option", "k tok/s", "ratio", "GFLOP/s", "exact", "target s")
    print("  {:<20} {:>8} {:>6} {:>8} {:>8} {:>9}".format(*head))
    for name, fn in options:
        fn()  # warm (threads, caches)
        t0 = time.perf_counter()
        got = fn()
        sec = time.perf_counter() - t0
        if exact is None:
            exact, base = got, sec
        rate = n / sec
        print(
            f"  {name:<20} {rate / 1e3:8.0f} {base / sec:5.2f}x {rate * flop / 1e9:8.1f} "
            f"{float(np.mean(got == exact)):8.4f} {args.target_tokens / rate:9.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
