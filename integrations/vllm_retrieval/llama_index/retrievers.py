"""``VLLMMultiVectorRetriever`` and helpers that index LlamaIndex nodes in a MultiVectorStore."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.schema import (
    BaseNode,
    IndexNode,
    MetadataMode,
    NodeWithScore,
    QueryBundle,
)
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from typing_extensions import Self

from ..store import FUSIONS, MODES, Fusion, Mode, Signal
from .filters import to_store_filter
from .nodes import hit_to_node

if TYPE_CHECKING:
    from ..encoding import Encoder
    from ..store import MultiVectorStore, SearchHit

__all__ = [
    "SearchMode",
    "VLLMMultiVectorRetriever",
    "aindex_nodes",
    "build_store_from_documents",
    "index_nodes",
    "json_safe_metadata",
]

logger = logging.getLogger(__name__)

#: The store's search modes (defined once, in :mod:`vllm_retrieval.store.plan`).
SearchMode = Mode


# -- nodes -> store ------------------------------------------------------------------------


def _json_safe(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_json_safe(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def json_safe_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``metadata`` with only the JSON-safe entries (others are left out).

    JSON-safe: str, int, bool, finite float, None, and lists/dicts of those (dict keys str).
    """
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(key, str) and _json_safe(value):
            out[key] = _plain(value)
        else:
            logger.debug("metadata key %r left out: %r is not JSON-safe", key, type(value))
    return out


