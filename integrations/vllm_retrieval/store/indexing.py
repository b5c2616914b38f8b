"""The token index's lifecycle in a store: load and verify, build, post new documents.

The centroids live beside the shard (embedded) or in a side collection (server); the
manifest records their count, checksum and ``nprobe`` only once every stored document carries
its postings, so a crash mid-build leaves a store that searches with the dense prefetch alone.
"""

from __future__ import annotations

from typing import Any

from ..errors import StoreCorruptError
from .backends import StoreBackend, scroll
from .manifest import StoreManifest
from .token_index import CentroidIndex, TokenIndexSettings, checksum, describe, train_from_documents

__all__ = ["build_postings", "load_token_index"]

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
    if cents.shape != (settings.centroids, manifest.dim) or checksum(cents) != settings.sha256:
        raise StoreCorruptError(
            f"the token index centroids ({list(cents.shape)}) do not match the manifest "
            f"({settings.centroids} x {manifest.dim}, sha256 {settings.sha256[:12]}...){_HINT}"
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
