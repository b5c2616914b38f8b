"""``VLLMEmbeddings``: LangChain dense embeddings served by the shared vLLM engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field, PrivateAttr, model_validator
from typing_extensions import Self

from ..encoding import ENCODER_FIELDS, Encoder, EncoderSettings

__all__ = ["VLLMEmbeddings"]


class VLLMEmbeddings(EncoderSettings, Embeddings):
    """Dense embeddings from one shared vLLM engine, as a LangChain ``Embeddings``.

    Pass a core :class:`~vllm_retrieval.encoding.Encoder` (``encoder=``) to share it with
    other adapters, or configure one here: the fields are the Encoder's own
    (:class:`~vllm_retrieval.encoding.EncoderSettings`: ``model``, prefixes, ``batch_size``, ...).
    Encoders with equal model and engine settings share one vLLM engine in a process, so
    building several ``VLLMEmbeddings`` is cheap after the first engine start.

    Vectors are L2-normalised lists of plain Python floats. ``aembed_documents`` and
    ``aembed_query`` wait on the engine without blocking the event loop (tokenisation and
    conversion run in worker threads).

    :meth:`close` (or ``with VLLMEmbeddings() as emb:``) releases the engine reference of an
    Encoder built here; an ``encoder=`` passed in stays yours (close it yourself). Either
    way other users of the engine are not affected.

    Example:
        ```python
        from langchain_core.vectorstores import InMemoryVectorStore
        from vllm_retrieval.langchain import VLLMEmbeddings

        store = InMemoryVectorStore(embedding=VLLMEmbeddings())
        ```
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    encoder: Encoder | None = Field(
        default=None,
        description="A shared core Encoder; built from the settings fields when not given.",
    )
    _owns_encoder: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _build_encoder(self) -> VLLMEmbeddings:
        if self.encoder is not None:
            clash = sorted(set(ENCODER_FIELDS) & self.model_fields_set)
            if clash:
                raise ValueError(
                    f"pass either encoder= or encoder settings, not both (got {clash})"
                )
            for name in ENCODER_FIELDS:  # the fields show the settings actually in use
                object.__setattr__(self, name, getattr(self.encoder, name))
            return self
        self.encoder = Encoder(**self.settings())
        self._owns_encoder = True
        return self

    def close(self) -> None:
        """Release the engine reference of the Encoder built here (idempotent); an
        ``encoder=`` passed in is left open."""
        if self._owns_encoder and self.encoder is not None:
            self.encoder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def core_encoder(self) -> Encoder:
        """The core Encoder behind these embeddings (always set after construction)."""
        assert self.encoder is not None
        return self.encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (the model's document prefix applied)."""
        vectors: list[list[float]] = self.core_encoder.embed_documents(texts).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed a query (the model's query prefix applied)."""
        vector: list[float] = self.core_encoder.embed_query(text).tolist()
        return vector

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`; does not block the event loop."""
        matrix = await self.core_encoder.aembed_documents(texts)
        vectors: list[list[float]] = await asyncio.to_thread(matrix.tolist)
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`; does not block the event loop."""
        vector: list[float] = (await self.core_encoder.aembed_query(text)).tolist()
        return vector

    def embed_image(self, uris: list[str]) -> list[list[float]]:
        """Embed images by path or ``data:`` URI (the convention of LangChain's
        ``OpenCLIPEmbeddings``); needs a vision-language model (e.g. ``profile="jina-v4"``)."""
        images = [u if u.startswith("data:") else Path(u) for u in uris]
        vectors: list[list[float]] = self.core_encoder.embed_images(images).tolist()
        return vectors

    async def aembed_image(self, uris: list[str]) -> list[list[float]]:
        """Async :meth:`embed_image`; does not block the event loop."""
        images = [u if u.startswith("data:") else Path(u) for u in uris]
        matrix = await self.core_encoder.aembed_images(images)
        vectors: list[list[float]] = await asyncio.to_thread(matrix.tolist)
        return vectors
