"""``VLLMEmbeddings``: LangChain dense embeddings served by the shared vLLM engine."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.encoder import Encoder
from ..core.profiles import Pooling

__all__ = ["VLLMEmbeddings"]

# Fields that configure an Encoder; they may not be combined with ``encoder=``.
_ENCODER_FIELDS = (
    "model",
    "query_prefix",
    "document_prefix",
    "max_length",
    "query_length",
    "pooling",
    "batch_size",
    "show_progress",
    "dtype",
    "engine_kwargs",
    "base_url",
    "api_key",
    "timeout",
)


class VLLMEmbeddings(BaseModel, Embeddings):
    """Dense embeddings from one shared vLLM engine, as a LangChain ``Embeddings``.

    Pass a core :class:`~vllm_retrieval.core.encoder.Encoder` (``encoder=``) to share it with
    other adapters, or configure one here (``model``, prefixes, ``batch_size``, ...).
    Encoders with equal model and engine settings share one vLLM engine in a process, so
    building several ``VLLMEmbeddings`` is cheap after the first engine start.

    Vectors are L2-normalised lists of plain Python floats. ``aembed_documents`` and
    ``aembed_query`` wait on the engine without blocking the event loop.

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
        description="A shared core Encoder; built from the fields below when not given.",
    )
    model: str | None = Field(
        default=None, description="Model folder or name; None is the packaged all-MiniLM-L6-v2."
    )
    query_prefix: str | None = Field(
        default=None, description="Prepended to queries (default: the model's own prompt)."
    )
    document_prefix: str | None = Field(
        default=None, description="Prepended to documents (default: the model's own prompt)."
    )
    max_length: int | None = Field(
        default=None, gt=2, description="Truncation length in tokens, special tokens included."
    )
    query_length: int | None = Field(
        default=None, gt=2, description="ColBERT query length ([MASK] expansion)."
    )
    pooling: Pooling | None = Field(
        default=None, description="Dense pooling; default from the model's config."
    )
    batch_size: int = Field(default=64, gt=0, description="Texts per engine request.")
    show_progress: bool = Field(default=False, description="Show a progress bar.")
    dtype: str | None = Field(default=None, description="vLLM dtype (default: per device).")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Further keyword arguments for vllm.LLM."
    )
    base_url: str | None = Field(
        default=None, description="URL of a remote vLLM server; None runs vLLM in-process."
    )
    api_key: str | None = Field(default=None, description="API key of the remote server.")
    timeout: float = Field(default=60.0, gt=0, description="Remote request timeout in seconds.")

    @model_validator(mode="after")
    def _build_encoder(self) -> VLLMEmbeddings:
        if self.encoder is not None:
            clash = sorted(set(_ENCODER_FIELDS) & self.model_fields_set)
            if clash:
                raise ValueError(
                    f"pass either encoder= or encoder settings, not both (got {clash})"
                )
            return self
        self.encoder = Encoder(**{name: getattr(self, name) for name in _ENCODER_FIELDS})
        return self

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
        vectors: list[list[float]] = (await self.core_encoder.aembed_documents(texts)).tolist()
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`; does not block the event loop."""
        vector: list[float] = (await self.core_encoder.aembed_query(text)).tolist()
        return vector
