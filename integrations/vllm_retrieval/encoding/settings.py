"""``EncoderSettings``: the one definition of an encoder's settings.

:class:`~vllm_retrieval.encoding.encoder.Encoder` is these settings plus the engine; the
framework adapters (LangChain ``VLLMEmbeddings``, LlamaIndex ``VLLMEmbedding``) take their
fields from here too, so a setting added here reaches every adapter (a test checks it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .profiles import Pooling, ProfileKind

__all__ = ["ENCODER_FIELDS", "EncoderSettings"]


class EncoderSettings(BaseModel):
    """How to encode: the model, its prompts and lengths, batching, and which engine runs it."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        description="Model folder or name; None is the packaged all-MiniLM-L6-v2.",
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
        default=None, gt=2, description="ColBERT query length ([MASK] expansion); default 32."
    )
    pooling: Pooling | None = Field(
        default=None, description="Dense pooling; default from the model's config."
    )
    profile: ProfileKind | None = Field(
        default=None,
        description="Model profile (e.g. 'jina-v4', 'vlm'); default: detected from the model.",
    )
    batch_size: int = Field(default=64, gt=0, description="Texts per engine request.")
    show_progress: bool = Field(default=False, description="Show a tqdm bar for long inputs.")
    dtype: str | None = Field(
        default=None,
        description="vLLM dtype; default $VLLM_RETRIEVAL_DTYPE or auto: bfloat16 on CPUs where "
        "it is faster (AMX, Zen 4+), else float32; the model's on GPU.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Further keyword arguments for vllm.LLM."
    )
    base_url: str | None = Field(
        default=None,
        description="URL of a remote `vllm serve` (token_embed) server; None runs vLLM in-process.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key of the remote server (a str is accepted; never shown in repr, str "
        "or JSON); None: $VLLM_API_KEY when set.",
    )
    timeout: float = Field(default=60.0, gt=0, description="Remote request timeout in seconds.")

    def settings(self) -> dict[str, Any]:
        """The settings as keyword arguments (for ``Encoder(**...)``)."""
        return {name: getattr(self, name) for name in ENCODER_FIELDS}


ENCODER_FIELDS: tuple[str, ...] = tuple(EncoderSettings.model_fields)
