"""Index builds over the stored documents: the token index, and the BM25 vectors.

The centroids live beside the shard (embedded) or in a side collection (server); the
manifest records their count, checksum and ``nprobe`` only once every stored document carries
its postings, so a crash mid-build leaves a store that searches with the dense prefetch alone.
BM25 alike: the manifest records its settings only once every document carries its vector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import StoreCorruptError
from .backends import StoreBackend, scroll
from .backends.base import pid_of
from .lexical import BM25, Bm25Encoder, Bm25Settings
from .manifest import StoreManifest
from .records import PointId
from .token_index import (
    CentroidIndex,
    Sparse,
    TokenIndexSettings,
    checksum,
    describe,
    train_from_documents,
)

__all__ = ["build_bm25", "build_postings", "load_token_index"]

_HINT = "; open with drop_token_index=True, then build_token_index() again"


def load_token_index(backend: StoreBackend, manifest: StoreManifest) -> CentroidIndex | None:
    """The recorded token index, verified against the manifest (``StoreCorruptError``)."""
    settings = manifest.token_index
    if settings is None:
        return None
    try:
        cents = backend.load_centroids()
    except StoreCorruptError as exc:
        raise StoreCorruptError(f"{exc}{_HINT}") from None
    dim = manifest.stored_dim
    if cents.shape != (settings.centroids, dim) or checksum(cents) != settings.sha256:
        raise StoreCorruptError(
            f"the token index centroids ({list(cents.shape)}) do not match the manifest "
            f"({settings.centroids} x {dim}, sha256 {settings.sha256[:12]}...){_HINT}"
        )
    return CentroidIndex(cents)


def build_postings(
    backend: StoreBackend,
    *,
    centroids: int | None,
    nprobe: int,
    sample_tokens: int | None,
    seed: int,
    batch: int,
    bar: Any = None,
    timings: dict[str, float] | None = None,
) -> tuple[CentroidIndex, TokenIndexSettings]:
    """Train centroids on a sample of stored documents, save them, and post every document.

    The caller drops the old index from the manifest before, and records the returned
    settings after: this function writes the centroids and the postings only. ``timings``
    (if given) receives the seconds spent per phase ("assign" runs on a worker thread,
    overlapped with "read all"; "assign wait" is the part this thread waited for).
    """
    tm: dict[str, float] = timings if timings is not None else {}
    phases = ("list ids", "sample read", "k-means", "read all", "assign", "assign wait")
    for k in (*phases, "write postings"):
        tm[k] = 0.0
    t0 = time.perf_counter()
    pids = [p for page, _ in scroll(backend, 4096, False) for p in page]
    tm["list ids"] = time.perf_counter() - t0

    def fetch(ids: list[Any]) -> list[Any]:
        t = time.perf_counter()
        out = [r.tokens for r in backend.retrieve(ids, True).values()]
        tm["sample read"] += time.perf_counter() - t
        return out

    t0 = time.perf_counter()
    index, trained = train_from_documents(
        pids,
        fetch,
        centroids=centroids,
        sample_tokens=sample_tokens,
        seed=seed,
        batch=batch,
    )
    tm["k-means"] = time.perf_counter() - t0 - tm["sample read"]
    backend.save_centroids(index.centroids)
    # Pipelined: this thread reads page i+1 (Python-bound: the backends hand vectors over as
    # lists of floats) while a worker assigns page i (faiss, GIL released); reads and writes
    # stay on this thread, in order, so a backend never sees two calls at once.
    total = 0
    pending: tuple[list[PointId], Future[list[Sparse]]] | None = None

    def post(job: tuple[list[PointId], Future[list[Sparse]]]) -> None:
        t = time.perf_counter()
        sparse = job[1].result()
        t1 = time.perf_counter()
        tm["assign wait"] += t1 - t
        backend.set_sparse(job[0], sparse)
        tm["write postings"] += time.perf_counter() - t1
        if bar is not None:
            bar.update(len(job[0]))

    with ThreadPoolExecutor(1, thread_name_prefix="token-index") as pool:

        def assign(flat: Any, lens: Any) -> list[Sparse]:
            t = time.perf_counter()
            out = index.assign_flat(flat, lens)
            tm["assign"] += time.perf_counter() - t
            return out

        pages = scroll(backend, batch, True)
        while True:
            t0 = time.perf_counter()
            page = next(pages, None)
            tm["read all"] += time.perf_counter() - t0
            if page is None:
                break
            batch_ids, toks = page
            lens = [t.shape[0] for t in toks]
            job = (batch_ids, pool.submit(assign, np.concatenate(toks), lens))
            total += sum(lens)
            if pending is not None:
                post(pending)
            pending = job
        if pending is not None:
            post(pending)
    return index, describe(index, nprobe, trained, total)


def build_bm25(
    backend: StoreBackend,
    manifest: StoreManifest,
    settings: Bm25Settings,
    *,
    measure: bool,
    batch: int,
    bar: Any = None,
) -> tuple[StoreManifest, Bm25Encoder, Bm25Settings]:
    """Give every stored document its BM25 vector, from its stored text.

    The caller drops ``bm25`` from the manifest before and records the returned settings
    after. Adds the BM25 vector to an older schema first (returns the manifest then in force).
    With ``measure``, ``avg_len`` is first measured over the stored texts (one extra pass);
    ``measured_docs`` records the store's size either way.
    """
    if manifest.bm25_vector is None:
        manifest = backend.add_bm25_vector(manifest)
    n_docs = backend.count()
    settings = settings.model_copy(update={"measured_docs": n_docs})
    if measure and n_docs:
        counter = Bm25Encoder(settings)
        total = sum(counter.length(t) for _, texts in _texts(backend, batch) for t in texts)
        settings = settings.model_copy(update={"avg_len": max(total / max(n_docs, 1), 1.0)})
    encoder = Bm25Encoder(settings)
    for pids, texts in _texts(backend, batch):
        pairs = [(p, v) for p, v in zip(pids, encoder.documents(texts), strict=True) if v]
        if pairs:
            backend.set_sparse([p for p, _ in pairs], [v for _, v in pairs], BM25)
        if bar is not None:
            bar.update(len(pids))
    return manifest, encoder, settings


def _texts(backend: StoreBackend, batch: int) -> Iterator[tuple[list[PointId], list[str]]]:
    offset: Any = None
    while True:
        recs, offset = backend.scroll_page(offset, batch, False, with_payload=True)
        if recs:
            yield (
                [pid_of(r.id) for r in recs],
                [str((r.payload or {}).get("text", "")) for r in recs],
            )
        if offset is None or not recs:
            return
