"""``VLLMMultiVectorStore``: a LangChain ``VectorStore`` over a core ``MultiVectorStore``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from typing_extensions import Self

from ..encoding import Encoder
from ..store import MultiVectorStore, SearchHit
from .embeddings import VLLMEmbeddings
from .retrievers import SearchMode, VLLMMultiVectorRetriever, hit_to_document

__all__ = ["VLLMMultiVectorStore"]


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


class VLLMMultiVectorStore(VectorStore):
    """A LangChain vector store backed by a core multi-vector (dense + token vectors) store.

    Each text is encoded once by the shared vLLM engine into a dense vector and its token
    vectors; searches default to a dense prefetch reranked by MaxSim (``mode="hybrid"``).
    Pass an existing :class:`~vllm_retrieval.store.MultiVectorStore` (``store=``), or
    let one be created from ``encoder=`` / ``embedding=`` and the store's own arguments
    (``path=`` for an embedded Qdrant Edge store on disk, ``url=`` for a Qdrant server,
    ``location=":memory:"`` for qdrant-client's local mode, the default when none is given).

    ``similarity_search`` returns Documents with the stored metadata unchanged;
    ``similarity_search_with_score`` and :meth:`as_multivector_retriever` expose the score.
    """

    def __init__(
        self,
        store: MultiVectorStore | None = None,
        *,
        encoder: Encoder | None = None,
        embedding: VLLMEmbeddings | None = None,
        mode: SearchMode = "hybrid",
        candidates: int | None = None,
        **store_kwargs: Any,
    ) -> None:
        if embedding is not None:
            if not isinstance(embedding, VLLMEmbeddings):
                raise TypeError(
                    "VLLMMultiVectorStore needs token vectors from the shared vLLM engine: "
                    f"pass a VLLMEmbeddings (or encoder=), not {type(embedding).__name__}"
                )
            if encoder is not None and encoder is not embedding.core_encoder:
                raise ValueError("pass either encoder= or embedding=, not both")
            encoder = embedding.core_encoder
        if store is None:
            targets = ("path", "url", "location", "client_path")
            if all(store_kwargs.get(t) is None for t in targets):
                store_kwargs["location"] = ":memory:"
            store = MultiVectorStore(encoder=encoder or Encoder(), **store_kwargs)
        elif store_kwargs or encoder is not None:
            raise ValueError("store= was given: pass no encoder or store arguments with it")
        self.store = store
        self.mode: SearchMode = mode
        self.candidates = candidates
        self._embeddings: VLLMEmbeddings | None = embedding

    # -- construction ----------------------------------------------------------------------

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
        if embedding is not None and not isinstance(embedding, VLLMEmbeddings):
            raise TypeError(
                "VLLMMultiVectorStore needs token vectors from the shared vLLM engine: "
                f"pass a VLLMEmbeddings (or encoder=), not {type(embedding).__name__}"
            )
        vs = cls(embedding=embedding, **kwargs)
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
        if embedding is not None and not isinstance(embedding, VLLMEmbeddings):
            raise TypeError(
                "VLLMMultiVectorStore needs token vectors from the shared vLLM engine: "
                f"pass a VLLMEmbeddings (or encoder=), not {type(embedding).__name__}"
            )
        vs = cls(embedding=embedding, **kwargs)
        await vs.aadd_texts(texts, metadatas, ids=ids)
        return vs

    @property
    def embeddings(self) -> VLLMEmbeddings:
        """Dense embeddings from the store's encoder (same engine)."""
        if self._embeddings is None:
            self._embeddings = VLLMEmbeddings(encoder=self.store.encoder)
        return self._embeddings

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
        return [str(i) for i in self.store.add_texts(items, metadatas=metas, ids=keys)]

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
        return [str(i) for i in await self.store.aadd_texts(items, metadatas=metas, ids=keys)]

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
        """Delete by ids (missing ids are ignored) or by ``filter={...}``."""
        filter_ = kwargs.pop("filter", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if ids is None and filter_ is None:
            raise ValueError("delete() needs ids or filter=")
        if ids is not None:
            self.store.delete([str(i) for i in ids])
        if filter_ is not None:
            self.store.delete(filter=filter_)
        return True

    # -- reading ---------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The Documents stored under ``ids``; missing ids are skipped."""
        if not ids:
            return []
        return [hit_to_document(h, None) for h in self.store.get([str(i) for i in ids])]

    def _options(self, k: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "k": k,
            "mode": kwargs.pop("mode", self.mode),
            "filter": kwargs.pop("filter", None),
        }
        candidates = kwargs.pop("candidates", self.candidates)
        if candidates is not None:
            options["candidates"] = candidates
        if kwargs:
            raise TypeError(f"unexpected search arguments {sorted(kwargs)}")
        return options

    def _hits(self, query: str, k: int, kwargs: dict[str, Any]) -> list[SearchHit]:
        return list(self.store.search(query, **self._options(k, kwargs)))

    async def _ahits(self, query: str, k: int, kwargs: dict[str, Any]) -> list[SearchHit]:
        return list(await self.store.asearch(query, **self._options(k, kwargs)))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` best Documents (options: ``mode``, ``filter``, ``candidates``)."""
        return [hit_to_document(h, None) for h in self._hits(query, k, kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """``(Document, score)`` pairs, best first; higher scores are better."""
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

    def as_multivector_retriever(self, **kwargs: Any) -> VLLMMultiVectorRetriever:
        """A :class:`VLLMMultiVectorRetriever` over this store (scores in the metadata)."""
        kwargs.setdefault("mode", self.mode)
        if self.candidates is not None:
            kwargs.setdefault("candidates", self.candidates)
        return VLLMMultiVectorRetriever(store=self.store, **kwargs)

    def __len__(self) -> int:
        return len(self.store)
