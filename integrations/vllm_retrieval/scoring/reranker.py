"""``MaxSimReranker``: ColBERT-style late-interaction reranking on the shared vLLM engine.

The query and the documents are encoded into token vectors by the shared
:class:`~vllm_retrieval.encoding.Encoder` (documents in ONE batched call, skipping those
whose token vectors are already known — passed in, or in the optional LRU cache keyed by a
content hash), then scored with :func:`~vllm_retrieval.scoring.maxsim.maxsim` (a sum over query
tokens; ``normalize=True`` divides by the query length).

Conventions:

* An empty or whitespace-only query raises ``ValueError``; an empty document list gives
  ``[]``; ``top_n <= 0`` raises ``ValueError``.
* A document that is the empty string has no tokens: it is not sent to the engine, scores
  ``-inf`` and ranks last (the MaxSim convention for zero-token documents).
* Results are best first; equal scores keep the input order.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ..encoding import Encoder, LoadedItem, check_items, check_text, check_texts
from .explain import Explanation, TokenMatch, explain
from .maxsim import maxsim
from .packing import _to_numpy_f32

__all__ = ["Explanation", "MaxSimReranker", "RerankResult", "TokenMatch"]

FloatArray = npt.NDArray[np.float32]
Document = str | LoadedItem


class RerankResult(NamedTuple):
    """One ranked document: its position in the input and its MaxSim score."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, by design of the API
    score: float


def _content_key(doc: Document) -> str:
    """A text's hash, or an image item's (its pixels, size and mode, and its text)."""
    if isinstance(doc, str):
        return hashlib.blake2b(doc.encode("utf-8"), digest_size=16).hexdigest()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"image:{doc.image.size}:{doc.image.mode}:{doc.text!r}".encode())
    h.update(doc.image.tobytes())
    return h.hexdigest()


