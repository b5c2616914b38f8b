"""Profiles of dual encoders: CLIP (``CLIPModel``) and SigLIP (``SiglipModel``).

A dual encoder embeds a text OR an image into one shared space; vLLM serves both towers as
one pooling model with the ``embed`` task (one projected vector per prompt; an image's prompt
carries no text). So the ``clip`` profile gives dense vectors only: asking it for token
vectors (MaxSim, a multi-vector store, the reranker) is a :class:`DenseOnlyModelError`.

Texts are the tokenizer's ids with its special tokens (CLIP: ``<|startoftext|>`` ...
``<|endoftext|>``; SigLIP: ... ``</s>``), truncated to the text tower's positions (77 and
64). SigLIP was trained on texts padded to 64 tokens and is used so (transformers'
``padding="max_length"``, ids only): the profile pads with the model's pad id, and vLLM
then equals transformers on those ids. Unpadded text would give different vectors.
"""

from __future__ import annotations

from typing import Any

from .model_profile import ModelProfile

__all__ = ["DUAL_ARCHITECTURES", "dual_profile"]

DUAL_ARCHITECTURES = frozenset({"CLIPModel", "SiglipModel"})


def dual_profile(
    model_path: str,
    config: dict[str, Any],
    *,
    query_prefix: str | None,
    document_prefix: str | None,
    max_length: int | None,
) -> ModelProfile:
    """The profile of a CLIP or SigLIP checkpoint (dense vectors of texts and images)."""
    archs = set(config.get("architectures") or [])
    if not DUAL_ARCHITECTURES & archs:
        raise ValueError(
            f"profile 'clip' needs a CLIP or SigLIP checkpoint (CLIPModel, SiglipModel); "
            f"{model_path!r} is {', '.join(sorted(archs)) or 'unnamed'}"
        )
    text = config.get("text_config")
    text = text if isinstance(text, dict) else {}
    siglip = "SiglipModel" in archs
    model_limit = int(text.get("max_position_embeddings", 64 if siglip else 77))
    limit = max_length or model_limit
    if limit > model_limit:
        raise ValueError(f"max_length={limit} exceeds the model's limit of {model_limit} tokens")
    pad = text.get("pad_token_id", 1) if siglip else None
    return ModelProfile(
        kind="clip",
        pooling="cls",  # nominal: the model's own head gives the one vector
        max_length=limit,
        query_prefix=query_prefix or "",
        document_prefix=document_prefix or "",
        image_prompt="{text}",  # an image's prompt carries no text
        image_text="",
        dense_only=True,
        pad_id=None if pad is None else int(pad),
        engine_overrides=(("pooling_task", "embed"),),
    )