def _texts_metadatas_ids(
    nodes: Iterable[BaseNode],
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    texts: list[str] = []
    metadatas: list[dict[str, Any]] = []
    ids: list[str] = []
    for node in nodes:
        if not isinstance(node, BaseNode):
            raise TypeError(f"expected LlamaIndex Documents or Nodes, got {type(node).__name__}")
        text = node.get_content(metadata_mode=MetadataMode.NONE)
        if not text:
            raise ValueError(f"node {node.node_id!r} has no text to index")
        texts.append(text)
        metadatas.append(json_safe_metadata(dict(node.metadata)))
        ids.append(node.node_id)
    if len(set(ids)) != len(ids):
        raise ValueError("the nodes' ids are not unique")
    return texts, metadatas, ids


def index_nodes(store: MultiVectorStore, nodes: Iterable[BaseNode]) -> list[str]:
    """Add LlamaIndex Documents/Nodes to ``store``; ids are the nodes' ``node_id``.

    The text indexed is the node's content without metadata; the JSON-safe metadata is
    stored alongside (and is what retriever filters see). Returns the ids added.
    """
    texts, metadatas, ids = _texts_metadatas_ids(nodes)
    if not texts:
        return []
    return [str(i) for i in store.add_texts(texts, metadatas=metadatas, ids=ids)]


async def aindex_nodes(store: MultiVectorStore, nodes: Iterable[BaseNode]) -> list[str]:
    """Async :func:`index_nodes`."""
    texts, metadatas, ids = _texts_metadatas_ids(nodes)
    if not texts:
        return []
    return [str(i) for i in await store.aadd_texts(texts, metadatas=metadatas, ids=ids)]


def build_store_from_documents(
    docs_or_nodes: Iterable[BaseNode],
    store: MultiVectorStore | None = None,
    *,
    encoder: Encoder | None = None,
    path: str | None = None,
    **store_kwargs: Any,
) -> MultiVectorStore:
    """Index LlamaIndex Documents/Nodes in a multi-vector store and return the store.

    With ``store=`` the nodes are added to it; otherwise a new ``MultiVectorStore`` is made
    at ``path`` (in memory when ``path`` is None) over ``encoder`` (default: a new
    :class:`~vllm_retrieval.encoding.Encoder`, which joins the process's shared engine).
    """
    if store is None:
        from ..encoding import Encoder
        from ..store import MultiVectorStore

        enc = encoder if encoder is not None else Encoder()
        if path is not None:
            store = MultiVectorStore(path=path, encoder=enc, **store_kwargs)
        else:
            store_kwargs.setdefault("location", ":memory:")
            store = MultiVectorStore(encoder=enc, **store_kwargs)
    elif encoder is not None or path is not None or store_kwargs:
        raise ValueError("pass either store= or the settings of a new store, not both")
    index_nodes(store, docs_or_nodes)
    return store


# -- the retriever ---------------------------------------------------------------------------


class VLLMMultiVectorRetriever(BaseRetriever):
    """Retrieve LlamaIndex nodes from a :class:`~vllm_retrieval.store.MultiVectorStore`.

    Every search option of the store is an argument, named as in
    :meth:`~vllm_retrieval.store.MultiVectorStore.search`, and ``None`` leaves the store's
    default: ``mode`` (``"fusion"``: DBSF of the MaxSim, BM25 and dense lists; ``"dense"``,
    ``"bm25"``, ``"maxsim"`` (exhaustive), ``"hybrid"`` (a candidate pool reranked by
    MaxSim)), ``candidates`` (200), ``fusion`` (``"weighted"``, ``"rrf"``, ``"dbsf"``),
    ``fuse`` and ``weights`` (the fused lists and their weights), ``nprobe`` (token-index
    centroids probed per query token). ``similarity_top_k`` is LlamaIndex's default, 2. ``filters``
    are LlamaIndex ``MetadataFilters`` (see :func:`to_store_filter`; nested) or a store
    filter dict. Each result is a ``NodeWithScore`` with the stored node: whole (type,
    metadata, relationships) when :class:`VLLMMultiVectorStore` wrote it, else a
    ``TextNode`` with the stored id, text and metadata.

    The store passed in (and its encoder) is the caller's: :meth:`close` (or ``with``)
    leaves it open. A retriever made by :meth:`from_documents` without ``store=`` owns the
    store it built (and the Encoder, without ``encoder=``): ``close`` closes them. The async
    path (``aretrieve``) encodes the query and searches in worker threads, never on the loop.

    Example:
        .. code-block:: python

            store = build_store_from_documents(documents, encoder=encoder)
            retriever = VLLMMultiVectorRetriever(store, similarity_top_k=5)
            nodes = retriever.retrieve("What do statins do?")
    """

    def __init__(
        self,
        store: MultiVectorStore,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        mode: SearchMode | None = None,
        candidates: int | None = None,
        filters: MetadataFilters | MetadataFilter | dict[str, Any] | None = None,
        fusion: Fusion | None = None,
        nprobe: int | None = None,
        fuse: Sequence[Signal] | None = None,
        weights: Sequence[float] | None = None,
        callback_manager: CallbackManager | None = None,
        object_map: dict[str, Any] | None = None,
        objects: list[IndexNode] | None = None,
        verbose: bool = False,
    ) -> None:
        if isinstance(similarity_top_k, bool) or not isinstance(similarity_top_k, int):
            raise TypeError("similarity_top_k must be an int")
        if similarity_top_k <= 0:
            raise ValueError(f"similarity_top_k must be > 0, got {similarity_top_k}")
        for name, value in (("candidates", candidates), ("nprobe", nprobe)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} or None; got {mode!r}")
        if fusion is not None and fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)} or None; got {fusion!r}")
        self._store = store
        self._owned_store: MultiVectorStore | None = None
        self._owned_encoder: Encoder | None = None
        self.similarity_top_k = similarity_top_k
        self.mode: SearchMode | None = mode
        self.candidates = candidates
        self.fusion: Fusion | None = fusion
        self.nprobe = nprobe
        self.fuse = None if fuse is None else list(fuse)
        self.weights = None if weights is None else list(weights)
        to_store_filter(filters)  # fail early on an unsupported operator
        self.filters = filters
        super().__init__(
            callback_manager=callback_manager,
            object_map=object_map,
            objects=objects,
            verbose=verbose,
        )

    @classmethod
    def from_documents(
        cls,
        docs_or_nodes: Iterable[BaseNode],
        *,
        store: MultiVectorStore | None = None,
        encoder: Encoder | None = None,
        path: str | None = None,
        store_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> VLLMMultiVectorRetriever:
        """Index Documents/Nodes (:func:`build_store_from_documents`) and retrieve over them.

        Without ``store=`` the retriever owns the store it builds (and, without
        ``encoder=``, its Encoder): :meth:`close` closes them."""
        owned_encoder: Encoder | None = None
        if store is None and encoder is None:
            from ..encoding import Encoder

            encoder = owned_encoder = Encoder()
        try:
            built = build_store_from_documents(
                docs_or_nodes, store, encoder=encoder, path=path, **(store_kwargs or {})
            )
        except BaseException:
            if owned_encoder is not None:
                owned_encoder.close()
            raise
        retriever = cls(built, **kwargs)
        if store is None:
            retriever._owned_store = built
        retriever._owned_encoder = owned_encoder
        return retriever

    def close(self) -> None:
        """Close what :meth:`from_documents` built here (idempotent); a store passed in stays
        open."""
        store, self._owned_store = self._owned_store, None
        encoder, self._owned_encoder = self._owned_encoder, None
        if store is not None:
            store.close()
        if encoder is not None:
            encoder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> MultiVectorStore:
        """The multi-vector store searched."""
        return self._store

    def _search_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "k": self.similarity_top_k,
            "mode": self.mode,
            "candidates": self.candidates,
            "fusion": self.fusion,
            "nprobe": self.nprobe,
            "fuse": self.fuse,
            "weights": self.weights,
            "filter": to_store_filter(self.filters),
        }
        return {key: value for key, value in kwargs.items() if value is not None}

    @staticmethod
    def _to_nodes(hits: Sequence[SearchHit]) -> list[NodeWithScore]:
        return [NodeWithScore(node=hit_to_node(hit), score=float(hit.score)) for hit in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._store.search(query_bundle.query_str, **self._search_kwargs())
        return self._to_nodes(hits)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self._store.asearch(query_bundle.query_str, **self._search_kwargs())
        return self._to_nodes(hits)
