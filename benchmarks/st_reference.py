"""The sentence-transformers dense reference for ``vllm-retrieval eval`` on a BEIR split.

Usage::

    .venv/bin/python benchmarks/st_reference.py [--beir ../shared/data/scifact] [--split train]
        [--max-queries N] [--extra-docs N] [--model PATH] [--json]

Encodes the corpus and the judged queries with ``SentenceTransformer`` (the packaged
all-MiniLM-L6-v2 by default; documents are ``title + " " + text`` as in the store), ranks by
exact cosine and prints nDCG@10, recall@100 and MRR@10 (ir-measures). The ``dense`` row of
``vllm-retrieval eval`` with the same model and split should agree within 0.5 point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integrations"))


def main() -> None:
    from vllm_retrieval.evaluation import evaluate_run, load_beir, sentence_transformers_dense_run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beir", type=Path, default=REPO.parent / "shared" / "data" / "scifact")
    ap.add_argument("--split", default="train")
    ap.add_argument("--max-queries", type=int)
    ap.add_argument("--extra-docs", type=int, help="judged documents + N others (as eval's)")
    ap.add_argument("--model", help="model folder (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    data = load_beir(args.beir, args.split)
    if args.max_queries is not None or args.extra_docs is not None:
        data = data.subset(args.max_queries, args.extra_docs)
    t0 = time.perf_counter()
    run = sentence_transformers_dense_run(data, args.model, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    m = evaluate_run(data.qrels, run)
    report = {
        "reference": "sentence-transformers, exact cosine",
        "dataset": str(args.beir),
        "split": args.split,
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "nDCG@10": round(100 * m["nDCG@10"], 2),
        "recall@100": round(100 * m["R@100"], 2),
        "MRR@10": round(100 * m["RR@10"], 2),
        "seconds": round(seconds, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>12}: {value}")


if __name__ == "__main__":
    main()
