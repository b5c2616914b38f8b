"""Profiles of vision-language models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; Jina embeddings v4).

The engine runs them like every model here: ``token_embed`` without activation, so each row
is a raw last hidden state of one *expanded* prompt token (one ``<|image_pad|>`` becomes one
row per merged image patch). From those rows:

``jina-v4``  Jina embeddings v4's vLLM recipe: texts are ``"Query: "`` / ``"Document: "`` +
             text; an image is the chat prompt ``<|im_start|>user\\n<|vision_start|>
             <|image_pad|><|vision_end|>Describe the image.<|im_end|>\\n``. The dense vector of
             an image is the float mean of its rows from ``<|vision_start|>`` to
             ``<|vision_end|>`` inclusive, then L2 (raw hidden states, no per-row
             normalisation before pooling); of a text, the mean of all rows. The token vectors
             (MaxSim) are the same rows, each L2-normalised. A text with an image puts the
             text in place of "Describe the image." and pools every row (both signals).
``vlm``      a generic hidden-state embedding of any Qwen-VL checkpoint: the same image
             prompt, pooling over all rows (``mean`` by default; ``cls`` / ``max`` / ``last``),
             instruction prefixes as given.
``colqwen``  ColQwen3-style late-interaction retrievers (ColQwen3 / Ops-ColQwen3 / Nemotron
             ColEmbed: Qwen3-VL + a ``custom_text_proj`` linear head). vLLM's model applies the
             head and L2-normalises each row: those rows are the token vectors (every row,
             prompt tokens included, as ColPali scores them); the dense vector is their mean,
             then L2. The engine runs our ``VLLMRetrievalColQwen3`` (see
             ``backends/colqwen3_model.py``) so a trained projection bias is kept. Prompts
             differ between checkpoints: none by default, pass the card's
             ``query_prefix``/``document_prefix``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .model_profile import ModelProfile, Pooling

__all__ = [
    "COLQWEN_ARCHITECTURES",
    "IMAGE_PROMPT",
    "VLM_ARCHITECTURES",
    "merged_grid",
    "vlm_profile",
]

VLM_ARCHITECTURES = frozenset(
    {
        "Qwen2VLForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen3VLForConditionalGeneration",
    }
)
# Qwen3-VL + projection head (names as in vLLM's registry: TomoroAI, OpenSearch-AI, NVIDIA).
COLQWEN_ARCHITECTURES = frozenset({"ColQwen3", "OpsColQwen3Model", "Qwen3VLNemotronEmbedModel"})
_PROJECTION_NAMES = ("custom_text_proj", "embedding_proj_layer")
IMAGE_PROMPT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{text}<|im_end|>\n"
IMAGE_TEXT = "Describe the image."
# Qwen-VL's special token ids (the same in Qwen2-VL, Qwen2.5-VL and Qwen3-VL).
_VISION = (151652, 151655, 151653)
# Text budget when the checkpoint allows more: the CPU KV cache is sized for this length.
_DEFAULT_MAX_LENGTH = 8192


def merged_grid(processor: Any, width: int, height: int) -> tuple[int, int]:
    """``(rows, columns)`` of an image's merged patches: one vision row each, row-major.

    The Qwen-VL processors resize to multiples of ``patch_size * merge_size`` within the
    ``size`` pixel limits (``smart_resize``); each merged patch is one ``<|image_pad|>`` row.
    """
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = int(processor.patch_size) * int(processor.merge_size)
    size = processor.size
    h, w = smart_resize(
        height,
        width,
        factor=factor,
        min_pixels=int(size["shortest_edge"]),
        max_pixels=int(size["longest_edge"]),
    )
    return h // factor, w // factor


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) else config


def _weight_names(model_dir: Path) -> list[str]:
    """Tensor names of a safetensors checkpoint, read from the file headers only."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    from safetensors import safe_open

    names: list[str] = []
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as fh:
            names.extend(fh.keys())
    return names


def projection_has_bias(model_path: str) -> bool:
    """Whether a ColQwen3-style checkpoint's projection head has a bias."""
    return any(
        name.endswith(".bias") and any(p in name for p in _PROJECTION_NAMES)
        for name in _weight_names(Path(model_path))
    )


def vlm_profile(
    model_path: str,
    config: dict[str, Any],
    *,
    profile: str | None,
    pooling: Pooling | None,
    query_prefix: str | None,
    document_prefix: str | None,
    max_length: int | None,
) -> ModelProfile:
    """The profile of a Qwen-VL family checkpoint (``jina-v4`` when named so or by name)."""
    archs = set(config.get("architectures") or [])
    if profile is None:
        name = os.path.basename(os.path.normpath(model_path)).lower()
        if COLQWEN_ARCHITECTURES & archs:
            profile = "colqwen"
        else:
            profile = "jina-v4" if "jina-embeddings-v4" in name else "vlm"
    colqwen = profile == "colqwen"
    if colqwen and not COLQWEN_ARCHITECTURES & archs:
        raise ValueError(
            "profile 'colqwen' needs a ColQwen3-style checkpoint "
            f"({', '.join(sorted(COLQWEN_ARCHITECTURES))}); {model_path!r} is "
            f"{', '.join(sorted(archs)) or 'unnamed'}"
        )
    model_limit = int(_text_config(config).get("max_position_embeddings", _DEFAULT_MAX_LENGTH))
    limit = max_length or min(model_limit, _DEFAULT_MAX_LENGTH)
    if limit > model_limit:
        raise ValueError(f"max_length={limit} exceeds the model's limit of {model_limit} tokens")
    vision = (
        int(config.get("vision_start_token_id", _VISION[0])),
        int(config.get("image_token_id", _VISION[1])),
        int(config.get("vision_end_token_id", _VISION[2])),
    )
    jina = profile == "jina-v4"
    overrides: tuple[tuple[str, Any], ...] = ()
    if COLQWEN_ARCHITECTURES & archs:  # whatever the profile: load the head with its bias
        from .backends.vllm_plugin import COLQWEN3_ARCH, COLQWEN3_BIAS_FLAG

        overrides = (
            (
                "hf_overrides",
                {
                    "architectures": [COLQWEN3_ARCH],
                    COLQWEN3_BIAS_FLAG: projection_has_bias(model_path),
                },
            ),
        )
    return ModelProfile(
        kind="jina-v4" if jina else ("colqwen" if colqwen else "vlm"),
        pooling=pooling or "mean",
        max_length=limit,
        query_prefix=query_prefix if query_prefix is not None else ("Query: " if jina else ""),
        document_prefix=(
            document_prefix if document_prefix is not None else ("Document: " if jina else "")
        ),
        special_tokens=False,
        image_prompt=IMAGE_PROMPT,
        image_text=IMAGE_TEXT,
        vision_ids=vision,
        vision_rows_only=jina,
        # The KV cache must hold a whole prompt: bound the engine's length to the text budget
        # (images add their patch rows on top), and take one image per prompt, no video.
        engine_overrides=(
            ("max_model_len", min(model_limit, limit + 4096)),
            ("limit_mm_per_prompt", {"image": 1, "video": 0}),
            *overrides,
        ),
    )
