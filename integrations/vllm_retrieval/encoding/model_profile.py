"""``ModelProfile``: how one model's raw rows become a dense vector and token vectors.

A profile is data (pooling, prompts, ColBERT markers, projection, vision tokens) plus the
small functions that apply it; :mod:`.profiles` and :mod:`.vlm` decide the profile of a
checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = ["PROFILES", "ModelProfile", "Pooling", "ProfileKind"]

Pooling = Literal["mean", "cls", "max", "last"]
ProfileKind = Literal[
    "sentence-transformers", "colbert", "bge-m3", "jina-v4", "vlm", "colqwen", "clip"
]
PROFILES: tuple[str, ...] = get_args(ProfileKind)
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelProfile:
    """Everything the core needs to know about a model beyond its weights."""

    kind: ProfileKind
    pooling: Pooling = "mean"
    max_length: int = 512
    query_prefix: str = ""
    document_prefix: str = ""
    # ColBERT handling (kind == "colbert").
    query_marker_id: int | None = None
    document_marker_id: int | None = None
    query_length: int | None = None
    document_length: int | None = None
    mask_token_id: int | None = None
    skip_ids: frozenset[int] = field(default_factory=frozenset)
    # BGE-M3: the ColBERT head applied in the core to the raw hidden states of every token
    # but the first (CLS gives the dense vector), exactly as FlagEmbedding does.
    projection_weight: FloatArray | None = field(default=None, compare=False, repr=False)
    projection_bias: FloatArray | None = field(default=None, compare=False, repr=False)
    drop_first_token_row: bool = False
    # Overrides for vllm.LLM (e.g. serve BGE-M3 as a plain XLM-R encoder: raw hidden states).
    engine_overrides: tuple[tuple[str, Any], ...] = ()
    # Vision-language models (see vlm.py): the chat prompt of an image item, whose "{text}" is
    # the item's text (or ``image_text`` for an image alone); the vision token ids; whether an
    # image alone is represented by its vision rows only (start..end inclusive, Jina v4).
    special_tokens: bool = True  # [CLS]/[SEP] around texts (encoders); decoder VLMs add none
    image_prompt: str | None = None
    image_text: str = ""
    vision_ids: tuple[int, int, int] | None = None  # (vision_start, image_pad, vision_end)
    vision_rows_only: bool = False
    # Dual encoders (CLIP, SigLIP): the engine gives ONE vector per text or image (vLLM's
    # ``embed`` task), so there are no token vectors; texts are padded with ``pad_id`` to
    # ``max_length`` when the model was trained so (SigLIP).
    dense_only: bool = False
    pad_id: int | None = None

    @property
    def takes_images(self) -> bool:
        return self.image_prompt is not None

    @property
    def pooling_task(self) -> str:
        """vLLM's pooling task for this model's engine."""
        return "embed" if self.dense_only else "token_embed"

    def vision_span(self, ids: list[int]) -> tuple[int, int]:
        """``[start, stop)`` of the rows from ``<|vision_start|>`` to ``<|vision_end|>``."""
        assert self.vision_ids is not None
        start, _, end = self.vision_ids
        try:
            first = ids.index(start)
            last = len(ids) - 1 - ids[::-1].index(end)
        except ValueError:
            raise ValueError("the prompt has no vision tokens") from None
        return first, last + 1

    @property
    def is_colbert(self) -> bool:
        return self.kind == "colbert"

    def describe(self) -> dict[str, Any]:
        """JSON-safe description, recorded by stores so a reopen can detect a mismatch."""
        return {
            "kind": self.kind,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
            "query_length": self.query_length,
            "document_length": self.document_length,
            **(
                {
                    "image_prompt": self.image_prompt,
                    "image_text": self.image_text,
                    "vision_rows_only": self.vision_rows_only,
                    **({"dense_only": True} if self.dense_only else {}),
                }
                if self.takes_images
                else {}
            ),
        }

    # -- token ids ------------------------------------------------------------------------

    def build_ids(
        self, base_ids: list[int], *, is_query: bool, cls_id: int | None, sep_id: int | None
    ) -> list[int]:
        """Token ids for the engine from the tokenizer's ids without special tokens.

        Plain models: ``[CLS] tokens [SEP]`` truncated to ``max_length``. ColBERT models:
        ``[CLS] [Q] tokens [SEP]`` padded with ``[MASK]`` to ``query_length`` for queries, and
        ``[CLS] [D] tokens [SEP]`` truncated to ``document_length`` for documents.
        """
        head: list[int] = [cls_id] if cls_id is not None and self.special_tokens else []
        tail: list[int] = [sep_id] if sep_id is not None and self.special_tokens else []
        if self.is_colbert:
            marker = self.query_marker_id if is_query else self.document_marker_id
            if marker is not None:
                head = [*head, marker]
            limit = (self.query_length if is_query else self.document_length) or self.max_length
        else:
            limit = self.max_length
        room = max(limit - len(head) - len(tail), 0)
        ids = head + base_ids[:room] + tail
        if self.is_colbert and is_query and self.query_length and self.mask_token_id is not None:
            ids = ids + [self.mask_token_id] * (self.query_length - len(ids))
        if self.pad_id is not None:
            ids = ids + [self.pad_id] * (self.max_length - len(ids))
        return ids

    def keep_mask(self, ids: list[int], *, is_query: bool) -> npt.NDArray[np.bool_] | None:
        """Rows to keep as token vectors (None keeps all): the ColBERT document skip-list."""
        if self.is_colbert and not is_query and self.skip_ids:
            keep = np.fromiter((i not in self.skip_ids for i in ids), dtype=bool, count=len(ids))
            return keep
        return None

    # -- vectors --------------------------------------------------------------------------

    def pool(self, rows: FloatArray) -> FloatArray:
        """Dense vector from the raw rows of one text (before any row is dropped)."""
        if rows.shape[0] == 0:
            raise ValueError("cannot pool zero rows")
        vec: npt.NDArray[np.float64]
        if self.pooling == "mean":
            vec = rows.mean(axis=0, dtype=np.float64)
        elif self.pooling == "cls":
            vec = rows[0].astype(np.float64)
        elif self.pooling == "max":
            vec = rows.max(axis=0).astype(np.float64)
        else:
            vec = rows[-1].astype(np.float64)
        vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        out: FloatArray = vec.astype(np.float32)
        return out

    def token_rows(self, rows: FloatArray) -> FloatArray:
        """Token vectors from raw rows (after any row selection): projection, then L2."""
        if self.projection_weight is not None:
            rows = rows @ self.projection_weight.T
            if self.projection_bias is not None:
                rows = rows + self.projection_bias
        return self.normalize_rows(rows)

    @staticmethod
    def normalize_rows(rows: FloatArray) -> FloatArray:
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        out: FloatArray = (rows / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return out
