"""``vllm-retrieval index``: documents into a store, resumable (stored ids are skipped)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..store import COMPRESSIONS
from .common import open_store
from .inputs import PageImage, read_image_inputs, read_inputs, split_inputs

if TYPE_CHECKING:
    from ..store import MultiVectorStore

IMAGE_BATCH = 16  # images (PDF pages) rendered and encoded at a time

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
        "or .txt/.md files and folders (split into chunks); with a vision-language model "
        "(e.g. --model ... --profile jina-v4), also images (.png, .jpg, ...) and PDFs (one "
        "document per page, id FILE#page=N). Ids already in the store are skipped, so an "
        "interrupted run can simply be started again.",
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
    p.add_argument(
        "--pool-factor",
        type=int,
        metavar="N",
        help="token pooling of a NEW store: about 1/N of each document's token vectors "
        "(hierarchical clustering; default 1: none)",
    )
    p.add_argument(
        "--reduce-to",
        type=int,
        metavar="D",
        help="dimension reduction of a NEW store: dense and token vectors projected to D "
        "dims by a PCA fitted on the stored vectors at the first optimisation from 1,000 "
        "documents (default: none)",
    )


def _index_images(store: MultiVectorStore, pages: list[PageImage], progress: bool) -> int:
    """Image files and PDF pages into the store, a few at a time; stored ids are skipped."""
    from ..evaluation import missing_ids

    todo = set(missing_ids(store, [p.doc_id for p in pages]))
    pages = [p for p in pages if p.doc_id in todo]
    for s in range(0, len(pages), IMAGE_BATCH):
        batch = pages[s : s + IMAGE_BATCH]
        store.add_images(
            [p.load() for p in batch],
            metadatas=[p.metadata for p in batch],
            ids=[p.doc_id for p in batch],
            show_progress=False,
        )
        if progress:
            print(f"  images: {min(s + IMAGE_BATCH, len(pages))}/{len(pages)}", file=sys.stderr)
    return len(pages)


def cmd_index(args: argparse.Namespace, out: IO[str]) -> int:
    from ..evaluation import index_documents

    text_inputs, image_inputs = split_inputs(args.inputs)
    docs = read_inputs(text_inputs, args.chunk_size, args.chunk_overlap) if text_inputs else []
    pages = read_image_inputs(image_inputs) if image_inputs else []
    compression = None if args.compression in (None, "none") else args.compression
    timings: dict[str, float] = {}
    store = open_store(
        args,
        args.index,
        create=True,
        compression=compression,
        pool_factor=args.pool_factor,
        reduce_to=args.reduce_to,
        timings=timings,
    )
    try:
        added, skipped, seconds = (
            index_documents(store, docs, progress=not args.no_progress) if docs else (0, 0, 0.0)
        )
        if pages:
            t0 = time.perf_counter()
            new = _index_images(store, pages, not args.no_progress)
            added, skipped = added + new, skipped + len(pages) - new
            seconds += time.perf_counter() - t0
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
    print(f"engine: ready in {timings['engine_s']:.1f} s (not counted above)", file=out)
    return 0
