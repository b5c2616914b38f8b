"""``VLLMEmbedding``: LlamaIndex dense embeddings served by the shared vLLM engine."""

from __future__ import annotations

import asyncio
import io
from copy import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.schema import ImageType
from pydantic import create_model
from typing_extensions import Self

from ..encoding import (
    DEFAULT_MODEL,
    ENCODER_FIELDS,
    EncodedText,
    Encoder,
    EncoderSettings,
    resolve_model_path,
)
from .handoff import HANDOFF

__all__ = ["LLAMA_INDEX_NAMES", "VLLMEmbedding"]


def _as_lists(matrix: npt.NDArray[np.float32]) -> list[list[float]]:
    return cast(list[list[float]], matrix.tolist())


def _as_list(vector: npt.NDArray[np.float32]) -> list[float]:
    return cast(list[float], vector.tolist())


# LlamaIndex's names for the Encoder settings it has conventions for; every other setting of
# :class:`~vllm_retrieval.encoding.EncoderSettings` keeps its name.
LLAMA_INDEX_NAMES: dict[str, str] = {
    "model": "model_name",
    "query_prefix": "query_instruction",
    "document_prefix": "text_instruction",
    "batch_size": "embed_batch_size",
}


def _settings_fields() -> dict[str, Any]:
    """The embedding's fields: the Encoder's settings under LlamaIndex's names."""
    fields: dict[str, Any] = {
        LLAMA_INDEX_NAMES.get(name, name): (info.annotation, copy(info))
        for name, info in EncoderSettings.model_fields.items()
    }
    fields["model_name"] = (
        str,
        Field(default=DEFAULT_MODEL, description="Model folder or name (default: packaged)."),
    )
    batch = EncoderSettings.model_fields["batch_size"]
    fields["embed_batch_size"] = (
        int,
        Field(default=batch.default, gt=0, le=2048, description=batch.description),
    )
    key = copy(EncoderSettings.model_fields["api_key"])
    key.exclude = True  # secrets stay out of serialised configs
    fields["api_key"] = (key.annotation, key)
    return fields


if TYPE_CHECKING:
    _EmbeddingBase = MultiModalEmbedding
else:
    _EmbeddingBase = create_model(
        "_VLLMEmbeddingSettings", __base__=MultiModalEmbedding, **_settings_fields()
    )


class VLLMEmbedding(_EmbeddingBase):
    """Dense embeddings from the shared vLLM engine (one forward pass, pooled in the core).

    Pass ``encoder=`` to share an :class:`~vllm_retrieval.encoding.Encoder` (and so its
    engine) with the other adapters of the process; otherwise one is built from the fields,
    which are the Encoder's own settings (:class:`~vllm_retrieval.encoding.EncoderSettings`)
    under LlamaIndex's names where it has a convention: ``model_name``,
    ``query_instruction``, ``text_instruction``, ``embed_batch_size``; ``max_length``,
    ``pooling``, ``dtype``, ``base_url``, ... as they are. Encoders with equal model and
    engine settings share one engine anyway, so several ``VLLMEmbedding`` objects with
    different instructions cost one engine.

    Example:
        .. code-block:: python

            from llama_index.core import Settings, VectorStoreIndex
            from vllm_retrieval.llama_index import VLLMEmbedding

            Settings.embed_model = VLLMEmbedding()  # packaged all-MiniLM-L6-v2
            index = VectorStoreIndex.from_documents(documents)

    **Encode once.** A text is encoded in one forward pass that yields its dense vector and
    its token vectors; while a :class:`~vllm_retrieval.llama_index.VLLMMultiVectorStore` with
    an encoder of the same settings is alive, the token vectors of the documents embedded
    here are handed to it (:mod:`~vllm_retrieval.llama_index.handoff`), so a node embedded
    by ``VectorStoreIndex`` or an ``IngestionPipeline`` is not run through the model again
    when the store writes it.

    :meth:`close` (or ``with VLLMEmbedding() as emb:``) releases the engine reference of an
    Encoder built here; an ``encoder=`` passed in stays yours. The async methods tokenise and
    convert in worker threads, never on the event loop.
    """

    # An unknown setting is an error, not silently ignored (BaseEmbedding's default)
    model_config = ConfigDict(extra="forbid")

    _encoder: Encoder = PrivateAttr()
    _owns_encoder: bool = PrivateAttr(default=False)

    def __init__(
        self,
        model_name: str | None = None,
        *,
        encoder: Encoder | None = None,
        model: str | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        if model is not None and model_name is not None and model != model_name:
            raise ValueError(f"model={model!r} and model_name={model_name!r} disagree")
        name = model_name if model_name is not None else model
        given: dict[str, Any] = {}
        for setting in ENCODER_FIELDS:
            field = LLAMA_INDEX_NAMES.get(setting, setting)
            if setting != "model" and field in kwargs:
                value = kwargs.pop(field)
                if value is not None:  # None: the Encoder's default
                    given[setting] = value
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
            LLAMA_INDEX_NAMES.get(setting, setting): getattr(enc, setting)
            for setting in ENCODER_FIELDS
        }
        fields["model_name"] = name or enc.model or DEFAULT_MODEL
        fields["engine_kwargs"] = dict(enc.engine_kwargs)
        fields.update(kwargs)
        if callback_manager is not None:
            fields["callback_manager"] = callback_manager
        super().__init__(**fields)
        self._encoder = enc
        self._owns_encoder = enc is not encoder

    def close(self) -> None:
        """Release the engine reference of the Encoder built here (idempotent); an
        ``encoder=`` passed in is left open."""
        if self._owns_encoder:
            self._encoder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _dense(self, texts: list[str], encoded: list[EncodedText]) -> list[list[float]]:
        if HANDOFF.wants(self._encoder):
            HANDOFF.offer(self._encoder, texts, encoded)
        return [_as_list(e.dense) for e in encoded]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._dense(texts, self._encoder.encode(texts))

    # -- async (waits on the engine without blocking the event loop) ---------------------

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return _as_list(await self._encoder.aembed_query(query))  # one vector: cheap

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        encoded = await self._encoder.aencode(texts)
        return await asyncio.to_thread(self._dense, texts, encoded)

    # -- images (a vision-language model, e.g. profile="jina-v4") ----------------------------

    @staticmethod
    def _image(img: ImageType) -> Any:
        """LlamaIndex passes a file path or a ``BytesIO``; the encoder takes both as images."""
        if isinstance(img, str):
            return Path(img)  # a str is a path here (the encoder reads a bare str as text)
        if isinstance(img, io.BytesIO):
            return img.getvalue()
        return img

    def _get_image_embedding(self, img_file_path: ImageType) -> list[float]:
        return self._get_image_embeddings([img_file_path])[0]

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[list[float]]:
        if not img_file_paths:
            return []
        return _as_lists(self._encoder.embed_images([self._image(i) for i in img_file_paths]))

    async def _aget_image_embedding(self, img_file_path: ImageType) -> list[float]:
        return (await self._aget_image_embeddings([img_file_path]))[0]

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[list[float]]:
        if not img_file_paths:
            return []
        images = [self._image(i) for i in img_file_paths]
        return await asyncio.to_thread(_as_lists, await self._encoder.aembed_images(images))
