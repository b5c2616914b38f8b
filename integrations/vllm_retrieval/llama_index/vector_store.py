"""``VLLMMultiVectorStore``: a LlamaIndex vector store over a core ``MultiVectorStore``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from typing_extensions import Self

from ..encoding import EncodedText, Encoder
from ..errors import StoreError
from ..store import (
    DEFAULT_MODE,
    FUSIONS,
    MANIFEST_NAME,
    MODES,
    MultiVectorStore,
    SearchHit,
    ids_for_write,
    lookup,
)
from .filters import to_store_filter
from .handoff import HANDOFF, Subscription
from .nodes import NODE_ID_KEY, hit_to_node, image_record, image_source, node_record

__all__ = ["HYBRID_FUSE", "LEXICAL_MODE", "STORE_OPTIONS", "VLLMMultiVectorStore"]

#: The store's keyword search options (``search(query, k, *, ...)``); ``vector_store_kwargs``
#: may set any of them per query.
STORE_OPTIONS: tuple[str, ...] = tuple(
    name
    for name, p in inspect.signature(MultiVectorStore.search).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)
#: The store's lexical mode; SPARSE / TEXT_SEARCH / HYBRID map to it once the store has it.
LEXICAL_MODE = "bm25"
#: HYBRID with ``alpha`` fuses these lists, weighted ``alpha`` (vector: MaxSim and dense,
#: split 5 : 2) against ``1 - alpha`` (BM25); the store's default weights are alpha = 0.7.
HYBRID_FUSE = ("maxsim", "bm25", "dense")
_HYBRID_SPLIT = (5 / 7, 2 / 7)
_MMR_KEYS = ("mmr_threshold", "mmr_prefetch_k")
# A filter every document matches (a field equals "" or does not): clear() deletes with it.
_EVERYTHING = {"$or": [{NODE_ID_KEY: {"$eq": ""}}, {NODE_ID_KEY: {"$ne": ""}}]}


def _and(*parts: dict[str, Any] | None) -> dict[str, Any] | None:
    kept = [p for p in parts if p]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else {"$and": kept}


def _centroid(tokens: Any) -> list[float]:
    """The normalised mean of a text's token vectors (its MMR representation)."""
    mean = np.asarray(tokens, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    out: list[float] = (mean / norm if norm > 0 else mean).tolist()
    return out


@dataclass
class _Request:
    """One query, translated: what to run on the core store."""

    k: int
    options: dict[str, Any]
    query_str: str | None
    embedding: list[float] | None = None  # set: a dense search with this vector
    mmr_threshold: float | None = None
    mmr_prefetch_k: int = 0  # > 0: maximal marginal relevance over this many candidates


class VLLMMultiVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over the multi-vector (dense + token vectors) store.

    Works wherever LlamaIndex takes a vector store: ``StorageContext.from_defaults(
    vector_store=...)`` with ``VectorStoreIndex``, ``VectorStoreIndex.from_vector_store``,
    ``IngestionPipeline(vector_store=...)`` and their query engines. It stores text
    (``stores_text=True``): nodes come back whole, with their type, metadata and
    relationships (see :mod:`~vllm_retrieval.llama_index.nodes`).

    **Vectors.** The store computes each node's dense and token vectors from its
    ``MetadataMode.EMBED`` content in one forward pass of its own encoder; a node's
    ``embedding`` is not used. With ``VLLMEmbedding`` as the index's ``embed_model`` (same
    model settings as the store), the token vectors computed while embedding are handed over
    (:mod:`~vllm_retrieval.llama_index.handoff`, bounded by ``token_cache_bytes``), so no
    node is encoded twice. Queries are encoded by the store (``is_embedding_query=False``):
    the query's dense and token vectors come from one forward pass.

    **Queries.** ``VectorStoreQueryMode.DEFAULT`` runs ``mode`` (None: the store's default,
    ``"fusion"`` of MaxSim, BM25 and dense); ``MMR`` picks ``similarity_top_k`` nodes among
    ``mmr_prefetch_k`` candidates of that mode (default ``max(20, 4 * top_k)``;
    ``mmr_threshold`` 0.5 is the relevance/diversity balance) with LlamaIndex's
    ``get_top_k_mmr_embeddings`` over the normalised mean of the stored token vectors;
    ``SPARSE`` / ``TEXT_SEARCH`` run the store's ``"bm25"`` mode, ``HYBRID`` its
    ``"fusion"`` (with ``alpha``: ``fuse=HYBRID_FUSE``, the vector lists weighted ``alpha``
    and BM25 ``1 - alpha``; ``hybrid_top_k`` results). ``filters`` (``MetadataFilters``,
    nested, see :func:`to_store_filter`), ``doc_ids`` and ``node_ids`` apply inside the
    store before scoring. Every store search option (``mode``, ``candidates``, ``fusion``,
    ``fuse``, ``weights``, ``nprobe``, ``filter``) can be set per query through the
    retriever's ``vector_store_kwargs``. Similarities are the store's scores (cosine, BM25,
    MaxSim sum, fused score).

    Pass ``store=`` (yours: :meth:`close` leaves it open) or the arguments of a new one
    (``path=`` for an embedded store on disk, reopened if it exists; ``url=``;
    ``location=":memory:"`` by default) with ``encoder=`` or ``embed_model=``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    stores_text: bool = True
    is_embedding_query: bool = False
    flat_metadata: bool = False

    mode: str | None = Field(default=None, description="Search mode (None: store default).")
    candidates: int | None = Field(default=None, gt=0, description="Prefetch depth per list.")
    fusion: str | None = Field(default=None, description="Fusion of mode='fusion'.")
    nprobe: int | None = Field(default=None, gt=0, description="Token-index centroids probed.")
    fuse: list[str] | None = Field(default=None, description="Lists fused by mode='fusion'.")
    weights: list[float] | None = Field(default=None, description="One weight per fused list.")
    token_cache_bytes: int = Field(
        default=1 << 30,
        ge=0,
        description="Bound of the token vectors kept from VLLMEmbedding for add (0: off).",
    )

    _store: MultiVectorStore = PrivateAttr()
    _owns_store: bool = PrivateAttr(default=False)
    _owned_encoder: Encoder | None = PrivateAttr(default=None)
    _subscription: Subscription | None = PrivateAttr(default=None)

    def __init__(
        self,
        store: MultiVectorStore | None = None,
        *,
        encoder: Encoder | None = None,
        embed_model: Any = None,
        mode: str | None = None,
        candidates: int | None = None,
        fusion: str | None = None,
        nprobe: int | None = None,
        fuse: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        token_cache_bytes: int = 1 << 30,
        **store_kwargs: Any,
    ) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} or None; got {mode!r}")
        if fusion is not None and fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)} or None; got {fusion!r}")
        if embed_model is not None:
            emb_encoder = getattr(embed_model, "encoder", None)
            if not isinstance(emb_encoder, Encoder):
                raise TypeError(
                    "embed_model must be a VLLMEmbedding (its encoder gives the token vectors), "
                    f"not {type(embed_model).__name__}"
                )
            if encoder is not None and encoder is not emb_encoder:
                raise ValueError("pass either encoder= or embed_model=, not both")
            encoder = emb_encoder
        fields: dict[str, Any] = {
            "mode": mode,
            "candidates": candidates,
            "fusion": fusion,
            "nprobe": nprobe,
            "fuse": None if fuse is None else list(fuse),
            "weights": None if weights is None else list(weights),
            "token_cache_bytes": token_cache_bytes,
        }
        super().__init__(**fields)
        owns = store is None
        owned: Encoder | None = None
        if store is None:
            targets = ("path", "url", "location", "client_path")
            if all(store_kwargs.get(t) is None for t in targets):
                store_kwargs["location"] = ":memory:"
            path = store_kwargs.get("path")
            if encoder is None and (path is None or not Path(path, MANIFEST_NAME).is_file()):
                encoder = owned = Encoder()  # a store on disk reopens with its settings
            store = MultiVectorStore(encoder=encoder, **store_kwargs)
        elif store_kwargs or encoder is not None:
            raise ValueError("store= was given: pass no encoder or store arguments with it")
        self._store = store
        self._owns_store = owns
        self._owned_encoder = owned
        if token_cache_bytes > 0:
            try:
                encoder = store.encoder
            except StoreError:  # a store of caller-supplied vectors: nothing to hand over
                encoder = None
            if encoder is not None:
                self._subscription = HANDOFF.subscribe(encoder, token_cache_bytes)

    @classmethod
    def class_name(cls) -> str:
        return "VLLMMultiVectorStore"

    @property
    def client(self) -> MultiVectorStore:
        """The core multi-vector store."""
        return self._store

    @property
    def store(self) -> MultiVectorStore:
        """The core multi-vector store (same as :attr:`client`)."""
        return self._store

    def close(self) -> None:
        """Stop taking token vectors from the embedding; close the store if created here."""
        if self._subscription is not None:
            HANDOFF.unsubscribe(self._subscription)
            self._subscription = None
        if self._owns_store:
            self._store.close()
        if self._owned_encoder is not None:
            self._owned_encoder.close()  # the engine reference of the Encoder made here

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def _records(self, nodes: Sequence[BaseNode]) -> tuple[list[str], list[dict[str, Any]]]:
        texts: list[str] = []
        metadatas: list[dict[str, Any]] = []
        for node in nodes:
            text, metadata = node_record(node)
            texts.append(text)
            metadatas.append(metadata)
        return texts, metadatas

    @staticmethod
    def _vectors(
        texts: list[str], encoded: dict[str, EncodedText]
    ) -> tuple[np.ndarray[Any, Any], list[Any]]:
        items = [encoded[t] for t in texts]
        return np.stack([e.dense for e in items]), [e.tokens for e in items]

    def _add_images(self, nodes: list[BaseNode]) -> list[BaseNode]:
        """Write the image nodes (``ImageNode``/``ImageDocument`` with an image) through the
        store's ``add_images`` (dense + patch vectors, their text as the caption); returns the
        other nodes."""
        sources = [image_source(n) for n in nodes]
        images = [(n, src) for n, src in zip(nodes, sources, strict=True) if src is not None]
        if not images:
            return nodes
        records = [image_record(n) for n, _ in images]
        self._store.add_images(
            [src for _, src in images],
            metadatas=[meta for _, meta in records],
            ids=ids_for_write(self._store, [n.node_id for n, _ in images]),
            captions=[caption for caption, _ in records],
        )
        return [n for n, src in zip(nodes, sources, strict=True) if src is None]

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Write nodes (replacing nodes with the same id); returns their ids.

        Token vectors handed over by ``VLLMEmbedding`` are used as they are; the other
        nodes are encoded (one forward pass each). The nodes are not modified.
        """
        nodes = list(nodes)
        if not nodes:
            return []
        all_ids = [n.node_id for n in nodes]
        nodes = self._add_images(nodes)
        if not nodes:
            return all_ids
        texts, metadatas = self._records(nodes)
        ids = ids_for_write(self._store, [n.node_id for n in nodes])
        encoder, size = self._store.encoder, self._store.batch_size
        for s in range(0, len(nodes), size):
            part = texts[s : s + size]
            encoded = HANDOFF.take(encoder, part)
            missing = [t for t in dict.fromkeys(part) if t not in encoded]
            if missing:
                encoded.update(zip(missing, encoder.encode(missing), strict=True))
            dense, tokens = self._vectors(part, encoded)
            self._store.add_encoded(part, dense, tokens, metadatas[s : s + size], ids[s : s + size])
        return all_ids

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Async :meth:`add`: encoding awaits the engine, writes run in a worker thread."""
        nodes = list(nodes)
        if not nodes:
            return []
        all_ids = [n.node_id for n in nodes]
        nodes = await asyncio.to_thread(self._add_images, nodes)
        if not nodes:
            return all_ids
        texts, metadatas = self._records(nodes)
        ids = await asyncio.to_thread(ids_for_write, self._store, [n.node_id for n in nodes])
        encoder, size = self._store.encoder, self._store.batch_size
        for s in range(0, len(nodes), size):
            part = texts[s : s + size]
            encoded = HANDOFF.take(encoder, part)
            missing = [t for t in dict.fromkeys(part) if t not in encoded]
            if missing:
                encoded.update(zip(missing, await encoder.aencode(missing), strict=True))
            dense, tokens = self._vectors(part, encoded)
            await asyncio.to_thread(
                self._store.add_encoded,
                part,
                dense,
                tokens,
                metadatas[s : s + size],
                ids[s : s + size],
            )
        return all_ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self._store.delete(filter={"ref_doc_id": {"$eq": ref_doc_id}})

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id)

    def _id_filter(self, node_ids: Sequence[str]) -> dict[str, Any]:
        """A filter on the given nodes, for combining with metadata filters."""
        hits = [h for h in lookup(self._store, node_ids) if h is not None]
        foreign = [h.id for h in hits if NODE_ID_KEY not in h.metadata]
        if foreign:
            raise ValueError(
                f"node_ids with filters works on nodes written by this vector store; "
                f"{foreign[:5]!r} were written otherwise: pass node_ids or filters alone"
            )
        return {NODE_ID_KEY: {"$in": [str(h.metadata[NODE_ID_KEY]) for h in hits] or [""]}}

    def _matching(
        self, node_ids: Sequence[str] | None, filters: MetadataFilters | None
    ) -> list[SearchHit]:
        """Every stored document matching ``filters`` (and among ``node_ids``)."""
        flt = to_store_filter(filters)
        if node_ids is not None:
            if flt is None:
                return [h for h in lookup(self._store, node_ids) if h is not None]
            flt = _and(flt, self._id_filter(node_ids))
        total = len(self._store)
        if total == 0:
            return []
        # An exhaustive MaxSim pass with a one-token query returns every match (k = all).
        probe = np.zeros((1, self._store.dim), dtype=np.float32)
        probe[0, 0] = 1.0
        return list(self._store.search_encoded(None, probe, total, mode="maxsim", filter=flt))

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes with these ids (in that order; missing ids skipped) and/or
        matching ``filters``; with neither, every node."""
        return [hit_to_node(h) for h in self._matching(node_ids, filters)]

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids and/or matching ``filters`` (both: the
        intersection); ids not stored are ignored."""
        if node_ids is None and filters is None:
            raise ValueError("delete_nodes() needs node_ids or filters (clear() deletes all)")
        flt = to_store_filter(filters)
        if node_ids is not None and flt is None:
            found = [h.id for h in lookup(self._store, node_ids) if h is not None]
            if found:
                self._store.delete(found)
        elif flt is not None:
            if node_ids is not None:
                flt = _and(flt, self._id_filter(node_ids))
            self._store.delete(filter=flt)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters)

    def clear(self) -> None:
        """Delete every document of the store."""
        self._store.delete(filter=_EVERYTHING)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    # -- querying --------------------------------------------------------------------------

    def _store_mode(self, query: VectorStoreQuery) -> dict[str, Any]:
        """The store options a LlamaIndex query mode stands for."""
        mode = VectorStoreQueryMode(query.mode)
        if mode in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            return {"mode": self.mode}
        lexical = (
            VectorStoreQueryMode.SPARSE,
            VectorStoreQueryMode.TEXT_SEARCH,
            VectorStoreQueryMode.HYBRID,
        )
        if mode in lexical:
            if LEXICAL_MODE not in MODES:
                raise ValueError(
                    f"VectorStoreQueryMode.{mode.name} needs the store's lexical mode "
                    f"({LEXICAL_MODE!r}), which this version of the store does not have "
                    f"(its modes: {', '.join(MODES)}); use DEFAULT or MMR"
                )
            if mode != VectorStoreQueryMode.HYBRID:
                return {"mode": LEXICAL_MODE}
            if query.alpha is None:
                return {"mode": "fusion"}
            alpha = float(query.alpha)
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha must be within [0, 1], got {alpha}")
            vector, dense = alpha * _HYBRID_SPLIT[0], alpha * _HYBRID_SPLIT[1]
            return {
                "mode": "fusion",
                "fusion": "weighted",
                "fuse": list(HYBRID_FUSE),
                "weights": [vector, 1.0 - alpha, dense],
            }
        raise ValueError(
            f"VectorStoreQueryMode.{mode.name} is not supported by the multi-vector store; "
            "supported: DEFAULT, MMR, SPARSE, TEXT_SEARCH and HYBRID"
        )

    def _request(self, query: VectorStoreQuery, kwargs: dict[str, Any]) -> _Request:
        unknown = set(kwargs) - set(STORE_OPTIONS) - set(_MMR_KEYS)
        if unknown:
            raise TypeError(
                f"unexpected query arguments {sorted(unknown)}; allowed: "
                f"{[*STORE_OPTIONS, *_MMR_KEYS]}"
            )
        k = query.similarity_top_k
        if query.mode == VectorStoreQueryMode.HYBRID and query.hybrid_top_k:
            k = query.hybrid_top_k
        defaults = {
            "candidates": self.candidates or query.sparse_top_k,
            "fusion": self.fusion,
            "nprobe": self.nprobe,
            "fuse": self.fuse,
            "weights": self.weights,
            **self._store_mode(query),
        }
        given = {o: kwargs[o] for o in STORE_OPTIONS if o in kwargs}
        if query.alpha is not None and {"fuse", "weights"} & set(given):
            raise ValueError("pass either alpha or fuse=/weights=, not both")
        options = {**defaults, **given}
        restrict = _and(
            {"ref_doc_id": {"$in": list(query.doc_ids)}} if query.doc_ids else None,
            {NODE_ID_KEY: {"$in": list(query.node_ids)}} if query.node_ids else None,
        )
        options["filter"] = _and(to_store_filter(query.filters), options.get("filter"), restrict)
        options = {key: value for key, value in options.items() if value is not None}
        request = _Request(k=k, options=options, query_str=query.query_str)
        mode = str(options.get("mode") or DEFAULT_MODE)
        if query.mode == VectorStoreQueryMode.MMR:
            request.mmr_threshold = kwargs.get("mmr_threshold", query.mmr_threshold)
            request.mmr_prefetch_k = int(kwargs.get("mmr_prefetch_k") or max(20, 4 * k))
        elif query.query_embedding is not None and (mode == "dense" or not query.query_str):
            if mode != "dense":
                raise ValueError(
                    f"mode {mode!r} needs query_str (the store encodes the query's token "
                    "vectors); only a dense search runs on query_embedding alone"
                )
            request.embedding = list(query.query_embedding)
            for name in ("fusion", "fuse", "weights", "nprobe"):  # options of other modes
                request.options.pop(name, None)
            request.options["mode"] = "dense"
        if request.embedding is None and not request.query_str:
            raise ValueError("the query needs query_str (or query_embedding for mode='dense')")
        return request

    def _mmr(self, request: _Request, hits: list[SearchHit], query_tokens: Any) -> list[SearchHit]:
        if not hits:
            return []
        reps = [_centroid(t) for t in self._store.get_tokens([h.id for h in hits])]
        _, picked = get_top_k_mmr_embeddings(
            _centroid(self._store.project_query(query_tokens)),
            reps,
            similarity_top_k=request.k,
            embedding_ids=list(range(len(hits))),
            mmr_threshold=request.mmr_threshold,
        )
        return [hits[i] for i in picked]

    @staticmethod
    def _result(hits: Sequence[SearchHit]) -> VectorStoreQueryResult:
        nodes = [hit_to_node(h) for h in hits]
        return VectorStoreQueryResult(
            nodes=nodes,
            similarities=[float(h.score) for h in hits],
            ids=[n.node_id for n in nodes],
        )

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Search the store (see the class doc for modes, filters and options)."""
        request = self._request(query, kwargs)
        if request.mmr_prefetch_k:
            assert request.query_str is not None
            dense, tokens = self._store.encoder.encode_queries([request.query_str])
            depth = max(request.mmr_prefetch_k, request.k)
            hits = self._store.search_encoded(
                dense[0], tokens[0], depth, text=request.query_str, **request.options
            )
            return self._result(self._mmr(request, list(hits), tokens[0]))
        if request.embedding is not None:
            hits = self._store.search_encoded(request.embedding, None, request.k, **request.options)
        else:
            assert request.query_str is not None
            hits = self._store.search(request.query_str, request.k, **request.options)
        return self._result(hits)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Async :meth:`query`: the query is encoded without blocking the event loop."""
        request = self._request(query, kwargs)
        if request.mmr_prefetch_k:
            assert request.query_str is not None
            dense, tokens = await self._store.encoder.aencode_queries([request.query_str])
            depth = max(request.mmr_prefetch_k, request.k)
            hits = await asyncio.to_thread(
                self._store.search_encoded,
                dense[0],
                tokens[0],
                depth,
                text=request.query_str,
                **request.options,
            )
            picked = await asyncio.to_thread(self._mmr, request, list(hits), tokens[0])
            return self._result(picked)
        if request.embedding is not None:
            hits = await asyncio.to_thread(
                self._store.search_encoded, request.embedding, None, request.k, **request.options
            )
        else:
            assert request.query_str is not None
            hits = await self._store.asearch(request.query_str, request.k, **request.options)
        return self._result(hits)
