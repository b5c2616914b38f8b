"""Ingestion vs encoding: ``store.add_texts`` against ``encoder.encode_documents`` on the same
texts, one engine, one process; then where the write side's time goes.

    .venv/bin/python benchmarks/ingest.py [--docs 1000] [--repeats 5] [--batch-size 256]
                                          [--progress] [--no-breakdown]

Both sides encode the same SciFact abstracts (title + text; the sample corpus without
../shared) with the packaged all-MiniLM-L6-v2. ``encode`` is ``encode_documents`` alone;
``add_texts`` encodes and writes into a fresh embedded store (Qdrant Edge) each round, and
its time includes everything a user waits for (encoding, conversion, the WAL write). Rounds
alternate between the two sides; medians of ``--repeats`` rounds are reported with docs/s and
the median of the paired ratios add_texts / encode (the goal is >= 0.9). ``--progress`` shows
the store's tqdm bar while ``add_texts`` runs.

The breakdown writes the vectors of one encode again with ``add_encoded`` (no encoding), its
parts timed in this thread's CPU seconds: validation and points, the vectors' conversion to
what Edge's ``Point`` takes, ``Point`` itself (Edge copies the floats into Rust), the update
(WAL entry and segment) and the flushes that keep the WAL bounded. Writing runs beside the
encoder's threads, which use every core: its CPU time is what ingestion adds to encoding, so
``t_enc / (t_enc + write CPU)`` is about the ratio to expect. Last, the forms a token matrix
can take into Edge's ``Point`` (its binding reads Python sequences of floats only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from startup import load_docs  # SciFact abstracts (title + text), or the sample corpus


class _Clock:
    """Wall and thread-CPU seconds per named part."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0
                self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - c0

        return timed


