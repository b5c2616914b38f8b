"""Ingestion vs encoding: ``store.add_texts`` against ``encoder.encode_documents`` on the same
texts, one engine, one process.

    .venv/bin/python benchmarks/ingest.py [--docs 1000] [--repeats 5] [--batch-size 256]

Both sides encode the same SciFact abstracts (title + text; the sample corpus without
../shared) with the packaged all-MiniLM-L6-v2. ``encode`` is ``encode_documents`` alone;
``add_texts`` encodes and writes into a fresh embedded store (Qdrant Edge) each round, and
its time includes everything a user waits for (encoding, conversion, the WAL write). Rounds
alternate between the two sides; medians of ``--repeats`` rounds are reported with docs/s and
the median of the paired ratios add_texts / encode (the goal is >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from startup import load_docs  # SciFact abstracts (title + text), or the sample corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()

    from vllm_retrieval import Encoder
    from vllm_retrieval.store import MultiVectorStore

    texts = load_docs(args.docs)
    enc = Encoder().start()
    enc.encode_documents(texts[:32])  # warm
    print(f"{len(texts)} documents, dtype {enc.engine_settings.dtype}, batch {args.batch_size}")
    rounds: list[tuple[float, float]] = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        enc.encode_documents(texts)
        t_enc = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
            store = MultiVectorStore(Path(tmp) / "s", encoder=enc, batch_size=args.batch_size)
            t0 = time.perf_counter()
            store.add_texts(texts, ids=list(range(len(texts))))
            t_add = time.perf_counter() - t0
            assert len(store) == len(texts)
            store.close()
        rounds.append((t_enc, t_add))
        print(
            f"  round {r + 1}: encode {len(texts) / t_enc:.1f} docs/s, add_texts "
            f"{len(texts) / t_add:.1f} docs/s, ratio {t_enc / t_add:.2f}",
            flush=True,
        )
    n = len(texts)
    t_enc = statistics.median(e for e, _ in rounds)
    t_add = statistics.median(a for _, a in rounds)
    ratio = statistics.median(e / a for e, a in rounds)
    print(f"encode_documents  {n / t_enc:7.1f} docs/s  (median {t_enc:.1f} s)")
    print(f"store.add_texts   {n / t_add:7.1f} docs/s  (median {t_add:.1f} s)")
    print(f"ratio add_texts / encode = {ratio:.2f}x, median of paired rounds (goal >= 0.90)")
    enc.close()


if __name__ == "__main__":
    main()
