"""Tiny random vision-language checkpoints for tests and benchmarks (no weights download).

Qwen2.5-VL (Jina embeddings v4's architecture), Qwen2-VL and Qwen3-VL with hidden size 64,
2 layers and head size 32 (vLLM's CPU attention needs >= 32), around the real Qwen tokenizer
of ``../shared/fixtures/qwen-tokenizer`` (real token ids and chat template), with an image
processor limited to 64 merged patches so an image costs at most 64 rows.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QWEN_TOKENIZER = Path(
    os.environ.get("QWEN_TOKENIZER_DIR", REPO.parent / "shared" / "fixtures" / "qwen-tokenizer")
)


def missing() -> str | None:
    """Why the tiny VLM cannot be built here (None when it can)."""
    if not (QWEN_TOKENIZER / "tokenizer.json").is_file():
        return f"the Qwen tokenizer fixture is not at {QWEN_TOKENIZER}"
    try:
        import torchvision  # noqa: F401  (Qwen-VL processors need it)
    except Exception as exc:
        return f"torchvision (CPU build) is not importable: {type(exc).__name__}"
    return None


_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 128,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
_IDS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}


def _save(model: object, out: Path, patch: int) -> Path:
    from transformers import AutoTokenizer, Qwen2VLImageProcessor

    model.eval().save_pretrained(out)  # type: ignore[attr-defined]
    AutoTokenizer.from_pretrained(QWEN_TOKENIZER).save_pretrained(out)
    merged = 2 * patch
    Qwen2VLImageProcessor(
        patch_size=patch, min_pixels=4 * merged * merged, max_pixels=64 * merged * merged
    ).save_pretrained(out)
    return out


def build_qwen2_vl(out: Path, *, seed: int = 0) -> Path:
    """Save a tiny random Qwen2-VL checkpoint (the same sizes as :func:`build_qwen25_vl`)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    text = dict(_TEXT, rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]})
    config = Qwen2VLConfig(
        text_config=dict(text, rope_theta=10000.0),
        vision_config={
            "depth": 2,
            "embed_dim": 64,
            "hidden_size": 64,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **_IDS,
    )
    return _save(Qwen2VLForConditionalGeneration(config), out, 14)


def build_qwen3_vl(out: Path, *, seed: int = 0) -> Path:
    """Save a tiny random Qwen3-VL checkpoint: head_dim 32, interleaved M-RoPE [8, 4, 4],
    patch 16, one deepstack layer."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen3VLConfig(
        text_config=dict(
            _TEXT,
            head_dim=32,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [8, 4, 4],
                "mrope_interleaved": True,
            },
        ),
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        **_IDS,
    )
    return _save(Qwen3VLForConditionalGeneration(config), out, 16)


def build_qwen25_vl(out: Path, *, seed: int = 0) -> Path:
    """Save a tiny random Qwen2.5-VL checkpoint (~50 MB, ~2 s) in ``out``."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    text = dict(_TEXT, rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]})
    config = Qwen2_5_VLConfig(
        text_config=dict(text, rope_theta=10000.0),
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        **_IDS,
    )
    return _save(Qwen2_5_VLForConditionalGeneration(config), out, 14)


def build_colqwen3(
    out: Path, *, seed: int = 0, embed_dim: int = 32, declare_dim: bool = True
) -> Path:
    """A tiny ColQwen3-style retrieval checkpoint: the tiny Qwen3-VL plus a trained-looking
    ``custom_text_proj`` (hidden 64 -> ``embed_dim``, with a large bias), the architecture
    named ``ColQwen3`` and (``declare_dim``) ``embed_dim`` in config.json, as published
    checkpoints have them."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    build_qwen3_vl(out, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    weights = load_file(out / "model.safetensors")
    weights["custom_text_proj.weight"] = torch.randn(embed_dim, _TEXT["hidden_size"], generator=gen)
    weights["custom_text_proj.bias"] = 3 * torch.randn(embed_dim, generator=gen)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config.update(architectures=["ColQwen3"], **({"embed_dim": embed_dim} if declare_dim else {}))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
