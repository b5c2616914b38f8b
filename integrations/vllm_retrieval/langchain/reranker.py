"""``VLLMMaxSimReranker``: MaxSim late-interaction reranking as a LangChain compressor."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from typing_extensions import Self

from ..encoding import Encoder
from ..scoring import MaxSimReranker
from ..store import MultiVectorStore, stored_tokens

__all__ = ["VLLMMaxSimReranker"]


def _scored_copies(
    documents: Sequence[Document], ranking: Sequence[Any], score_key: str
) -> list[Document]:
    """New Documents (new metadata dicts) in ranking order, each carrying its score."""
    out: list[Document] = []
    for result in ranking:
        doc = documents[int(result.index)]
        metadata = {**doc.metadata, score_key: float(result.score)}
        out.append(doc.model_copy(update={"metadata": metadata}))
    return out


class VLLMMaxSimReranker(BaseDocumentCompressor):
    """Rerank any retriever's Documents by ColBERT-style MaxSim on the shared vLLM engine.

    ``compress_documents`` returns the best ``top_n`` documents, best first, as **copies**
    with the MaxSim score in ``metadata["relevance_score"]``; the input Documents are never
    modified. Use it after any retriever, e.g. in an LCEL chain::

        docs = retriever.invoke(question)
        top = VLLMMaxSimReranker(top_n=3).compress_documents(docs, question)

    or as the ``base_compressor`` of LangChain's ``ContextualCompressionRetriever``.

    With ``store=`` (a core :class:`~vllm_retrieval.store.MultiVectorStore` or a
    ``VLLMMultiVectorStore``), documents that come from that store — their ``Document.id``
    (or ``metadata[id_key]``) names a stored document whose text is exactly their
    ``page_content`` — are scored on their **stored** token vectors; only the others are
    encoded (with the query, in one batched call). The ranking is the same, minus the
    forward passes. The store and the reranker must encode alike (same model and settings).

    :meth:`close` (or ``with``) releases the engine reference of an Encoder built here; an
    ``encoder=``, ``reranker=`` or ``store=`` passed in stays yours. The async path
    (``acompress_documents``) tokenises and scores in worker threads, never on the loop.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    reranker: MaxSimReranker | None = Field(
        default=None, description="A core MaxSimReranker; built from `encoder` when not given."
    )
    encoder: Encoder | None = Field(
        default=None,
        description="The shared core Encoder (default: the packaged model) when no reranker.",
    )
    top_n: int | None = Field(
        default=3, gt=0, description="Documents to keep, best first; None keeps them all."
    )
    score_key: str = Field(
        default="relevance_score", description="Metadata key that receives the MaxSim score."
    )
    store: MultiVectorStore | None = Field(
        default=None,
        description="A store whose token vectors are reused for the documents it holds.",
    )
    id_key: str | None = Field(
        default=None,
        description="Metadata key with the store id (None: Document.id) when store= is set.",
    )
    _owned_encoder: Encoder | None = PrivateAttr(default=None)

    @field_validator("store", mode="before")
    @classmethod
    def _unwrap_store(cls, value: Any) -> Any:
        # Accept a VLLMMultiVectorStore (the LangChain wrapper) for its core store.
        inner = getattr(value, "store", None)
        return inner if isinstance(inner, MultiVectorStore) else value

    @model_validator(mode="after")
    def _build_reranker(self) -> VLLMMaxSimReranker:
        if self.reranker is None:
            encoder = self.encoder or (self.store.encoder if self.store is not None else None)
            if encoder is None:
                encoder = self._owned_encoder = Encoder()
            self.reranker = MaxSimReranker(encoder=encoder)
        elif self.encoder is not None and self.encoder is not self.reranker.encoder:
            raise ValueError("pass either reranker= or encoder=, not both")
        if self.store is not None and not self.store.encoder.same_vectors(self.reranker.encoder):
            raise ValueError(
                "store= encodes with other settings than the reranker's encoder: its stored "
                "token vectors cannot be reused (pass the store's encoder, or no store)"
            )
        return self

    def close(self) -> None:
        """Release the engine reference of the Encoder built here (idempotent)."""
        if self._owned_encoder is not None:
            self._owned_encoder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def core_reranker(self) -> MaxSimReranker:
        """The core MaxSimReranker behind this compressor."""
        assert self.reranker is not None
        return self.reranker

    def _stored(self, documents: Sequence[Document]) -> list[npt.NDArray[np.float32] | None]:
        """Stored token vectors per document (``None``: not from the store, encode it)."""
        if self.store is None:
            return [None] * len(documents)
        if self.id_key is None:
            ids: list[Any] = [d.id for d in documents]
        else:
            ids = [d.metadata.get(self.id_key) for d in documents]
        ids = [i if isinstance(i, (str, int)) and not isinstance(i, bool) else None for i in ids]
        return stored_tokens(self.store, ids, [d.page_content for d in documents])

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; returns scored copies, best first."""
        if not documents:
            return []
        ranking = self.core_reranker.rerank(
            query,
            [d.page_content for d in documents],
            top_n=self.top_n,
            document_tokens=self._stored(documents),
        )
        return _scored_copies(documents, ranking, self.score_key)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`; does not block the event loop."""
        if not documents:
            return []
        known = await asyncio.to_thread(self._stored, documents)
        ranking = await self.core_reranker.arerank(
            query, [d.page_content for d in documents], top_n=self.top_n, document_tokens=known
        )
        return _scored_copies(documents, ranking, self.score_key)
