"""``VLLMMultiVectorRetriever``: a LangChain retriever over a core ``MultiVectorStore``."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator
from typing_extensions import Self

from ..store import Fusion, Mode, MultiVectorStore, SearchHit, Signal

__all__ = ["SEARCH_OPTIONS", "SearchMode", "VLLMMultiVectorRetriever", "hit_to_document"]

#: The store's search modes (defined once, in :mod:`vllm_retrieval.store.plan`).
SearchMode = Mode

#: The store's search options besides ``k``; ``None`` (or absent) means the store's default.
SEARCH_OPTIONS = ("mode", "filter", "candidates", "fusion", "nprobe", "fuse", "weights")

# Search options that ``invoke(query, **kwargs)`` may override per call.
_SEARCH_KEYS = frozenset({"k", *SEARCH_OPTIONS})
# Keys LangChain itself may leave in the invoke kwargs; they are not search options.
_IGNORED_KEYS = frozenset({"verbose"})


def hit_to_document(hit: SearchHit, score_key: str | None = "relevance_score") -> Document:
    """A LangChain Document for a store hit; the score goes to ``metadata[score_key]``."""
    metadata = dict(hit.metadata or {})
    if score_key is not None:
        metadata[score_key] = float(hit.score)
    return Document(id=str(hit.id), page_content=hit.text, metadata=metadata)


class VLLMMultiVectorRetriever(BaseRetriever):
    """Retrieve Documents from a :class:`~vllm_retrieval.store.MultiVectorStore`.

    Every search option of the store is a field, named as in
    :meth:`~vllm_retrieval.store.MultiVectorStore.search`, and ``None`` leaves the store's
    default: ``mode`` (``"fusion"``: DBSF of the MaxSim, BM25 and dense lists; ``"dense"``,
    ``"bm25"``, ``"maxsim"`` (exhaustive), ``"hybrid"`` (a candidate pool reranked by
    MaxSim)), ``candidates`` (200), ``fusion`` (``"weighted"``, ``"rrf"``, ``"dbsf"``),
    ``fuse`` and ``weights`` (the fused lists and their weights), ``nprobe`` (token-index
    centroids probed per query token) and ``filter``, a Mongo-like metadata filter
    (``{"year": {"$gte": 2010}}``). ``k`` is LangChain's 4. Every option can be overridden
    per call: ``retriever.invoke(query, k=3, filter={...})``.

    Documents carry the store id as ``Document.id``, their metadata, and the score in
    ``metadata["relevance_score"]``. The async path encodes the query and searches in
    worker threads, never on the event loop.

    The store (and its encoder) is the caller's: :meth:`close` (or ``with``) leaves both
    open, so a retriever in a ``with`` block never stops what other components share.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    store: MultiVectorStore = Field(description="The core multi-vector store to search.")
    k: int = Field(default=4, gt=0, description="Number of Documents to return.")
    mode: SearchMode | None = Field(
        default=None, description="Search mode of the store (None: the store's default)."
    )
    filter: dict[str, Any] | None = Field(default=None, description="Metadata filter.")
    candidates: int | None = Field(
        default=None, gt=0, description="Prefetch depth per list (store default when None)."
    )
    fusion: Fusion | None = Field(
        default=None, description="Rank fusion of mode='fusion' (store default when None)."
    )
    nprobe: int | None = Field(
        default=None, gt=0, description="Token-index centroids per query token (hybrid)."
    )
    fuse: list[Signal] | None = Field(
        default=None, description="Lists fused by mode='fusion' (of dense, bm25, maxsim)."
    )
    weights: list[float] | None = Field(
        default=None, description="One weight per fused list (fusion 'weighted' or 'rrf')."
    )

    @field_validator("store", mode="before")
    @classmethod
    def _unwrap_store(cls, value: Any) -> Any:
        # Accept a VLLMMultiVectorStore (the LangChain wrapper) for its core store.
        inner = getattr(value, "store", None)
        return inner if isinstance(inner, MultiVectorStore) else value

    def close(self) -> None:
        """Nothing of its own to release: the store passed in stays open (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _search_kwargs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - _SEARCH_KEYS - _IGNORED_KEYS
        if unknown:
            raise TypeError(
                f"unexpected retriever arguments {sorted(unknown)}; allowed: {sorted(_SEARCH_KEYS)}"
            )
        options: dict[str, Any] = {"k": self.k}
        options.update({name: getattr(self, name) for name in SEARCH_OPTIONS})
        options.update({key: overrides[key] for key in _SEARCH_KEYS & set(overrides)})
        options = {key: value for key, value in options.items() if value is not None}
        k = options.get("k")
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive int, got {k!r}")
        return options

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = self.store.search(query, **self._search_kwargs(kwargs))
        return [hit_to_document(h) for h in hits]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        **kwargs: Any,
    ) -> list[Document]:
        hits = await self.store.asearch(query, **self._search_kwargs(kwargs))
        return [hit_to_document(h) for h in hits]
