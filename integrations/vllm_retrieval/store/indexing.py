"""Index builds over the stored documents: the token index, and the BM25 vectors.

The centroids live beside the shard (embedded) or in a side collection (server); the
manifest records their count, checksum and ``nprobe`` only once every stored document carries
its postings, so a crash mid-build leaves a store that searches with the dense prefetch alone.
BM25 alike: the manifest records its settings only once every document carries its vector.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import StoreCorruptError
from .backends import StoreBackend, scroll
from .backends.base import pid_of
from .lexical import BM25, Bm25Encoder, Bm25Settings
from .manifest import StoreManifest
from .records import PointId
from .token_index import CentroidIndex, TokenIndexSettings, checksum, describe, train_from_documents

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
) -> tuple[CentroidIndex, TokenIndexSettings]:
    """Train centroids on a sample of stored documents, save them, and post every document.

    The caller drops the old index from the manifest before, and records the returned
    settings after: this function writes the centroids and the postings only.
    """
    pids = [p for page, _ in scroll(backend, 4096, False) for p in page]
    index, trained = train_from_documents(
        pids,
        lambda ids: [r.tokens for r in backend.retrieve(ids, True).values()],
        centroids=centroids,
        sample_tokens=sample_tokens,
        seed=seed,
        batch=batch,
    )
    backend.save_centroids(index.centroids)
    total = 0
    for batch_ids, toks in scroll(backend, batch, True):
        backend.set_sparse(batch_ids, index.assign(toks))
        total += sum(t.shape[0] for t in toks)
        if bar is not None:
            bar.update(len(batch_ids))
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
