"""``VLLMMultiVectorStore``: a LangChain ``VectorStore`` over a core ``MultiVectorStore``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from typing_extensions import Self

from ..encoding import Encoder
from ..store import (
    RRF_K,
    MultiVectorStore,
    QueryPlan,
    SearchHit,
    ids_for_write,
    lookup,
    resolve_ids,
)
from .embeddings import VLLMEmbeddings
from .retrievers import SEARCH_OPTIONS, SearchMode, VLLMMultiVectorRetriever, hit_to_document

__all__ = ["VLLMMultiVectorStore", "relevance_score"]

FloatArray = npt.NDArray[np.float32]

# Reciprocal-rank fusion of the store: weight / (RRF_K + rank - 1 + 1 / weight) per list
# (Qdrant's weighted RRF); a document first in every list scores the sum of the tops.


def _rrf_top(weight: float) -> float:
    return 0.0 if weight <= 0 else 1.0 / (1.0 / weight + RRF_K - 1.0)


def relevance_score(score: float, plan: QueryPlan, query_tokens: int | None = None) -> float:
    """Map a store score to a relevance in ``[0, 1]`` (1 = most relevant), by the search's
    :class:`~vllm_retrieval.store.QueryPlan` (its mode, and for ``fusion`` its lists):

    * ``dense``: the cosine similarity, negatives as 0.
    * ``maxsim`` and ``hybrid``: the MaxSim score divided by the number of query token
      vectors (``query_tokens``), i.e. the mean over query tokens of their best cosine with
      a document token; negatives as 0.
    * ``fusion`` of several lists: the fraction of the best possible fused score —
      ``"weighted"``: score / the sum of the weights (each list min-max normalised, so a
      document best in every list gets 1); ``"rrf"``: score / the score of a document first in
      every list (``sum(1 / (1/w + 59))``, i.e. ``n / 60`` with equal weights); ``"dbsf"``:
      score / the number of lists (each list's scores normalised to about [0, 1]).
      ``fusion`` of one list is that list's mode.
    * ``bm25`` scores have no fixed scale: ``ValueError``.

    Values are clipped to ``[0, 1]``.
    """
    if plan.mode == "fusion":
        signals: tuple[str, ...] = tuple(plan.fuse)
    else:
        signals = ("maxsim",) if plan.mode == "hybrid" else (plan.mode,)
    if len(signals) > 1:
        weights = list(plan.weights or [1.0] * len(signals))
        if plan.fusion == "weighted":
            best = sum(weights)
        elif plan.fusion == "rrf":
            best = sum(_rrf_top(w) for w in weights)
        else:
            best = float(len(signals))
        value = score / best
    elif signals[0] == "dense":
        value = score
    elif signals[0] == "maxsim":
        if not query_tokens or query_tokens <= 0:
            raise ValueError("MaxSim scores need the query's token count for a relevance")
        value = score / query_tokens
    else:
        raise ValueError(
            f"{signals[0]} scores have no fixed scale, so no relevance in [0, 1]; "
            "use similarity_search_with_score, or a dense, MaxSim or fusion search"
        )
    return min(1.0, max(0.0, float(value)))


def _prepare(
    texts: Iterable[str],
    metadatas: list[dict[str, Any]] | None,
    ids: Sequence[str | None] | None,
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Validate lengths; copy metadata (callers' dicts are never touched); fill in ids."""
    items = list(texts)
    if metadatas is not None and len(metadatas) != len(items):
        raise ValueError(f"got {len(metadatas)} metadatas for {len(items)} texts")
    if ids is not None and len(ids) != len(items):
        raise ValueError(f"got {len(ids)} ids for {len(items)} texts")
    metas = [dict(m or {}) for m in metadatas] if metadatas is not None else [{} for _ in items]
    keys = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * len(items))]
    return items, metas, keys


