"""``VLLMEmbedding``: LlamaIndex dense embeddings served by the shared vLLM engine."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import numpy.typing as npt
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager

from ..core.encoder import Encoder
from ..core.profiles import DEFAULT_MODEL, resolve_model_path

__all__ = ["VLLMEmbedding"]

DEFAULT_EMBED_BATCH_SIZE = 64


def _as_list(vector: npt.NDArray[np.float32]) -> list[float]:
    return cast(list[float], vector.tolist())


def _as_lists(matrix: npt.NDArray[np.float32]) -> list[list[float]]:
    return cast(list[list[float]], matrix.tolist())


class VLLMEmbedding(BaseEmbedding):
    """Dense embeddings from the shared vLLM engine (one forward pass, pooled in the core).

    Pass ``encoder=`` to share an :class:`~vllm_retrieval.core.encoder.Encoder` (and so its
    engine) with the other adapters of the process; otherwise one is built from the fields
    below. Encoders with equal model and engine settings share one engine anyway, so several
    ``VLLMEmbedding`` objects with different instructions cost one engine.

    Example:
        .. code-block:: python

            from llama_index.core import Settings, VectorStoreIndex
            from vllm_retrieval.llama_index import VLLMEmbedding

            Settings.embed_model = VLLMEmbedding()  # packaged all-MiniLM-L6-v2
            index = VectorStoreIndex.from_documents(documents)
    """

    model_name: str = Field(
        default=DEFAULT_MODEL,
        description="Model folder or name (the packaged all-MiniLM-L6-v2 by default).",
    )
    query_instruction: str | None = Field(
        default=None,
        description="Prefix prepended to queries; None uses the model's own query prompt.",
    )
    text_instruction: str | None = Field(
        default=None,
        description="Prefix prepended to texts; None uses the model's own document prompt.",
    )
    max_length: int | None = Field(
        default=None,
        gt=2,
        description="Truncation length in tokens (special tokens included); None: the model's.",
    )
    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE,
        gt=0,
        le=2048,
        description="Texts per engine request.",
    )
    show_progress: bool = Field(
        default=False, description="Show a progress bar while encoding many texts."
    )
    dtype: str | None = Field(
        default=None,
        description="vLLM dtype; default $VLLM_RETRIEVAL_DTYPE or auto: bfloat16 on CPUs with "
        "bf16 units, else float32; the model's on GPU.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Further keyword arguments for vllm.LLM."
    )
    base_url: str | None = Field(
        default=None,
        description="URL of a remote `vllm serve` (token_embed) server; None runs vLLM in-process.",
    )
    api_key: str | None = Field(
        default=None, exclude=True, description="API key of the remote server."
    )

    _encoder: Encoder = PrivateAttr()

    def __init__(
        self,
        model_name: str | None = None,
        *,
        encoder: Encoder | None = None,
        model: str | None = None,
        query_instruction: str | None = None,
        text_instruction: str | None = None,
        max_length: int | None = None,
        embed_batch_size: int | None = None,
        show_progress: bool | None = None,
        dtype: str | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        if model is not None and model_name is not None and model != model_name:
            raise ValueError(f"model={model!r} and model_name={model_name!r} disagree")
        name = model_name if model_name is not None else model
        settings: dict[str, Any] = {
            "query_prefix": query_instruction,
            "document_prefix": text_instruction,
            "max_length": max_length,
            "batch_size": embed_batch_size,
            "show_progress": show_progress,
            "dtype": dtype,
            "engine_kwargs": engine_kwargs,
            "base_url": base_url,
            "api_key": api_key,
        }
        given = {k: v for k, v in settings.items() if v is not None}
        if encoder is None:
            enc = Encoder(model=name, **given)
        else:
            if not isinstance(encoder, Encoder):
                raise TypeError(f"encoder must be an Encoder, got {type(encoder).__name__}")
            if name is not None and resolve_model_path(name) != encoder.model_path:
                raise ValueError(
                    f"model {name!r} differs from the model of encoder= ({encoder.model_path!r})"
                )
            changed = {k: v for k, v in given.items() if getattr(encoder, k) != v}
            # Same model and engine settings: the derived encoder joins the same engine.
            enc = Encoder(**{**encoder.model_dump(), **changed}) if changed else encoder
        fields: dict[str, Any] = {
            "model_name": name or enc.model or DEFAULT_MODEL,
            "query_instruction": enc.query_prefix,
            "text_instruction": enc.document_prefix,
            "max_length": enc.max_length,
            "embed_batch_size": enc.batch_size,
            "show_progress": enc.show_progress,
            "dtype": enc.dtype,
            "engine_kwargs": dict(enc.engine_kwargs),
            "base_url": enc.base_url,
            "api_key": enc.api_key,
            **kwargs,
        }
        if callback_manager is not None:
            fields["callback_manager"] = callback_manager
        super().__init__(**fields)
        self._encoder = enc

    @classmethod
    def class_name(cls) -> str:
        return "VLLMEmbedding"

    @property
    def encoder(self) -> Encoder:
        """The core encoder (share it with the retriever, store and reranker)."""
        return self._encoder

    # -- sync ----------------------------------------------------------------------------

    def _get_query_embedding(self, query: str) -> list[float]:
        return _as_list(self._encoder.embed_query(query))

    def _get_text_embedding(self, text: str) -> list[float]:
        return _as_lists(self._encoder.embed_documents([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return _as_lists(self._encoder.embed_documents(texts))

    # -- async (waits on the engine without blocking the event loop) ---------------------

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return _as_list(await self._encoder.aembed_query(query))

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return _as_lists(await self._encoder.aembed_documents([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return _as_lists(await self._encoder.aembed_documents(texts))
