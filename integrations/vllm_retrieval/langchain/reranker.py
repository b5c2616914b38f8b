"""``VLLMMaxSimReranker``: MaxSim late-interaction reranking as a LangChain compressor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, model_validator

from ..encoding import Encoder
from ..scoring import MaxSimReranker

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

    @model_validator(mode="after")
    def _build_reranker(self) -> VLLMMaxSimReranker:
        if self.reranker is None:
            self.reranker = MaxSimReranker(encoder=self.encoder or Encoder())
        elif self.encoder is not None and self.encoder is not self.reranker.encoder:
            raise ValueError("pass either reranker= or encoder=, not both")
        return self

    @property
    def core_reranker(self) -> MaxSimReranker:
        """The core MaxSimReranker behind this compressor."""
        assert self.reranker is not None
        return self.reranker

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
            query, [d.page_content for d in documents], top_n=self.top_n
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
        ranking = await self.core_reranker.arerank(
            query, [d.page_content for d in documents], top_n=self.top_n
        )
        return _scored_copies(documents, ranking, self.score_key)
