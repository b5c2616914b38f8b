"""``VLLMMaxSimRerank``: a LlamaIndex node postprocessor that reranks by MaxSim."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from typing_extensions import Self

from ..store import MultiVectorStore, stored_tokens

if TYPE_CHECKING:
    from ..encoding import Encoder
    from ..scoring import MaxSimReranker, RerankResult

__all__ = ["VLLMMaxSimRerank"]

dispatcher = get_dispatcher(__name__)


def _core_store(store: Any) -> MultiVectorStore | None:
    """The core store of ``store=`` (a MultiVectorStore, or an adapter holding one)."""
    if store is None or isinstance(store, MultiVectorStore):
        return store
    inner = getattr(store, "client", None)
    if isinstance(inner, MultiVectorStore):
        return inner
    raise TypeError(f"store must be a MultiVectorStore or VLLMMultiVectorStore, not {store!r}")


class VLLMMaxSimRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes by ColBERT-style MaxSim late interaction on the shared engine.

    The scores and the order are exactly those of the core
    :class:`~vllm_retrieval.scoring.MaxSimReranker` over the nodes' content as LlamaIndex
    embeds it (``metadata_mode=MetadataMode.EMBED``, as LlamaIndex's rerankers do, and as
    the multi-vector store encodes nodes). ``normalize`` divides scores by the query length;
    ``cache_size`` keeps the token vectors of that many recently seen texts (an LRU keyed by
    content), so nodes reranked again are not encoded again. Pass ``reranker=`` to share a
    configured core reranker instead.

    With ``store=`` (a core :class:`~vllm_retrieval.store.MultiVectorStore` or a
    :class:`~vllm_retrieval.llama_index.VLLMMultiVectorStore`), nodes that come from that
    store — their ``node_id`` names a stored document whose stored text is exactly the text
    reranked — are scored on their **stored** token vectors; only the others are encoded.
    The ranking is the same, minus the forward passes. The store must encode like the
    reranker (same model and settings). The
    incoming nodes are never modified: the result holds new ``NodeWithScore`` objects around
    copies of the nodes. With ``keep_retrieval_score`` the copy's
    ``metadata["retrieval_score"]`` holds the score the node came in with.

    :meth:`close` (or ``with``) releases the engine reference of an Encoder built here; an
    ``encoder=``, ``reranker=`` or ``store=`` passed in stays yours. The async path
    tokenises and scores in worker threads, never on the event loop.

    Example:
        .. code-block:: python

            rerank = VLLMMaxSimRerank(encoder=encoder, top_n=3)
            engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
    """

    model: str = Field(default="", description="The reranking model (shown in events).")
    top_n: int | None = Field(
        default=5, gt=0, description="Nodes to return, best first; None returns all, reordered."
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description="Keep the incoming score in the copy's metadata['retrieval_score'].",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="Which metadata goes into the text that is reranked (EMBED: as embedded).",
    )

    _reranker: MaxSimReranker = PrivateAttr()
    _store: MultiVectorStore | None = PrivateAttr(default=None)
    _owned_encoder: Encoder | None = PrivateAttr(default=None)

    def __init__(
        self,
        top_n: int | None = 5,
        *,
        encoder: Encoder | None = None,
        reranker: MaxSimReranker | None = None,
        keep_retrieval_score: bool = False,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        normalize: bool = False,
        cache_size: int = 0,
        store: Any = None,
        model: str | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(top_n, bool):
            raise TypeError("top_n must be an int or None")
        if reranker is not None and (encoder is not None or normalize or cache_size):
            raise ValueError("pass either reranker= or encoder=/normalize=/cache_size=, not both")
        core_store = _core_store(store)
        owned: Encoder | None = None
        if reranker is None:
            from ..encoding import Encoder
            from ..scoring import MaxSimReranker

            if encoder is None:
                if core_store is not None:
                    encoder = core_store.encoder
                else:
                    encoder = owned = Encoder()
            reranker = MaxSimReranker(encoder=encoder, normalize=normalize, cache_size=cache_size)
        if core_store is not None and not core_store.encoder.same_vectors(reranker.encoder):
            raise ValueError(
                "store= encodes with other settings than the reranker's encoder: its stored "
                "token vectors cannot be reused (pass the store's encoder, or no store)"
            )
        if model is None:
            enc = getattr(reranker, "encoder", None)
            model = str(getattr(enc, "model", None) or getattr(enc, "model_path", "") or "")
        fields: dict[str, Any] = {
            "model": model,
            "top_n": top_n,
            "keep_retrieval_score": keep_retrieval_score,
            "metadata_mode": metadata_mode,
            **kwargs,
        }
        if callback_manager is not None:
            fields["callback_manager"] = callback_manager
        super().__init__(**fields)
        self._reranker = reranker
        self._store = core_store
        self._owned_encoder = owned

    def close(self) -> None:
        """Release the engine reference of the Encoder built here (idempotent)."""
        if self._owned_encoder is not None:
            self._owned_encoder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def class_name(cls) -> str:
        return "VLLMMaxSimRerank"

    @property
    def reranker(self) -> MaxSimReranker:
        """The core reranker doing the scoring."""
        return self._reranker

    @property
    def store(self) -> MultiVectorStore | None:
        """The store whose token vectors are reused (None: every node is encoded)."""
        return self._store

    # -- helpers -------------------------------------------------------------------------

    def _texts(self, nodes: Sequence[NodeWithScore]) -> list[str]:
        return [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]

    def _stored(
        self, nodes: Sequence[NodeWithScore], texts: list[str]
    ) -> list[npt.NDArray[np.float32] | None] | None:
        if self._store is None:
            return None
        return stored_tokens(self._store, [n.node.node_id for n in nodes], texts)

    def _limit(self, nodes: Sequence[NodeWithScore]) -> int:
        return len(nodes) if self.top_n is None else min(self.top_n, len(nodes))

    def _copy(self, src: NodeWithScore, score: float) -> NodeWithScore:
        metadata = dict(src.node.metadata)
        if self.keep_retrieval_score:
            metadata["retrieval_score"] = src.score
        node = src.node.model_copy(update={"metadata": metadata})
        return NodeWithScore(node=node, score=float(score))

    def _results(
        self, nodes: Sequence[NodeWithScore], results: Sequence[RerankResult]
    ) -> list[NodeWithScore]:
        return [self._copy(nodes[r.index], r.score) for r in results][: self._limit(nodes)]

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> None:
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self._limit(nodes),
                model_name=self.model,
            )
        )

    def _payload(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query_bundle.query_str,
            EventPayload.TOP_K: self._limit(nodes),
        }

    @staticmethod
    def _check_query(query_bundle: QueryBundle | None) -> QueryBundle:
        if query_bundle is None:
            raise ValueError("Missing query bundle: VLLMMaxSimRerank needs the query to rerank")
        return query_bundle

    # -- BaseNodePostprocessor -------------------------------------------------------------

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query_bundle = self._check_query(query_bundle)
        if not nodes:
            return []
        texts = self._texts(nodes)
        self._start(nodes, query_bundle)
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=self._payload(nodes, query_bundle)
        ) as event:
            results = self._reranker.rerank(
                query_bundle.query_str,
                texts,
                top_n=self._limit(nodes),
                document_tokens=self._stored(nodes, texts),
            )
            new_nodes = self._results(nodes, results)
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query_bundle = self._check_query(query_bundle)
        if not nodes:
            return []
        texts = await asyncio.to_thread(self._texts, nodes)
        self._start(nodes, query_bundle)
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=self._payload(nodes, query_bundle)
        ) as event:
            known = await asyncio.to_thread(self._stored, nodes, texts)
            results = await self._reranker.arerank(
                query_bundle.query_str, texts, top_n=self._limit(nodes), document_tokens=known
            )
            new_nodes = self._results(nodes, results)
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
