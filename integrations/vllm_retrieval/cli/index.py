"""``vllm-retrieval index``: documents into a store, resumable (stored ids are skipped)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import IO

from ..store import COMPRESSIONS
from .common import open_store
from .inputs import read_inputs

__all__ = ["add_index_parser", "cmd_index"]


def add_index_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """The ``index`` subcommand and its options."""
    p = sub.add_parser(
        "index",
        parents=[common],
        help="index documents into a store (resumable)",
        description="Index documents into an embedded multi-vector store. INPUT is a BEIR "
        "corpus.jsonl (_id, title, text) or its folder, a JSONL of {id, text, ...metadata}, "
        "or .txt/.md files and folders (split into chunks). Ids already in the store are "
        "skipped, so an interrupted run can simply be started again.",
    )
    p.add_argument("--index", required=True, type=Path, metavar="DIR", help="store directory")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders")
    p.add_argument("--chunk-size", type=int, default=1000, help="characters per text chunk")
    p.add_argument("--chunk-overlap", type=int, default=100, help="characters of overlap")
    p.add_argument(
        "--compression",
        choices=("none", *COMPRESSIONS),
        help="token-vector storage of a NEW store (default: float32)",
    )


def cmd_index(args: argparse.Namespace, out: IO[str]) -> int:
    from ..evaluation import index_documents

    docs = read_inputs(args.inputs, args.chunk_size, args.chunk_overlap)
    compression = None if args.compression in (None, "none") else args.compression
    store = open_store(args, args.index, create=True, compression=compression)
    try:
        added, skipped, seconds = index_documents(store, docs, progress=not args.no_progress)
        total = len(store)
        bm25 = store.bm25
    finally:
        store.close()
    rate = f" in {seconds:.1f} s ({added / seconds:.1f} docs/s)" if added and seconds else ""
    print(
        f"indexed {added} new documents{rate}; skipped {skipped} already stored; "
        f"{total} in {args.index}",
        file=out,
    )
    if bm25 is not None:
        from .eval import _bm25_line

        print(f"BM25: {_bm25_line(bm25)}", file=out)
    return 0
