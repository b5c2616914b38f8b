"""The store's index maintenance: the token index and the BM25 vectors, built and followed.

A mixin of :class:`~vllm_retrieval.store.store.MultiVectorStore` (the facade keeps the
reading, writing and searching); the builds themselves are in :mod:`.indexing`.

On a server several processes share a collection: every change of the recorded indexes bumps
the manifest's ``generation``, and a store re-reads the manifest before each write and, at most
every ``sync_interval`` seconds, before a search; when the generation (or the recorded
indexes) changed, it reloads the token index's centroids and the BM25 settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import StoreError, StoreMismatchError
from .backends import StoreBackend
from .indexing import build_bm25, build_postings, load_token_index
from .lexical import Bm25Encoder, Bm25Settings, bm25_settings
from .manifest import StoreManifest, parse_manifest
from .records import check_positive
from .reduction import ReductionSettings
from .token_index import MIN_DOCS, CentroidIndex, TokenIndexSettings

if TYPE_CHECKING:
    from .dimensions import Projections

__all__ = ["IndexMaintenance"]


class IndexMaintenance:
    """Token index and BM25 lifecycle (state is set up by the store's constructor)."""

    _lock: threading.RLock
    _backend: StoreBackend
    manifest: StoreManifest
    collection: str | None
    batch_size: int
    show_progress: bool
    _drop_token_index: bool
    _token_index: CentroidIndex | None
    _bm25: Bm25Encoder | None
    _projections: Projections | None
    sync_interval: float
    _synced_at: float

    def _ensure_open(self) -> None:  # pragma: no cover - the store defines it
        raise NotImplementedError

    def _load_token_index(self) -> CentroidIndex | None:
        settings = self.manifest.token_index
        if settings is None:
            return None
        if self._drop_token_index:
            self._save_manifest(self.manifest.model_copy(update={"token_index": None}))
            return None
        return load_token_index(self._backend, self.manifest)

    def _check_bm25(self, wanted: Bm25Settings | None) -> None:
        have = self.manifest.bm25
        if wanted is None or have is None:
            return
        keys = ("language", "stemmer", "stopwords", "k", "b")
        diff = {k: (getattr(have, k), getattr(wanted, k)) for k in keys}
        diff = {k: v for k, v in diff.items() if v[0] != v[1]}
        if diff:
            raise StoreMismatchError(
                f"this store has other BM25 settings (stored, given): {diff}; "
                "change them with store.build_bm25(...)"
            )

    def _sync_token_index(self) -> None:
        """On a server other processes may (re)build the indexes: follow the recorded ones
        (a new ``generation``, or other recorded indexes from a writer that predates it)."""
        if not self._backend.shared:
            return
        self._synced_at = time.monotonic()
        raw = self._backend.read_manifest()
        if raw is None:  # the collection is gone: the operation itself reports it
            return
        mine = self.manifest.model_dump(mode="json")
        recorded = {"generation": 0, "token_index": None, "bm25": None}  # the defaults
        if any(raw.get(k, default) != mine[k] for k, default in recorded.items()):
            self.manifest = parse_manifest(raw, f"collection {self.collection!r}")
            self._token_index = self._load_token_index()
            self._bm25 = Bm25Encoder(self.manifest.bm25) if self.manifest.bm25 else None

    def _refresh(self) -> None:
        """Before a search: :meth:`_sync_token_index`, at most every ``sync_interval`` s."""
        if self._backend.shared and time.monotonic() - self._synced_at >= self.sync_interval:
            with self._lock:
                self._ensure_open()
                self._sync_token_index()

    def _progress(self, total: int, show: bool | None) -> Any:
        if not (self.show_progress if show is None else show):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="Indexing", unit="doc")

    def optimize(self) -> None:
        """Build indexes / merge segments now (Edge runs its optimisers in-process).

        Also builds the token index (:meth:`build_token_index`) the first time the store
        holds at least 1,000 documents (later documents join it as they are written), and
        (re)builds BM25 (:meth:`build_bm25`) when the store has none, or holds twice the
        documents its ``avg_len`` was measured on. Embedded: vacuums deleted documents, so
        that BM25's IDF no longer counts them.

        The postings and BM25 vectors are written before the optimisers run, once: documents
        written since the last optimisation are still in appendable segments then, where
        Qdrant changes a sparse vector in place (in an optimised segment it copies the whole
        point, token vectors included).

        In a store created with ``reduce_to``, the first optimisation from 1,000 documents
        fits the dimension reduction first (:meth:`reduce_dimensions`).
        """
        with self._lock:
            self._ensure_open()
            n = self._backend.count()
            wanted = self.manifest.reduction
            if wanted is not None and not wanted.fitted and n >= MIN_DOCS:
                self._reduce(0)
            if (
                self.manifest.sparse_vector is not None
                and self.manifest.token_index is None
                and n >= MIN_DOCS
            ):
                self._build_token_index(None, 2, None, 0, None)
            bm25 = self.manifest.bm25
            if n and (bm25 is None or n >= 2 * bm25.measured_docs):
                self._build_bm25(None, None, None, {})
            self._backend.optimize()

    def reduce_dimensions(self, *, seed: int = 0) -> ReductionSettings:
        """Fit the dimension reduction of a store created with ``reduce_to`` now (also run
        by ``optimize()`` from 1,000 documents; needs at least ``reduce_to`` documents).

        A PCA for token vectors (on about 65,536 of them, from documents drawn at random)
        and one for dense vectors (up to 20,000 documents); every document is then copied,
        projected, into a new shard (the disk space of a second, smaller copy), and the
        manifest naming it is the commit point: a crash before leaves the full-width store.
        A token index is rebuilt on the reduced vectors. Once fitted, this returns the
        recorded settings: the full-width vectors are gone, so it never refits.
        """
        with self._lock:
            self._ensure_open()
            r = self.manifest.reduction
            if r is None:
                raise StoreError("this store was created without reduce_to: nothing to fit")
            if r.fitted:
                return r
            self._reduce(seed)
            self._backend.optimize()
            assert self.manifest.reduction is not None
            return self.manifest.reduction

    def _reduce(self, seed: int) -> None:
        """:meth:`reduce_dimensions` (not yet fitted) without the optimisation after it."""
        from .dimensions import fit_projections, reduce_store

        r = self.manifest.reduction
        assert r is not None
        index = self.manifest.token_index
        proj, n_tok, n_docs = fit_projections(self._backend, r.dims, seed=seed)
        self.manifest = reduce_store(self._backend, self.manifest, proj, (n_tok, n_docs))
        self._projections = proj
        self._token_index = None
        if index is not None:  # its centroids were full-width: train them again
            self._build_token_index(None, index.nprobe, None, seed, None)

    def build_bm25(
        self,
        settings: Mapping[str, Any] | Bm25Settings | None = None,
        *,
        avg_len: float | None = None,
        show_progress: bool | None = None,
        **overrides: Any,
    ) -> Bm25Settings:
        """(Re)compute every document's BM25 vector from its stored text; returns the settings.

        ``settings`` / keyword ``overrides`` (``language``, ``stemmer``, ``stopwords``, ``k``,
        ``b``) default to the recorded ones; ``avg_len`` (average document length in terms)
        is measured over the stored documents unless given (either way ``optimize()``
        measures it again once the store has doubled). A store written before BM25
        existed gets the BM25 vector first (embedded: the shard is copied into a new folder,
        which needs the disk space of a second copy; server: ``create_vector_name``).

        Crash-safe like :meth:`build_token_index`: the recorded settings are dropped first and
        recorded again only once every document carries its vector (until then the ``bm25``
        mode raises ``StoreError`` and the default search is ``hybrid``).
        """
        with self._lock:
            new = self._build_bm25(settings, avg_len, show_progress, overrides)
            self._backend.optimize()
            return new

    def _build_bm25(
        self,
        settings: Mapping[str, Any] | Bm25Settings | None,
        avg_len: float | None,
        show_progress: bool | None,
        overrides: dict[str, Any],
    ) -> Bm25Settings:
        """:meth:`build_bm25` without the optimisation after it."""
        base = settings if settings is not None else self.manifest.bm25
        new = bm25_settings(
            dict(base) if isinstance(base, Mapping) else base, avg_len=avg_len, **overrides
        )
        with self._lock:
            self._ensure_open()
            self._sync_token_index()
            if self.manifest.bm25 is not None:
                self._save_manifest(self.manifest.model_copy(update={"bm25": None}))
            self._bm25 = None
            bar = self._progress(self._backend.count(), show_progress)
            try:
                manifest, encoder, new = build_bm25(
                    self._backend,
                    self.manifest,
                    new,
                    measure=avg_len is None,
                    batch=self.batch_size,
                    bar=bar,
                )
            finally:
                if bar is not None:
                    bar.close()
            self.manifest = manifest
            self._save_manifest(self.manifest.model_copy(update={"bm25": new}))
            self._bm25 = encoder
            return new

    def _save_manifest(self, manifest: StoreManifest) -> None:
        """Record ``manifest`` with the next ``generation`` (past the recorded one too, on a
        server: readers reload the indexes when it changes)."""
        gen = max(self.manifest.generation, manifest.generation)
        if self._backend.shared:
            raw = self._backend.read_manifest() or {}
            recorded = raw.get("generation")
            if isinstance(recorded, int) and not isinstance(recorded, bool):
                gen = max(gen, recorded)
        manifest = manifest.model_copy(update={"generation": gen + 1})
        self._backend.save_manifest(manifest)
        self.manifest = manifest

    def build_token_index(
        self,
        centroids: int | None = None,
        *,
        nprobe: int = 2,
        sample_tokens: int | None = None,
        seed: int = 0,
        show_progress: bool | None = None,
    ) -> TokenIndexSettings:
        """(Re)build the token index: k-means centroids over the stored token vectors and
        every document's centroid postings (a Qdrant sparse vector).

        ``hybrid`` search then prefetches candidates from the postings as well as from the
        dense vector, which finds the documents that share the query's tokens. Documents
        added later are assigned to the centroids as they are written; rebuild after the
        collection has grown several-fold. ``centroids`` defaults to
        ``2^floor(log2(2 sqrt(T)))`` (T stored tokens, estimated from the sample, 64..8192),
        trained on up to ``sample_tokens`` (default ``64 * centroids``) tokens of documents
        drawn at random; then every document is read once and assigned.

        Crash-safe: the old index is dropped from the manifest first and the new one is
        recorded only once every document carries its postings; until then ``hybrid`` uses
        the dense prefetch alone. The build holds the store's lock (searches and writes of
        this object wait for it); on a server, build while no other process writes to the
        collection (other writers pick up the new index at their next write).
        """
        centroids = None if centroids is None else check_positive(centroids, "centroids")
        nprobe = check_positive(nprobe, "nprobe")
        sample_tokens = (
            None if sample_tokens is None else check_positive(sample_tokens, "sample_tokens")
        )
        with self._lock:
            settings = self._build_token_index(
                centroids, nprobe, sample_tokens, seed, show_progress
            )
            self._backend.optimize()
            return settings

    def _build_token_index(
        self,
        centroids: int | None,
        nprobe: int,
        sample_tokens: int | None,
        seed: int,
        show_progress: bool | None,
    ) -> TokenIndexSettings:
        """:meth:`build_token_index` (arguments checked) without the optimisation after it."""
        if self.manifest.sparse_vector is None:
            raise StoreError(
                "this store was created without the centroid sparse vector (an older "
                "vllm-retrieval); re-create it to use a token index"
            )
        with self._lock:
            self._ensure_open()
            n_docs = self._backend.count()
            if n_docs == 0:
                raise StoreError("cannot build a token index for an empty store")
            if self.manifest.token_index is not None:
                self._save_manifest(self.manifest.model_copy(update={"token_index": None}))
            self._token_index = None
            bar = self._progress(n_docs, show_progress)
            try:
                index, settings = build_postings(
                    self._backend,
                    centroids=centroids,
                    nprobe=nprobe,
                    sample_tokens=sample_tokens,
                    seed=seed,
                    batch=self.batch_size,
                    bar=bar,
                )
            finally:
                if bar is not None:
                    bar.close()
            self._save_manifest(self.manifest.model_copy(update={"token_index": settings}))
            self._token_index = index
            return settings