def _centroid(tokens: Any) -> FloatArray:
    """The L2-normalised mean of a text's token vectors (its MMR representation)."""
    mean: FloatArray = np.asarray(tokens, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / np.float32(norm) if norm > 0 else mean


def _check_counts(k: Any, fetch_k: Any) -> None:
    for name, value in (("k", k), ("fetch_k", fetch_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_embedding(embedding: Any) -> None:
    if embedding is not None and not isinstance(embedding, VLLMEmbeddings):
        raise TypeError(
            "VLLMMultiVectorStore needs token vectors from the shared vLLM engine: "
            f"pass a VLLMEmbeddings (or encoder=), not {type(embedding).__name__}"
        )


class VLLMMultiVectorStore(VectorStore):
    """A LangChain vector store backed by a core multi-vector (dense + token vectors) store.

    Each text is encoded once by the shared vLLM engine into a dense vector and its token
    vectors. Pass an existing :class:`~vllm_retrieval.store.MultiVectorStore` (``store=``;
    it stays yours: :meth:`close` leaves it open), or let one be created from ``encoder=`` /
    ``embedding=`` and the store's own arguments (``path=`` for an embedded Qdrant Edge
    store on disk, ``url=`` for a Qdrant server, ``location=":memory:"`` for qdrant-client's
    local mode, the default when none is given); :meth:`close` (or ``with``) closes it.

    Search options (``search_kwargs`` of :meth:`as_retriever`, or keyword arguments of every
    search method) are the store's: ``mode``, ``filter``, ``candidates``, ``fusion``,
    ``fuse``, ``weights``, ``nprobe``; ``None`` keeps the default given here, then the
    store's (``mode="fusion"``: MaxSim, BM25 and dense lists, weighted).
    ``similarity_search_with_score`` gives the raw scores (cosine, BM25, MaxSim sum, fused
    score); ``similarity_search_with_relevance_scores`` and
    ``search_type="similarity_score_threshold"`` map them to ``[0, 1]`` with
    :func:`relevance_score`. ``search_type="mmr"`` runs LangChain's
    ``maximal_marginal_relevance`` over the ``fetch_k`` best documents of the mode, each
    represented by the normalised mean of its stored token vectors (nothing is encoded
    again).

    Ids are LangChain strings; a document stored through the core under an ``int`` id is
    found, replaced and deleted under its decimal string (``"12"`` for ``12``).
    """

    def __init__(
        self,
        store: MultiVectorStore | None = None,
        *,
        encoder: Encoder | None = None,
        embedding: VLLMEmbeddings | None = None,
        mode: SearchMode | None = None,
        candidates: int | None = None,
        fusion: str | None = None,
        nprobe: int | None = None,
        fuse: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        **store_kwargs: Any,
    ) -> None:
        if embedding is not None:
            _check_embedding(embedding)
            if encoder is not None and encoder is not embedding.core_encoder:
                raise ValueError("pass either encoder= or embedding=, not both")
            encoder = embedding.core_encoder
        self._owns_store = store is None
        self._owned_encoder: Encoder | None = None
        if store is None:
            targets = ("path", "url", "location", "client_path")
            if all(store_kwargs.get(t) is None for t in targets):
                store_kwargs["location"] = ":memory:"
            if encoder is None:
                encoder = self._owned_encoder = Encoder()
            store = MultiVectorStore(encoder=encoder, **store_kwargs)
        elif store_kwargs or encoder is not None:
            raise ValueError("store= was given: pass no encoder or store arguments with it")
        self.store = store
        self.mode: SearchMode | None = mode
        self.candidates = candidates
        self.fusion = fusion
        self.nprobe = nprobe
        self.fuse = None if fuse is None else list(fuse)
        self.weights = None if weights is None else list(weights)
        self._embeddings: VLLMEmbeddings | None = embedding

    # -- construction and lifetime -----------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """A new store (see ``__init__`` for ``kwargs``) holding ``texts``."""
        _check_embedding(embedding)
        vs = cls(embedding=embedding, **kwargs)  # type: ignore[arg-type]
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """Async :meth:`from_texts`."""
        _check_embedding(embedding)
        vs = cls(embedding=embedding, **kwargs)  # type: ignore[arg-type]
        await vs.aadd_texts(texts, metadatas, ids=ids)
        return vs

    @property
    def embeddings(self) -> VLLMEmbeddings:
        """Dense embeddings from the store's encoder (same engine)."""
        if self._embeddings is None:
            self._embeddings = VLLMEmbeddings(encoder=self.store.encoder)
        return self._embeddings

    def close(self) -> None:
        """Close the core store if this object created it, and release the engine reference
        of an Encoder created here (idempotent)."""
        if self._owns_store:
            self.store.close()
        if self._owned_encoder is not None:
            self._owned_encoder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Encode and add (or replace, for existing ids) texts; returns their ids."""
        items, metas, keys = _prepare(texts, metadatas, ids)
        if not items:
            return []
        written = ids_for_write(self.store, keys)
        return [str(i) for i in self.store.add_texts(items, metadatas=metas, ids=written)]

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts`; encoding does not block the event loop."""
        items, metas, keys = _prepare(texts, metadatas, ids)
        if not items:
            return []
        written = await asyncio.to_thread(ids_for_write, self.store, keys)
        return [str(i) for i in await self.store.aadd_texts(items, metadatas=metas, ids=written)]

    def add_images(
        self,
        uris: list[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed images by path or ``data:`` URI (as LangChain's multimodal vector stores do)
        and add them: dense and patch vectors from one forward pass; the Document found later
        has ``metadata["image"]`` (the URI) and an empty ``page_content``. Needs a
        vision-language encoder (e.g. ``profile="jina-v4"``)."""
        items, metas, keys = _prepare(uris, metadatas, ids)
        if not items:
            return []
        images = [u if u.startswith("data:") else Path(u) for u in items]
        written = ids_for_write(self.store, keys)
        added = self.store.add_images(images, metadatas=metas, ids=written, keep_pixels=True)
        return [str(i) for i in added]

    async def aadd_images(
        self,
        uris: list[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_images` (in a worker thread)."""
        return await asyncio.to_thread(self.add_images, uris, metadatas, ids=ids)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Add Documents (their ``id`` is kept when set); the Documents are not modified."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return self.add_texts(
            [d.page_content for d in documents], [d.metadata for d in documents], ids=ids
        )

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Async :meth:`add_documents`."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return await self.aadd_texts(
            [d.page_content for d in documents], [d.metadata for d in documents], ids=ids
        )

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ids (ids not stored are ignored) and/or by ``filter={...}``.

        An id that names both a ``str`` and an ``int`` document raises ``ValueError``
        before anything is deleted.
        """
        filter_ = kwargs.pop("filter", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if ids is None and filter_ is None:
            raise ValueError("delete() needs ids or filter=")
        if ids is not None:
            found = [i for i in resolve_ids(self.store, ids) if i is not None]
            if found:
                self.store.delete(found)
        if filter_ is not None:
            self.store.delete(filter=filter_)
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Async :meth:`delete` (in a worker thread)."""
        return await asyncio.to_thread(self.delete, ids, **kwargs)

    # -- reading ---------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The Documents stored under ``ids``, in that order; ids not stored are skipped."""
        if not ids:
            return []
        return [hit_to_document(h, None) for h in lookup(self.store, ids) if h is not None]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Async :meth:`get_by_ids` (in a worker thread)."""
        return await asyncio.to_thread(self.get_by_ids, ids)

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The store's search options from ``kwargs`` over this object's defaults."""
        unknown = set(kwargs) - set(SEARCH_OPTIONS)
        if unknown:
            raise TypeError(
                f"unexpected search arguments {sorted(unknown)}; allowed: {list(SEARCH_OPTIONS)}"
            )
        defaults = {name: getattr(self, name) for name in SEARCH_OPTIONS if name != "filter"}
        options = {**defaults, **kwargs}
        return {key: value for key, value in options.items() if value is not None}

    def _plan(self, k: int, options: dict[str, Any]) -> QueryPlan:
        """The plan the store runs for a text query with these options (for its scale)."""
        settings = {key: options.get(key) for key in ("mode", "fusion", "nprobe", "fuse")}
        lexical = None if self.store.bm25 is not None else "this store has no BM25"
        return QueryPlan.create(
            k=k,
            candidates=options.get("candidates", 200),
            weights=options.get("weights"),
            lexical=lexical,
            **settings,
        )

    def _hits(self, query: str, k: int, kwargs: dict[str, Any]) -> list[SearchHit]:
        return list(self.store.search(query, k, **self._options(kwargs)))

    async def _ahits(self, query: str, k: int, kwargs: dict[str, Any]) -> list[SearchHit]:
        return list(await self.store.asearch(query, k, **self._options(kwargs)))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` best Documents (options: ``mode``, ``filter``, ``candidates``, ...)."""
        return [hit_to_document(h, None) for h in self._hits(query, k, kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """``(Document, score)`` pairs, best first; raw scores of the mode (higher is better)."""
        return [(hit_to_document(h, None), float(h.score)) for h in self._hits(query, k, kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """Async :meth:`similarity_search`."""
        return [hit_to_document(h, None) for h in await self._ahits(query, k, kwargs)]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_with_score`."""
        hits = await self._ahits(query, k, kwargs)
        return [(hit_to_document(h, None), float(h.score)) for h in hits]

    # -- by vector ---------------------------------------------------------------------------

    def _dense_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = self._options(kwargs)
        if options.get("mode", "dense") != "dense" and "mode" in kwargs:
            raise ValueError("a search by vector is a dense search: mode must be 'dense'")
        for name in ("fusion", "fuse", "weights", "nprobe"):  # options of other modes
            options.pop(name, None)
        options["mode"] = "dense"
        return options

    def _by_vector(self, embedding: Sequence[float], k: int, kwargs: dict[str, Any]) -> list[Any]:
        return self.store.search_encoded(embedding, None, k, **self._dense_options(kwargs))

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` Documents whose dense vectors are nearest to ``embedding`` (cosine)."""
        return [hit_to_document(h, None) for h in self._by_vector(embedding, k, kwargs)]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`similarity_search_by_vector`."""
        hits = await asyncio.to_thread(self._by_vector, embedding, k, kwargs)
        return [hit_to_document(h, None) for h in hits]

    # -- relevance scores ---------------------------------------------------------------------

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Score → relevance for this store's default search, when its scale needs nothing
        but the score (dense, fusion of several lists); see :func:`relevance_score`."""
        plan = self._plan(4, self._options({}))
        try:
            relevance_score(1.0, plan)
        except ValueError as exc:
            raise NotImplementedError(
                f"{exc}; similarity_search_with_relevance_scores knows the query"
            ) from None
        return lambda score: relevance_score(score, plan)

    def _encoded_search(
        self, query: str, k: int, options: dict[str, Any]
    ) -> tuple[list[SearchHit], FloatArray]:
        dense, tokens = self.store.encoder.encode_queries([query])
        hits = self.store.search_encoded(dense[0], tokens[0], k, text=query, **options)
        return list(hits), tokens[0]

    async def _aencoded_search(
        self, query: str, k: int, options: dict[str, Any]
    ) -> tuple[list[SearchHit], FloatArray]:
        dense, tokens = await self.store.encoder.aencode_queries([query])
        hits = await asyncio.to_thread(
            self.store.search_encoded, dense[0], tokens[0], k, text=query, **options
        )
        return list(hits), tokens[0]

    def _relevant(
        self, k: int, hits: list[SearchHit], tokens: FloatArray, options: dict[str, Any]
    ) -> list[tuple[Document, float]]:
        plan = self._plan(k, options)
        return [
            (hit_to_document(h, None), relevance_score(h.score, plan, query_tokens=len(tokens)))
            for h in hits
        ]

    def _relevance_options(self, k: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = self._options(kwargs)
        relevance_score(1.0, self._plan(k, options), query_tokens=1)  # a scale, or ValueError
        return options

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """``(Document, relevance in [0, 1])`` pairs, best first (see :func:`relevance_score`)."""
        options = self._relevance_options(k, kwargs)
        hits, tokens = self._encoded_search(query, k, options)
        return self._relevant(k, hits, tokens, options)

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        options = self._relevance_options(k, kwargs)
        hits, tokens = await self._aencoded_search(query, k, options)
        return self._relevant(k, hits, tokens, options)

    # -- maximal marginal relevance -------------------------------------------------------------

    def _mmr(
        self, query_vector: Any, hits: list[SearchHit], k: int, lambda_mult: float
    ) -> list[Document]:
        if not hits:
            return []
        reps = np.stack([_centroid(t) for t in self.store.get_tokens([h.id for h in hits])])
        query = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
        query = self.store.project_query(query)[0]  # the stored tokens' space
        picked = maximal_marginal_relevance(
            query,
            reps,  # type: ignore[arg-type]  # an [n, d] array works as the list of rows
            lambda_mult=lambda_mult,
            k=min(k, len(hits)),
        )
        return [hit_to_document(hits[i], None) for i in picked]

    def _mmr_options(self, k: int, fetch_k: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        _check_counts(k, fetch_k)
        return self._options(kwargs)

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` Documents picked by MMR among the ``fetch_k`` best of the search mode.

        The query and the candidates are compared through the normalised mean of their
        token vectors (the candidates' come from the store); ``lambda_mult`` 1 is pure
        relevance, 0 pure diversity.
        """
        options = self._mmr_options(k, fetch_k, kwargs)
        hits, tokens = self._encoded_search(query, max(k, fetch_k), options)
        return self._mmr(_centroid(tokens), hits, k, lambda_mult)

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`max_marginal_relevance_search`."""
        options = self._mmr_options(k, fetch_k, kwargs)
        hits, tokens = await self._aencoded_search(query, max(k, fetch_k), options)
        return await asyncio.to_thread(self._mmr, _centroid(tokens), hits, k, lambda_mult)

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR among the ``fetch_k`` dense neighbours of ``embedding`` (a dense query vector,
        compared with the normalised mean of each candidate's stored token vectors)."""
        _check_counts(k, fetch_k)
        hits = self._by_vector(embedding, max(k, fetch_k), kwargs)
        return self._mmr(embedding, hits, k, lambda_mult)

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`max_marginal_relevance_search_by_vector`."""
        return await asyncio.to_thread(
            self.max_marginal_relevance_search_by_vector,
            embedding,
            k,
            fetch_k,
            lambda_mult,
            **kwargs,
        )

    # -- retrievers --------------------------------------------------------------------------

    def as_multivector_retriever(self, **kwargs: Any) -> VLLMMultiVectorRetriever:
        """A :class:`VLLMMultiVectorRetriever` over this store (scores in the metadata)."""
        for name in SEARCH_OPTIONS:
            if name != "filter" and getattr(self, name) is not None:
                kwargs.setdefault(name, getattr(self, name))
        return VLLMMultiVectorRetriever(store=self.store, **kwargs)

    def __len__(self) -> int:
        return len(self.store)

    def __bool__(self) -> bool:  # an empty store is still a store (``vs or default`` idioms)
        return True