class MaxSimReranker(BaseModel):
    """Rerank texts by MaxSim over the shared encoder's token vectors.

    Example::

        reranker = MaxSimReranker(encoder=Encoder(), top_n=3)
        for index, score in reranker.rerank("what is late interaction?", texts):
            ...
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    encoder: Encoder = Field(description="The shared encoder (one vLLM engine per process).")
    top_n: int | None = Field(
        default=None, gt=0, description="Results to return, best first; None returns all."
    )
    normalize: bool = Field(
        default=False, description="Divide scores by the query length (mean instead of sum)."
    )
    cache_size: int = Field(
        default=0,
        ge=0,
        description="LRU cache of document token vectors keyed by content hash; 0 = off.",
    )

    _cache: OrderedDict[str, FloatArray] = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # MaxSim needs token vectors: a dual encoder (CLIP/SigLIP) is a DenseOnlyModelError
        self.encoder.require_token_vectors()

    # -- cache ------------------------------------------------------------------------------

    def _cache_get(self, key: str) -> FloatArray | None:
        if self.cache_size == 0:
            return None
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _cache_put(self, key: str, tokens: FloatArray) -> None:
        if self.cache_size == 0:
            return
        with self._lock:
            self._cache[key] = tokens
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget every cached document."""
        with self._lock:
            self._cache.clear()

    @property
    def cache_info(self) -> dict[str, int]:
        """``{"size": entries held, "capacity": cache_size}``."""
        with self._lock:
            return {"size": len(self._cache), "capacity": self.cache_size}

    # -- planning ---------------------------------------------------------------------------

    def _resolve_top_n(self, top_n: int | None) -> int | None:
        n = self.top_n if top_n is None else top_n
        if n is None:
            return None
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"top_n must be an int or None, got {type(n).__name__}")
        if n <= 0:
            raise ValueError(f"top_n must be positive, got {n}")
        return n

    def _documents(self, documents: Any) -> list[Document]:
        """Texts, or for a vision-language encoder also images and text+image items."""
        if (
            self.encoder.model_profile.takes_images
            and isinstance(documents, Sequence)
            and not isinstance(documents, (str, bytes))
            and any(not isinstance(d, str) for d in documents)
        ):
            return check_items(documents, "documents")
        return list(check_texts(documents, "documents", allow_empty=True))

    def _encode(self, docs: list[Document]) -> list[FloatArray]:
        if all(isinstance(d, str) for d in docs):
            return self.encoder.embed_documents_tokens(docs)  # type: ignore[arg-type]
        return [e.tokens for e in self.encoder.encode_items(docs)]

    async def _aencode(self, docs: list[Document]) -> list[FloatArray]:
        if all(isinstance(d, str) for d in docs):
            return await self.encoder.aembed_documents_tokens(docs)  # type: ignore[arg-type]
        return [e.tokens for e in await self.encoder.aencode_items(docs)]

    def _known(
        self, docs: list[Document], document_tokens: Sequence[Any] | None
    ) -> tuple[list[FloatArray | None], dict[str, Document]]:
        """Token vectors already known per document, and the distinct documents to encode."""
        if document_tokens is not None:
            if isinstance(document_tokens, np.ndarray) or not isinstance(document_tokens, Sequence):
                raise TypeError("document_tokens must be a sequence of [T_i, d] arrays or None")
            if len(document_tokens) != len(docs):
                raise ValueError(
                    f"document_tokens has {len(document_tokens)} entries for {len(docs)} documents"
                )
        known: list[FloatArray | None] = []
        missing: dict[str, Document] = {}
        for i, text in enumerate(docs):
            given = None if document_tokens is None else document_tokens[i]
            if given is not None:
                known.append(_to_numpy_f32(given))  # numpy or torch, any float dtype
                continue
            if text == "":
                known.append(None)  # zero tokens; scored -inf below
                continue
            key = _content_key(text)
            hit = self._cache_get(key)
            known.append(hit)
            if hit is None:
                missing[key] = text
        return known, missing

    def _score(
        self,
        query_tokens: FloatArray,
        docs: list[Document],
        known: list[FloatArray | None],
        encoded: dict[str, FloatArray],
        top_n: int | None,
    ) -> list[RerankResult]:
        dim = int(query_tokens.shape[1])
        rows: list[Any] = []
        for text, tokens in zip(docs, known, strict=True):
            if tokens is None:
                tokens = encoded.get(_content_key(text)) if text != "" else None
            if tokens is None:
                tokens = np.zeros((0, dim), dtype=np.float32)
            rows.append(tokens)
        scores = maxsim(query_tokens, rows, normalize=self.normalize)
        order = np.argsort(-scores.astype(np.float64), kind="stable")
        if top_n is not None:
            order = order[:top_n]
        return [RerankResult(int(i), float(scores[i])) for i in order]

    def _remember(self, keys: list[str], tokens: list[FloatArray]) -> dict[str, FloatArray]:
        out = dict(zip(keys, tokens, strict=True))
        for key, tok in out.items():
            self._cache_put(key, tok)
        return out

    # -- public API -------------------------------------------------------------------------

    def rerank(
        self,
        query: str,
        documents: Sequence[Any],
        *,
        top_n: int | None = None,
        document_tokens: Sequence[FloatArray | None] | None = None,
    ) -> list[RerankResult]:
        """Rank ``documents`` for ``query`` by MaxSim, best first.

        Args:
            query: the query text (non-empty).
            documents: texts to rank; ``[]`` gives ``[]``. A vision-language encoder also
                ranks images and :class:`~vllm_retrieval.MultimodalItem` s (MaxSim over
                their patch vectors).
            top_n: results to keep (default: the reranker's ``top_n``; None keeps all).
            document_tokens: optional known token vectors ``[T_i, d]`` per document (e.g. from
                a store); ``None`` entries are encoded. Only documents with neither known
                tokens nor a cache hit are encoded, in one batched call.

        Returns:
            ``RerankResult(index, score)`` per kept document, best first (ties: input order).
        """
        query = check_text(query, "query", allow_blank=False)
        docs = self._documents(documents)
        n = self._resolve_top_n(top_n)
        if not docs:
            return []
        known, missing = self._known(docs, document_tokens)
        query_tokens = self.encoder.embed_query_tokens(query)
        fresh = self._encode(list(missing.values())) if missing else []
        encoded = self._remember(list(missing), fresh)
        return self._score(query_tokens, docs, known, encoded, n)

    async def arerank(
        self,
        query: str,
        documents: Sequence[Any],
        *,
        top_n: int | None = None,
        document_tokens: Sequence[FloatArray | None] | None = None,
    ) -> list[RerankResult]:
        """Async :meth:`rerank`: query and documents are encoded concurrently.

        Nothing heavy runs on the event loop: checking the documents, hashing them for the
        cache, converting given token vectors and the MaxSim scoring run in a worker thread
        (``asyncio.to_thread``), the encoding in the engine.
        """
        query = check_text(query, "query", allow_blank=False)
        docs = await asyncio.to_thread(self._documents, documents)
        n = self._resolve_top_n(top_n)
        if not docs:
            return []
        known, missing = await asyncio.to_thread(self._known, docs, document_tokens)
        if missing:
            query_tokens, doc_tokens = await asyncio.gather(
                self.encoder.aembed_query_tokens(query),
                self._aencode(list(missing.values())),
            )
        else:
            query_tokens, doc_tokens = await self.encoder.aembed_query_tokens(query), []
        encoded = self._remember(list(missing), doc_tokens)
        return await asyncio.to_thread(self._score, query_tokens, docs, known, encoded, n)

    def explain(self, query: str, document: Any) -> Explanation:
        """Per query token: its text, the best document token, its position, the similarity.

        See :func:`~vllm_retrieval.scoring.explain.explain` (scored with this reranker's
        ``normalize``).
        """
        return explain(self.encoder, query, document, normalize=self.normalize)

    def score_with_vllm(self, query: str, documents: Sequence[str]) -> list[float]:
        """vLLM's own in-engine late-interaction scores (``LLM.score``), one per document.

        Runs on the engine thread. vLLM tokenises the texts itself (the encoder's prefixes
        are prepended; its text scoring takes no token ids) and the ``token_embed`` pooler is
        asked to L2-normalise its rows (``use_activation=True``: the shared engine runs
        without activation, and ``LLM.score`` would otherwise sum raw hidden-state dot
        products). For models whose token rows are the normalised hidden states of every
        token (plain BERT-like models such as the packaged all-MiniLM-L6-v2) the scores equal
        :meth:`rerank`'s (a sum, never divided by the query length). ColBERT models, whose
        query markers, ``[MASK]`` expansion and row filters vLLM does not apply, can differ.

        Raises:
            NotImplementedError: the encoder's engine is remote (no in-process ``LLM``).
        """
        query = check_text(query, "query", allow_blank=False)
        docs = check_texts(documents, "documents", allow_empty=True)
        if not docs:
            return []
        for i, doc in enumerate(docs):
            if not doc:
                raise ValueError(f"documents[{i}] is empty")
        engine = self.encoder.engine
        call = getattr(engine, "call", None)
        if call is None:
            raise NotImplementedError("score_with_vllm needs an in-process vLLM engine")
        prof = self.encoder.model_profile
        q_text = prof.query_prefix + query
        d_texts = [prof.document_prefix + d for d in docs]

        def run(llm: Any) -> list[float]:
            from vllm import PoolingParams

            outputs = llm.score(
                q_text,
                d_texts,
                use_tqdm=False,
                pooling_params=PoolingParams(use_activation=True),
            )
            return [float(out.outputs.score) for out in outputs]

        result: list[float] = call(run).result()
        return result