class _Shard:
    """Edge's shard with ``update`` and ``flush`` timed."""

    def __init__(self, shard: Any, clock: _Clock) -> None:
        self._shard = shard
        self.update = clock.wrap("update", shard.update)
        self.flush = clock.wrap("flush", shard.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


def breakdown(texts: list[str], dense: Any, toks: list[Any], t_enc: float) -> None:
    """``add_encoded`` of one encode's vectors, its parts timed (see the module doc)."""
    from vllm_retrieval.store import MultiVectorStore

    n, ntok = len(texts), sum(len(t) for t in toks)
    clock = _Clock()
    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
        store = MultiVectorStore(Path(tmp) / "s", dim=dense.shape[1])
        be: Any = store._backend
        shard = be.shard
        be.shard = _Shard(shard, clock)
        be._vectors = clock.wrap("vectors", be._vectors)
        be.upsert = clock.wrap("upsert", be.upsert)
        total = clock.wrap("total", store.add_encoded)
        total(texts, dense, toks, ids=list(range(n)))
        be.shard = shard
        store.close()
    cpu, wall = clock.cpu, clock.wall
    parts = {
        "validate + points (check_tokens, make_points)": "total-upsert",
        "vectors to Edge's form (row memoryviews)": "vectors",
        "qe.Point (Edge copies the floats)": "upsert-vectors-update-flush",
        "shard.update (WAL entry, segment)": "update",
        "shard.flush (every 32 MiB: WAL bound)": "flush",
        "total write": "total",
    }

    def value(src: dict[str, float], expr: str) -> float:
        head, *minus = expr.split("-")
        return src.get(head, 0.0) - sum(src.get(m, 0.0) for m in minus)

    print(f"write side, add_encoded of {n} documents ({ntok} tokens), this thread:")
    print(f"  {'part':48s} {'CPU s':>7s} {'wall s':>7s} {'CPU us/token':>13s}")
    for label, expr in parts.items():
        c, w = value(cpu, expr), value(wall, expr)
        print(f"  {label:48s} {c:7.2f} {w:7.2f} {c / ntok * 1e6:13.2f}")
    c = cpu["total"]
    print(
        f"  write CPU = {c / t_enc:.1%} of encode time ({t_enc:.1f} s): "
        f"expected ratio on saturated cores ~ {t_enc / (t_enc + c):.2f}"
    )


def forms(toks: list[Any], docs: int = 100) -> None:
    """CPU per token of (conversion + Edge ``Point``) for each form a token matrix can take."""
    import numpy as np
    import qdrant_edge as qe

    from vllm_retrieval.store.backends.edge import float_view, row_views

    sample = [np.ascontiguousarray(t, dtype=np.float32) for t in toks[:docs]]
    ntok = sum(len(t) for t in sample)
    dense = [t[0] for t in sample]
    options: dict[str, Callable[[Any], Any]] = {
        "row memoryviews (used)": row_views,
        "nested lists, tolist()": lambda a: a.tolist(),
        "2-D numpy array": lambda a: a,
        "list of 1-D numpy rows": list,
    }
    print(f"token matrix forms into qe.Point ({len(sample)} documents, {ntok} tokens):")
    for label, conv in options.items():
        best = float("inf")
        for _ in range(3):
            c0 = time.thread_time()
            for d, t in zip(dense, sample, strict=True):
                qe.Point(id=1, vector={"dense": float_view(d), "colbert": conv(t)}, payload={})
            best = min(best, time.thread_time() - c0)
        print(f"  {label:32s} {best / ntok * 1e6:7.2f} CPU us/token")


def paired_rounds(
    enc: Any, texts: list[str], repeats: int, batch_size: int = 256, progress: bool = False
) -> tuple[float, Any, list[Any]]:
    """``repeats`` rounds of encode alone then add_texts into a fresh store, printed; returns
    the median encode seconds and the last round's vectors."""
    from vllm_retrieval.store import MultiVectorStore

    rounds: list[tuple[float, float]] = []
    for r in range(repeats):
        t0 = time.perf_counter()
        dense, toks = enc.encode_documents(texts)
        t_enc = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
            store = MultiVectorStore(Path(tmp) / "s", encoder=enc, batch_size=batch_size)
            t0 = time.perf_counter()
            store.add_texts(texts, ids=list(range(len(texts))), show_progress=progress)
            t_add = time.perf_counter() - t0
            assert len(store) == len(texts)
            store.close()
        rounds.append((t_enc, t_add))
        print(
            f"  round {r + 1}: encode {len(texts) / t_enc:.1f} docs/s, add_texts "
            f"{len(texts) / t_add:.1f} docs/s, ratio {t_enc / t_add:.2f} "
            f"(load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    n = len(texts)
    t_enc = statistics.median(e for e, _ in rounds)
    t_add = statistics.median(a for _, a in rounds)
    ratio = statistics.median(e / a for e, a in rounds)
    print(f"encode_documents  {n / t_enc:7.1f} docs/s  (median {t_enc:.1f} s)")
    print(f"store.add_texts   {n / t_add:7.1f} docs/s  (median {t_add:.1f} s)")
    print(f"ratio add_texts / encode = {ratio:.2f}x, median of paired rounds (goal >= 0.90)")
    return t_enc, dense, toks


def start_encoder(texts: list[str], batch_size: int) -> Any:
    """The packaged model's engine, warmed up; prints the run's settings."""
    from vllm_retrieval import Encoder

    enc = Encoder().start()
    enc.encode_documents(texts[:32])  # warm
    print(
        f"{len(texts)} documents, dtype {enc.engine_settings.dtype}, batch {batch_size}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    return enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--progress", action="store_true", help="the store's tqdm bar")
    ap.add_argument("--no-breakdown", action="store_true")
    args = ap.parse_args()

    texts = load_docs(args.docs)
    enc = start_encoder(texts, args.batch_size)
    t_enc, dense, toks = paired_rounds(enc, texts, args.repeats, args.batch_size, args.progress)
    enc.close()
    if not args.no_breakdown:
        breakdown(texts, dense, toks, t_enc)
        forms(toks)


if __name__ == "__main__":
    main()
