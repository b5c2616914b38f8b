"""Search on synthetic clustered multi-vectors: latency, recall@10, resident bytes/token.

Usage::

    .venv/bin/python benchmarks/search.py [--docs 10000 100000] [--compression binary]
        [--candidates 200 500 1000] [--queries 50] [--dir /tmp/vllm_retrieval_bench]

Documents have ~100 token vectors (d=128) drawn around topic-specific "vocabulary"
directions; dense vectors are the normalised token means; each query is 32 noisy tokens of
a random document. ``optimize()`` builds the token index (centroid postings, see
store/token_index.py), so ``hybrid`` prefetches ``candidates`` from the dense HNSW and
``candidates`` from the postings, then reranks by MaxSim; ``--nprobe`` sweeps the centroids
probed per query token. Each document's text is its words (``w17 w4031 ...``), so BM25 has
terms to match; the default mode (``fusion``: MaxSim over the dense + token index + BM25
pool, fused with the BM25 and dense lists) is timed beside ``hybrid`` (the dense + token
index pool alone, the default before BM25). Overlap@10 is measured against exhaustive exact
MaxSim over all documents (``mode="maxsim"``, which scores the original vectors). Resident
bytes/token is the growth of this process's RSS after reopening the store and running the
queries, divided by the stored token count (the disk footprint is printed too). Indexes are
cached under ``--dir``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integrations"))

DIM = 128
TOKENS = 100
VOCAB = 8192
TOPICS = 400
TOPIC_WORDS = 96


def _rss() -> tuple[int, int]:
    """(anonymous, file-backed) resident bytes of this process (/proc/self/status)."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["RssAnon"], fields["RssFile"] + fields.get("RssShmem", 0)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Corpus:
    """Deterministic clustered synthetic documents, generated batch by batch (``dim`` wide,
    ``tokens`` ± 20 token vectors each; ``benchmarks/token_index_build.py`` uses them too)."""

    def __init__(self, seed: int = 0, *, dim: int = DIM, tokens: int = TOKENS) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.tokens = dim, tokens
        self.vocab = _unit(rng.standard_normal((VOCAB, dim)))
        self.topic_words = rng.integers(0, VOCAB, size=(TOPICS, TOPIC_WORDS))
        self.seed = seed

    def doc_words(self, i: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, i))
        topic = int(rng.integers(TOPICS))
        n = int(rng.integers(max(1, self.tokens - 20), self.tokens + 21))
        words = rng.choice(self.topic_words[topic], size=n)
        mix = rng.random(n) < 0.1
        words[mix] = rng.integers(0, VOCAB, size=int(mix.sum()))
        return words

    def doc(self, i: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, i, 1))
        words = self.doc_words(i)
        noise = rng.standard_normal((len(words), self.dim)) / np.sqrt(self.dim / 2)
        return _unit(self.vocab[words] + 0.35 * noise)

    def batch(self, start: int, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        toks = [self.doc(i) for i in range(start, start + n)]
        dense = _unit(np.stack([t.mean(0) for t in toks]))
        return dense, toks

    def text(self, i: int) -> str:
        return " ".join(f"w{w}" for w in self.doc_words(i))

    def query(self, q: int, n_docs: int) -> tuple[np.ndarray, np.ndarray, str]:
        rng = np.random.default_rng((self.seed, 10**9 + q))
        target = int(rng.integers(n_docs))
        words = rng.choice(self.doc_words(target), size=32)
        noise = rng.standard_normal((32, self.dim)) / np.sqrt(self.dim / 2)
        toks = _unit(self.vocab[words] + 0.5 * noise)
        return _unit(toks.mean(0)), toks, " ".join(f"w{w}" for w in words)


def build(path: Path, corpus: Corpus, n_docs: int, compression: str | None) -> None:
    """The cached store of ``n_docs`` synthetic documents in ``path``, optimised."""
    from vllm_retrieval.store import MultiVectorStore

    if (path / "vllm_retrieval.json").exists():
        with MultiVectorStore.open(path) as store:
            if len(store) == n_docs:
                return
        raise SystemExit(f"{path} holds a partial index: remove it and rerun")
    t0 = time.perf_counter()
    with MultiVectorStore(
        path=path, dim=corpus.dim, compression=compression, batch_size=500
    ) as store:
        step = 1000
        for s in range(0, n_docs, step):
            dense, toks = corpus.batch(s, min(step, n_docs - s))
            store.add_encoded(
                [corpus.text(i) for i in range(s, s + len(toks))],
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
        t1 = time.perf_counter()
        store.optimize()
        print(
            f"  optimize (HNSW on dense, quantisation, token index, BM25) "
            f"{time.perf_counter() - t1:.0f} s: {store.token_index}; {store.bm25}"
        )
    print(f"  built in {time.perf_counter() - t0:.0f} s")


def run(n_docs: int, args: argparse.Namespace) -> None:
    from vllm_retrieval.store import MultiVectorStore

    comp = None if args.compression == "none" else args.compression
    path = args.dir / f"synthetic_{n_docs}_{args.compression}"
    corpus = Corpus()
    print(f"== {n_docs} docs, ~{TOKENS} tokens, d={DIM}, compression={args.compression}")
    build(path, corpus, n_docs, comp)
    base = _rss()
    store = MultiVectorStore.open(path)
    queries = [corpus.query(q, n_docs) for q in range(args.queries)]
    print(f"  token index: {store.token_index}")
    runs: list[tuple[str, list[float], list[set[int | str]]]] = []
    kw: dict[str, str]
    probes = args.nprobe if store.token_index is not None else [None]
    for nprobe in probes:
        for candidates in args.candidates:
            for mode in ("hybrid", "default"):
                kw = {"mode": "hybrid"} if mode == "hybrid" else {}
                use_text = mode != "hybrid"  # hybrid as it was: no BM25 in its pool
                for qd, qt, text in queries[:5]:  # warm-up
                    store.search_encoded(
                        qd,
                        qt,
                        k=10,
                        candidates=candidates,
                        nprobe=nprobe,
                        text=text if use_text else None,
                        **kw,
                    )
                lat: list[float] = []
                got: list[set[int | str]] = []
                for qd, qt, text in queries:
                    t = time.perf_counter()
                    hits = store.search_encoded(
                        qd,
                        qt,
                        k=10,
                        candidates=candidates,
                        nprobe=nprobe,
                        text=text if use_text else None,
                        **kw,
                    )
                    lat.append((time.perf_counter() - t) * 1000)
                    got.append({h.id for h in hits})
                label = f"{mode}, candidates={candidates}" + (
                    f", nprobe={nprobe}" if nprobe else ""
                )
                runs.append((label, sorted(lat), got))
    # Measured before the exhaustive pass, which reads every original vector.
    now = _rss()
    anon, mapped = now[0] - base[0], now[1] - base[1]
    t0 = time.perf_counter()
    exact = [
        {h.id for h in store.search_encoded(qd, qt, k=10, mode="maxsim")} for qd, qt, _ in queries
    ]
    exact_ms = (time.perf_counter() - t0) * 1000 / len(queries)
    print(f"  exhaustive MaxSim (the recall reference): {exact_ms:.0f} ms/query")
    for label, lat, got in runs:
        recall = [len(g & r) / 10 for g, r in zip(got, exact, strict=True)]
        p50 = statistics.median(lat)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(
            f"  {label}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
            f"overlap@10 with exact MaxSim {np.mean(recall):.3f}"
        )
    n_tokens = sum(len(corpus.doc_words(i)) for i in range(0, n_docs, max(1, n_docs // 2000)))
    n_tokens = int(n_tokens * n_docs / len(range(0, n_docs, max(1, n_docs // 2000))))
    disk = store.disk_bytes()
    codes = sum(f.stat().st_size for f in path.rglob("quantized.data"))
    store.close()
    print(
        f"  ~{n_tokens} tokens; resident after reopen + hybrid queries: anonymous "
        f"{anon / n_tokens:.1f} bytes/token, mapped files {mapped / n_tokens:.1f} bytes/token "
        f"(page cache the reranks touched, evictable); "
        f"disk {disk / n_tokens:.1f} bytes/token; quantised codes {codes / n_tokens:.1f} "
        f"bytes/token"
    )


def main() -> None:
    from vllm_retrieval.store import COMPRESSIONS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--compression", default="binary", choices=["none", *COMPRESSIONS])
    ap.add_argument("--candidates", type=int, nargs="+", default=[200, 500, 1000])
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[1, 2], help="token index probes")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/vllm_retrieval_bench"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    for n in args.docs:
        run(n, args)


if __name__ == "__main__":
    main()
