"""``vllm-retrieval eval``: nDCG@10, recall@100 and MRR@10 per search mode on a BEIR dataset."""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path
from typing import IO, Any

from ..store import MODES
from .common import CLIError, open_store
from .search import add_fusion_options

__all__ = ["add_eval_parser", "cmd_eval"]


def add_eval_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """The ``eval`` subcommand and its options."""
    p = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate on a BEIR dataset",
        description="Index (or reuse) a BEIR corpus and report nDCG@10, recall@100 and MRR@10 "
        "per search mode (ir-measures), with encode time and query latency.",
    )
    p.add_argument("--beir", required=True, type=Path, metavar="DIR", help="BEIR folder")
    p.add_argument("--split", default="test", help="qrels split, qrels/SPLIT.tsv (test)")
    p.add_argument("--qrels", type=Path, metavar="FILE", help="a BEIR or TREC qrels file")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes (all)")
    add_fusion_options(p)
    p.add_argument(
        "--index",
        type=Path,
        metavar="DIR",
        help="store directory to build or reuse (default: a temporary one)",
    )
    p.add_argument("--max-queries", type=int, help="evaluate only the first N judged queries")
    p.add_argument(
        "--extra-docs",
        type=int,
        metavar="N",
        help="index only the documents judged for the evaluated queries plus N random others "
        "(a quick run on a subset; default: the whole corpus)",
    )
    p.add_argument("--candidates", type=int, default=200, help="dense prefetch depth (200)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_eval(args: argparse.Namespace, out: IO[str]) -> int:
    from ..evaluation import beir_documents, evaluate_run, index_documents, load_beir, run_queries

    if args.max_queries is not None and args.max_queries <= 0:
        raise CLIError(f"--max-queries must be > 0, got {args.max_queries}")
    data = load_beir(args.beir, args.split, args.qrels)
    if args.extra_docs is not None and args.extra_docs < 0:
        raise CLIError(f"--extra-docs must be >= 0, got {args.extra_docs}")
    if args.max_queries is not None or args.extra_docs is not None:
        data = data.subset(args.max_queries, args.extra_docs)
    with contextlib.ExitStack() as stack:
        index = args.index
        if index is None:
            index = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vr-eval-")))
        store = open_store(args, index, create=True)
        stack.callback(store.close)
        added, skipped, enc_s = index_documents(
            store, beir_documents(data), progress=not args.no_progress
        )
        runs, q_enc_s = run_queries(
            store,
            data.queries,
            args.modes,
            k=100,
            candidates=args.candidates,
            fusion=args.fusion,
            fuse=args.fuse,
            weights=args.weights,
        )
        n_docs = len(store)
        bm25 = store.bm25
    nq = len(data.queries)
    results = []
    for mode in args.modes:
        run, ms = runs[mode]
        metrics = evaluate_run(data.qrels, run)
        results.append(
            {
                "mode": mode,
                "nDCG@10": round(100 * metrics["nDCG@10"], 2),
                "recall@100": round(100 * metrics["R@100"], 2),
                "MRR@10": round(100 * metrics["RR@10"], 2),
                "search_ms": round(ms, 2),
                "latency_ms": round(ms + 1000 * q_enc_s / max(nq, 1), 2),
            }
        )
    report: dict[str, Any] = {
        "dataset": str(args.beir),
        "split": args.split if args.qrels is None else str(args.qrels),
        "queries": nq,
        "documents": n_docs,
        "corpus_subset": args.extra_docs is not None,
        "index": str(args.index) if args.index is not None else None,
        "model": str(args.model or "default"),
        "documents_encoded": added,
        "documents_reused": skipped,
        "encode_seconds": round(enc_s, 2),
        "query_encode_ms": round(1000 * q_enc_s / max(nq, 1), 2),
        "candidates": args.candidates,
        "bm25": bm25.model_dump() if bm25 is not None else None,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2), file=out)
        return 0
    enc = (
        f"encoded {added} documents in {enc_s:.1f} s ({added / enc_s:.1f} docs/s)"
        if added and enc_s
        else "encoded 0 documents"
    )
    print(f"{args.beir} [{report['split']}]: {nq} queries, {n_docs} documents", file=out)
    if bm25 is not None:
        print(f"BM25: {_bm25_line(bm25)}", file=out)
    print(
        f"{enc}; reused {skipped}; query encoding {report['query_encode_ms']:.1f} ms/query",
        file=out,
    )
    print(
        f"{'mode':<8} {'nDCG@10':>8} {'recall@100':>11} {'MRR@10':>7} "
        f"{'search ms':>10} {'latency ms':>11}",
        file=out,
    )
    for r in results:
        print(
            f"{r['mode']:<8} {r['nDCG@10']:>8.2f} {r['recall@100']:>11.2f} {r['MRR@10']:>7.2f} "
            f"{r['search_ms']:>10.2f} {r['latency_ms']:>11.2f}",
            file=out,
        )
    print("(metrics ×100; latency = query encoding + search, per query)", file=out)
    return 0


def _bm25_line(settings: Any) -> str:
    s = settings
    return (
        f"{s.language}, stemmer {'on' if s.stemmer else 'off'}, stopwords "
        f"{'on' if s.stopwords else 'off'}, k={s.k:g}, b={s.b:g}, avg_len={s.avg_len:.1f}"
    )
