"""``MultiVectorStore``: dense + ColBERT token vectors in Qdrant (embedded Edge or a server).

Qdrant is the storage engine; this facade maps the project's API onto it:

* **Embedded (default)**: ``MultiVectorStore(path="./idx", encoder=enc)`` keeps a Qdrant Edge
  shard in ``idx/shard`` and the store's settings in ``idx/vllm_retrieval.json``
  (:mod:`.backends.edge`).
  One process holds an embedded store at a time (:mod:`.locking`): another opener gets
  ``StoreLockedError`` naming the holder's pid, or waits up to ``lock_timeout`` seconds.
* **Server / cluster**: ``MultiVectorStore(url=..., api_key=..., collection="docs")`` uses
  ``qdrant-client``; the settings live in the collection's metadata. ``location=":memory:"``
  or ``client_path=...`` use qdrant-client's local mode (same API, for tests)
  (:mod:`.backends.client`). Many processes may share a collection: each follows the token
  index and BM25 that another one (re)builds (:mod:`.maintenance`).

Both backends have the same schema (:mod:`.manifest`): a named dense vector ``"dense"``
(cosine, HNSW), a named multivector ``"colbert"`` (cosine, MaxSim comparator, no HNSW), named
sparse vectors ``"centroids"`` (the token index's postings, :mod:`.token_index`) and ``"bm25"``
(IDF modifier, :mod:`.lexical`), and a payload ``{"text", "metadata", "doc_id"}``. Results
always carry the caller's original id, type preserved (:mod:`.records`). Search modes are
defined once, in :mod:`.plan`.

Error policy: every input is validated before anything is written (a bad call leaves the store
unchanged). Duplicate ids in one call raise :class:`DuplicateIdError`; deleting unknown ids is
not an error (``delete`` returns how many documents were actually removed); ``get`` skips
unknown ids while ``get_tokens`` raises ``KeyError`` for them (its result is positional).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from ..encoding import check_text
from ..errors import StoreCorruptError, StoreError
from .backends import StoreBackend, open_backend
from .dimensions import Projections, load_projections
from .filters import FilterNode, parse_filter, to_qdrant
from .images import encode_image_batches
from .lexical import Bm25Encoder, Bm25Settings, bm25_settings
from .lifecycle import StoreLifecycle
from .locking import check_seconds
from .maintenance import IndexMaintenance
from .manifest import (
    BM25,
    CENTROIDS,
    COMPRESSIONS,
    DENSE,
    TOKENS,
    check_manifest,
)
from .plan import QueryPlan
from .records import (
    DocId,
    DuplicateIdError,
    Point,
    Record,
    SearchHit,
    check_dense,
    check_tokens,
    hit,
    make_points,
    point_ids,
    prepare,
)
from .reduction import check_pool_factor, check_reduce_to, pool_tokens
from .token_index import CentroidIndex

if TYPE_CHECKING:
    from ..encoding import Encoder

__all__ = ["DuplicateIdError", "MultiVectorStore", "SearchHit"]

FloatArray = npt.NDArray[np.float32]


class MultiVectorStore(StoreLifecycle, IndexMaintenance):
    """Dense + token (ColBERT) vectors, text and metadata in Qdrant; see the module doc.

    Args:
        path: Directory of an embedded Qdrant Edge store (created if missing or empty;
            reopened, with its settings checked, if it holds a store).
        encoder: The :class:`~vllm_retrieval.Encoder` for ``add_texts``/``search``. When
            reopening without one, an encoder with the recorded settings is rebuilt on first
            use.
        url, api_key, collection: A Qdrant server or cluster (through qdrant-client). The
            key (a ``str`` or ``pydantic.SecretStr``; default ``$QDRANT_API_KEY``) is kept
            as a ``SecretStr`` and never shown.
        location, client_path: qdrant-client local mode (``":memory:"`` or a folder).
        client_kwargs: Further keyword arguments for ``QdrantClient``.
        compression: Token-vector storage: ``None`` (float32), ``"fp16"`` (half the bytes),
            ``"int8"`` (scalar-quantised codes in RAM, fp16 originals on disk for rescoring)
            or ``"binary"`` (2-bit binary codes in RAM, fp16 originals on disk). ``None`` on
            reopen keeps the recorded choice; another value than the recorded one is refused.
        dim: Vector width; needed only for a new store without an encoder (otherwise learned
            from the encoder). Checked against the store on reopen.
        batch_size: Documents per write (and per encoder call in ``add_texts``).
        show_progress: Show a tqdm bar while ingesting.
        drop_token_index: Forget a recorded token index on opening (e.g. after its centroids
            were lost or damaged, which otherwise raises ``StoreCorruptError``); ``hybrid``
            then uses the dense prefetch until :meth:`build_token_index` runs again.
        bm25: BM25 settings of a new store (a dict or ``Bm25Settings``: ``language``,
            ``stemmer``, ``stopwords``, ``k``, ``b``; ``ValueError`` for bad ones). On reopen
            ``None`` keeps the recorded ones; others are refused (``StoreMismatchError``:
            change them with :meth:`build_bm25`).
        lock_timeout: Seconds to wait for another process holding the embedded store (or
            the qdrant-client folder) before ``StoreLockedError``; ``0`` (default) fails at
            once, ``math.inf`` waits as long as it takes.
        sync_interval: Shared collections (a server): at most this often (seconds) a search
            first checks whether another process rebuilt the token index or BM25, and
            reloads them (writes check every time).
        pool_factor: Token pooling of a new store: each document's token vectors are
            clustered (hierarchically, as PyLate does) into about ``T / pool_factor`` means
            at write time, the first (``[CLS]``) kept as it is; queries are never pooled.
            ``2`` halves the stored tokens for ~0.2 nDCG@10 point on SciFact
            (``benchmarks/reduction.py``). Recorded in the manifest: ``None`` on reopen keeps
            it, another value is refused (``StoreMismatchError``).
        reduce_to: Dimension reduction of a new store, dense and token vectors alike. When
            the encoder's model declares that Matryoshka width (``config.json``), its first
            ``reduce_to`` coordinates from the first write on (any backend). Otherwise
            (embedded stores only) a PCA: vectors are stored full-width until ``optimize()``
            (from 1,000 documents) or :meth:`reduce_dimensions` fits one per kind on a
            sample of them, then ``reduce_to`` wide. Documents and queries are projected
            alike (``benchmarks/reduction.py``: bytes and nDCG). Recorded in the manifest
            like ``pool_factor``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        encoder: Encoder | None = None,
        url: str | None = None,
        api_key: str | SecretStr | None = None,
        collection: str = "vllm_retrieval",
        location: str | None = None,
        client_path: str | os.PathLike[str] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        compression: str | None = None,
        dim: int | None = None,
        batch_size: int = 256,
        show_progress: bool = False,
        drop_token_index: bool = False,
        bm25: Mapping[str, Any] | Bm25Settings | None = None,
        lock_timeout: float = 0.0,
        sync_interval: float = 1.0,
        pool_factor: int | None = None,
        reduce_to: int | None = None,
        _must_exist: bool = False,
    ) -> None:
        if compression is not None and compression not in COMPRESSIONS:
            raise ValueError(
                f"unknown compression {compression!r} (choose None, {', '.join(COMPRESSIONS)})"
            )
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        lock_timeout = check_seconds(lock_timeout, "lock_timeout")
        if pool_factor is not None:
            check_pool_factor(pool_factor)
        if reduce_to is not None:
            check_reduce_to(reduce_to)
        self.sync_interval = check_seconds(sync_interval, "sync_interval")
        if encoder is not None:
            encoder.require_token_vectors()  # a dual encoder cannot fill a multi-vector store
        self._encoder = encoder
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._lock = threading.RLock()
        self._closed = False
        self._drop_token_index = bool(drop_token_index)
        self._token_index: CentroidIndex | None = None
        self._bm25: Bm25Encoder | None = None
        self._projections: Projections | None = None
        wanted = (
            None
            if bm25 is None
            else bm25_settings(dict(bm25) if isinstance(bm25, Mapping) else bm25)
        )
        self._backend: StoreBackend
        self._backend, self.manifest = open_backend(
            path=path,
            url=url,
            api_key=api_key,
            collection=collection,
            location=location,
            client_path=client_path,
            client_kwargs=client_kwargs,
            encoder=encoder,
            compression=compression,
            dim=dim,
            must_exist=_must_exist,
            bm25=wanted or Bm25Settings(),
            lock_timeout=lock_timeout,
            pool_factor=pool_factor,
            reduce_to=reduce_to,
        )
        self._synced_at = time.monotonic()  # the manifest was just read
        self.path: Path | None = None if path is None else Path(path)
        self.collection: str | None = None if path is not None else collection
        try:
            self._check_bm25(wanted)
            self._projections = load_projections(self._backend, self.manifest)
            self._token_index = self._load_token_index()
            self._drop_token_index = False  # on opening only: never an index built later
            self._bm25 = Bm25Encoder(self.manifest.bm25) if self.manifest.bm25 else None
        except BaseException:
            self._backend.close()
            raise

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        encoder: Encoder | None = None,
        **kwargs: Any,
    ) -> MultiVectorStore:
        """Reopen an existing store (``FileNotFoundError`` if there is none).

        Without ``encoder`` the recorded encoder settings are used to rebuild one on first
        use; with one, it must match the store's model and settings (``StoreMismatchError``).
        """
        return cls(path, encoder=encoder, _must_exist=True, **kwargs)

    # -- the encoder ------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The encoder (rebuilt from the recorded settings if none was given)."""
        if self._encoder is None:
            settings = self.manifest.encoder
            if settings is None:
                raise StoreError(
                    "this store was built from caller-supplied vectors and has no encoder: "
                    "pass encoder= or use add_encoded/search_encoded"
                )
            from ..encoding import Encoder

            self._encoder = Encoder(**settings.encoder_kwargs())
            check_manifest(self.manifest, self._encoder, None, None, "this store")
        return self._encoder

    # -- writing ------------------------------------------------------------------------------

    def _write(self, points: list[Point]) -> None:
        with self._lock:
            self._ensure_open()
            self._sync_token_index()
            index, bm25 = self._token_index, self._bm25
            if self._projections is not None:  # a reduced store: documents projected
                self._projections.points(points)
            if index is not None:  # new documents join the token index as they are written
                for p, sparse in zip(points, index.assign([p.tokens for p in points]), strict=True):
                    p.sparse = sparse
            if bm25 is not None:  # and get their BM25 vector, in the same write
                for p, vec in zip(
                    points, bm25.documents([p.payload["text"] for p in points]), strict=True
                ):
                    p.bm25 = vec
            self._backend.upsert(points)

    def _points(
        self,
        items: list[str],
        metas: list[dict[str, Any]],
        ids: list[DocId],
        s: int,
        dense: Any,
        tokens: list[FloatArray],
    ) -> list[Point]:
        """Points of documents ``s:s+n`` of one call, from their freshly encoded vectors."""
        e = s + len(tokens)
        dense_arr = check_dense(dense, e - s, self.dim)
        toks = self._pooled(check_tokens(tokens, e - s, self.dim))
        return make_points(items[s:e], dense_arr, toks, metas[s:e], ids[s:e])

    def _pooled(self, tokens: list[FloatArray]) -> list[FloatArray]:
        """Documents' token vectors as stored: pooled when the store says so (never queries)."""
        factor = self.manifest.pool_factor
        return tokens if factor == 1 else pool_tokens(tokens, factor)

    def add_encoded(
        self,
        texts: Sequence[str],
        dense: Any,
        tokens: Sequence[Any],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[DocId] | None = None,
        *,
        show_progress: bool | None = None,
    ) -> list[DocId]:
        """Upsert documents whose vectors are already computed; returns their ids.

        ``dense`` is ``[n, d]``, ``tokens`` a list of ``[T_i, d]``. Everything is validated
        before the first write; documents are written in batches of ``batch_size``. When this
        returns, every document is durable (Edge's WAL; ``wait=True`` on a server).
        """
        self._ensure_open()
        items, metas, doc_ids = prepare(texts, metadatas, ids, allow_empty=True)
        dense_arr = check_dense(dense, len(items), self.dim)
        toks = self._pooled(check_tokens(tokens, len(items), self.dim))
        bar = self._progress(len(items), show_progress)
        try:
            for s in range(0, len(items), self.batch_size):
                e = s + self.batch_size
                self._write(
                    make_points(items[s:e], dense_arr[s:e], toks[s:e], metas[s:e], doc_ids[s:e])
                )
                if bar is not None:
                    bar.update(min(e, len(items)) - s)
        finally:
            if bar is not None:
                bar.close()
        return doc_ids

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[DocId] | None = None,
        *,
        show_progress: bool | None = None,
    ) -> list[DocId]:
        """Encode (one forward pass per text) and upsert texts; returns their ids.

        Ids, metadata and texts are validated before anything is encoded or written; texts
        are encoded and written in batches of ``batch_size``, the encoding of the next batch
        overlapping the write of this one (``benchmarks/ingest.py``). When this returns,
        every document is durable; after an error, the batches written before it are.
        """
        self._ensure_open()
        items, metas, doc_ids = prepare(texts, metadatas, ids, allow_empty=False)
        enc = self.encoder
        size = self.batch_size
        bar = self._progress(len(items), show_progress)
        pool = ThreadPoolExecutor(1, thread_name_prefix="vllm-retrieval-ingest")
        try:
            pending = pool.submit(enc.encode_documents, items[:size])
            for s in range(0, len(items), size):
                dense, toks = pending.result()
                if s + size < len(items):
                    pending = pool.submit(enc.encode_documents, items[s + size : s + 2 * size])
                self._write(self._points(items, metas, doc_ids, s, dense, toks))
                if bar is not None:
                    bar.update(len(toks))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # an encode in flight is dropped
            if bar is not None:
                bar.close()
        return doc_ids

    def add_images(
        self,
        images: Sequence[Any],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[DocId] | None = None,
        *,
        captions: Sequence[str | None] | None = None,
        keep_pixels: bool = False,
        show_progress: bool | None = None,
    ) -> list[DocId]:
        """Encode images with the store's vision-language encoder (one forward pass each:
        dense and patch vectors) and upsert them as documents; returns their ids.

        The payload keeps a reference, not the pixels: ``metadata["image"]`` is the file path
        or URI given (``keep_pixels=True`` stores in-memory images as PNG ``data:`` URIs); the
        text is the caption (``""`` without one). Text queries then retrieve images by MaxSim
        over their patch vectors. Ids and metadata are validated first, images batch by batch
        (an unreadable image raises ``ImageError``; the batches before it stay stored).
        """
        self._ensure_open()
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise TypeError(f"images must be a list, got {type(images).__name__}")
        _, metas, doc_ids = prepare([""] * len(images), metadatas, ids, allow_empty=True)
        enc = self.encoder
        if not enc.model_profile.takes_images:
            raise StoreError(f"the store's encoder ({enc.model_path!r}) takes no images")
        bar = self._progress(len(images), show_progress)
        try:
            for s, texts, dense, toks, batch_metas in encode_image_batches(
                enc, images, metas, captions, keep_pixels=keep_pixels, batch_size=self.batch_size
            ):
                self._write(self._points(texts, batch_metas, doc_ids[s:], 0, dense, toks))
                if bar is not None:
                    bar.update(len(toks))
        finally:
            if bar is not None:
                bar.close()
        return doc_ids

    async def aadd_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[DocId] | None = None,
    ) -> list[DocId]:
        """Async :meth:`add_texts` (encoder's async path; Qdrant calls in a worker thread)."""
        self._ensure_open()
        items, metas, doc_ids = prepare(texts, metadatas, ids, allow_empty=False)
        enc = self.encoder
        for s in range(0, len(items), self.batch_size):
            e = s + self.batch_size
            dense, toks = await enc.aencode_documents(items[s:e])
            points = self._points(items, metas, doc_ids, s, dense, toks)
            await asyncio.to_thread(self._write, points)
        return doc_ids

    def delete(
        self,
        ids: Sequence[DocId] | None = None,
        *,
        filter: Mapping[str, Any] | None = None,
    ) -> int:
        """Delete by ids and/or by filter; returns how many documents were removed.

        Unknown ids are not an error (they count 0). Giving neither ids nor a filter is a
        ``ValueError`` (use a filter such as ``{"$not": {...}}`` to delete broadly).
        """
        self._ensure_open()
        if ids is None and filter is None:
            raise ValueError("delete() needs ids or filter=")
        pids = [] if ids is None else list(dict.fromkeys(point_ids(ids)))
        node = parse_filter(filter) if filter is not None else None
        if filter is not None and node is None:
            raise ValueError("delete(filter={}) would delete everything; refused")
        removed = 0
        with self._lock:
            self._ensure_open()
            if pids:
                removed += len(self._backend.retrieve(pids, with_tokens=False))
                self._backend.delete_ids(pids)
            if node is not None:
                flt = to_qdrant(node, self._backend.factory)
                n = self._backend.count(flt)
                if n:
                    self._backend.delete_filter(flt)
                removed += n
        return removed

    # -- reading ------------------------------------------------------------------------------

    def _retrieve(self, ids: Sequence[DocId], with_tokens: bool) -> list[tuple[DocId, Record]]:
        wanted = list(zip(ids, point_ids(ids), strict=True))
        if not wanted:
            return []
        with self._lock:
            self._ensure_open()
            found = self._backend.retrieve(list(dict.fromkeys(p for _, p in wanted)), with_tokens)
        return [(doc_id, found[p]) for doc_id, p in wanted if p in found]

    def get(self, ids: Sequence[DocId]) -> list[SearchHit]:
        """Stored documents for ``ids`` in the given order (unknown ids are skipped)."""
        return [hit(rec.payload, math.nan, doc_id) for doc_id, rec in self._retrieve(ids, False)]

    def project_query(self, vectors: Any, kind: str = "tokens") -> FloatArray:
        """Query vectors as the store compares them: ``tokens`` ``[Q, d]`` or a ``dense``
        ``[d]`` vector, projected once the store's dimension reduction is fitted (else
        returned as float32); for scoring against :meth:`get_tokens`."""
        if kind not in ("tokens", "dense"):
            raise ValueError(f"kind must be 'tokens' or 'dense', got {kind!r}")
        arr = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            proj = self._projections
        if proj is None:
            return arr
        if kind == "dense":
            row: FloatArray = proj.dense(arr.reshape(1, -1))[0]
            return row
        return proj.tokens(arr)

    def get_tokens(self, ids: Sequence[DocId]) -> list[FloatArray]:
        """Stored token vectors ``[T_i, d]`` float32 per id (``KeyError`` for unknown ids).

        Vectors come back as stored: L2-normalised (cosine), with ``fp16``/``int8``/
        ``binary`` compression rounded to fp16, in a reduced store ``reduce_to`` wide
        (score them against :meth:`project_query`).
        """
        ids = list(ids)
        recs = self._retrieve(ids, with_tokens=True)
        if len(recs) != len(ids):
            present = {(type(d), d) for d, _ in recs}
            missing = [i for i in ids if (type(i), i) not in present]
            raise KeyError(f"unknown ids: {missing[:10]!r}")
        out: list[FloatArray] = []
        for doc_id, rec in recs:
            if rec.tokens is None:  # pragma: no cover - schema guarantees token vectors
                raise StoreCorruptError(f"document {doc_id!r} has no token vectors")
            out.append(rec.tokens)
        return out

    def search_encoded(
        self,
        dense: Any = None,
        tokens: Any = None,
        k: int = 10,
        *,
        mode: str | None = None,
        filter: Mapping[str, Any] | None = None,
        candidates: int = 200,
        fusion: str | None = None,
        nprobe: int | None = None,
        fuse: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        text: str | None = None,
    ) -> list[SearchHit]:
        """Search with an already-encoded query (``dense [d]``, ``tokens [Q, d]``); ``text``
        (the query's text) adds the BM25 leg. Settings as in :meth:`search`."""
        if text is not None:
            text = check_text(text, "text")
        self._refresh()
        plan = self._plan(mode, k, candidates, fusion, nprobe, fuse, weights, text)
        return self._run(plan, parse_filter(filter), dense, tokens, text)

    def _plan(self, *args: Any) -> QueryPlan:
        text = args[-1]
        why: str | None
        if self._bm25 is None:
            why = "this store has no BM25 yet: run store.build_bm25() (or store.optimize())"
        else:
            why = None if text is not None else "search_encoded needs the query's text= for it"
        return QueryPlan.create(*args[:-1], lexical=why)

    def _run(
        self, plan: QueryPlan, node: FilterNode | None, dense: Any, tokens: Any, text: str | None
    ) -> list[SearchHit]:
        q_dense, q_tok = plan.query_vectors(dense, tokens, self.dim)
        with self._lock:
            self._ensure_open()
            if self._projections is not None:  # a reduced store: the query projected
                q_dense, q_tok = self._projections.query(q_dense, q_tok)
            vectors: dict[str, Any] = {DENSE: q_dense, TOKENS: q_tok}
            vectors = {name: v for name, v in vectors.items() if v is not None}
            flt = to_qdrant(node, self._backend.factory) if node is not None else None
            index, settings = self._token_index, self.manifest.token_index
            if plan.uses_token_index and index is not None and settings is not None:
                vectors[CENTROIDS] = index.probe(q_tok, plan.nprobe or settings.nprobe)  # type: ignore[arg-type]
            if plan.needs_bm25:
                if self._bm25 is None or text is None:  # pragma: no cover - dropped meanwhile
                    raise StoreError("BM25 is not available on this store any more")
                vectors[BM25] = self._bm25.query(text)
            rows = self._backend.query(plan, vectors, flt)
        return [hit(payload, score) for score, payload in rows]

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str | None = None,
        filter: Mapping[str, Any] | None = None,
        candidates: int = 200,
        fusion: str | None = None,
        nprobe: int | None = None,
        fuse: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
    ) -> list[SearchHit]:
        """Top-``k`` documents for ``query`` (fewer if the store, or the filter, has fewer).

        Modes (:mod:`.plan`): ``dense``, ``bm25``, ``maxsim``, ``hybrid`` and ``fusion``
        (default: distribution-based fusion of the MaxSim, BM25 and dense lists; without
        BM25 it is ``hybrid``). Scores: cosine (``dense``), BM25 (``bm25``), MaxSim sum
        (``maxsim``, ``hybrid``), fused score (``fusion``). ``candidates`` is the depth of
        each prefetch (``hybrid``'s pool: dense, token index, BM25) and of each list fused;
        ``fuse`` the lists (of ``dense``, ``bm25``, ``maxsim``), ``fusion`` ``"weighted"``,
        ``"rrf"`` or ``"dbsf"``, ``weights`` one per list; ``nprobe`` overrides the token
        index's centroids probed per query token.
        """
        query = check_text(query, "query")
        self._refresh()
        plan = self._plan(mode, k, candidates, fusion, nprobe, fuse, weights, query)
        node = parse_filter(filter)
        dense, toks = self.encoder.encode_queries([query])
        return self._run(plan, node, dense[0], toks[0], query)

    async def asearch(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str | None = None,
        filter: Mapping[str, Any] | None = None,
        candidates: int = 200,
        fusion: str | None = None,
        nprobe: int | None = None,
        fuse: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
    ) -> list[SearchHit]:
        """Async :meth:`search`."""
        query = check_text(query, "query")
        if self._backend.shared:  # a server round trip at most every sync_interval s
            await asyncio.to_thread(self._refresh)
        plan = self._plan(mode, k, candidates, fusion, nprobe, fuse, weights, query)
        node = parse_filter(filter)
        dense, toks = await self.encoder.aencode_queries([query])
        return await asyncio.to_thread(self._run, plan, node, dense[0], toks[0], query)
