"""What goes in and out of the store: ids, texts, metadata and vectors, validated as points.

Everything a write carries is checked here before the first byte is written, so a bad call
leaves the store unchanged. String ids become UUIDv5 point ids (ints are used as they are);
the caller's id, type preserved, travels in the payload and comes back in every result.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..encoding import check_texts
from ..errors import StoreError, StoreMismatchError
from .token_index import Sparse

__all__ = [
    "DocId",
    "DuplicateIdError",
    "Point",
    "PointId",
    "Record",
    "SearchHit",
    "check_dense",
    "check_ids",
    "check_metadatas",
    "check_positive",
    "check_texts",
    "check_tokens",
    "hit",
    "make_points",
    "point_id",
    "point_ids",
    "prepare",
]

FloatArray = npt.NDArray[np.float32]
DocId = str | int
PointId = int | str
_ID_NAMESPACE = uuid.UUID("6f1c0a52-3a43-5b8e-9d0e-6c1b1f0f7d21")
_MAX_INT_ID = 2**63 - 1


class DuplicateIdError(StoreError, ValueError):
    """The same id appears more than once in one ``add_*`` call."""


@dataclass(frozen=True)
class SearchHit:
    """One search result: the caller's id, the score, the text and the metadata."""

    id: str | int
    score: float
    text: str
    metadata: dict[str, Any]


@dataclass
class Point:
    """One document as written: point id, vectors and payload (``sparse``: token-index
    postings, ``bm25``: the BM25 document vector, each when the store has it)."""

    pid: PointId
    dense: FloatArray
    tokens: FloatArray
    payload: dict[str, Any]
    sparse: Sparse | None = None
    bm25: Sparse | None = None


@dataclass
class Record:
    """One document as read back: its payload and (when asked) its token vectors."""

    payload: dict[str, Any]
    tokens: FloatArray | None


def hit(payload: dict[str, Any], score: float, doc_id: DocId = "") -> SearchHit:
    """A result from a stored payload (``{"text", "metadata", "doc_id"}``)."""
    return SearchHit(
        id=payload.get("doc_id", doc_id),
        score=score,
        text=str(payload.get("text", "")),
        metadata=dict(payload.get("metadata") or {}),
    )


def point_id(doc_id: Any) -> PointId:
    """The Qdrant point id of a caller's id (``TypeError``/``ValueError`` for a bad one)."""
    if isinstance(doc_id, bool) or not isinstance(doc_id, (int, str)):
        raise TypeError(f"ids must be str or int, got {type(doc_id).__name__}: {doc_id!r}")
    if isinstance(doc_id, int):
        if not 0 <= doc_id <= _MAX_INT_ID:
            raise ValueError(f"int ids must be in [0, 2**63), got {doc_id}")
        return doc_id
    if doc_id == "":
        raise ValueError("ids must not be empty strings")
    return str(uuid.uuid5(_ID_NAMESPACE, doc_id))


def point_ids(ids: Any) -> list[PointId]:
    """The point ids of a list of the caller's ids."""
    if isinstance(ids, (str, bytes, int)):
        raise TypeError("ids must be a list of str or int")
    return [point_id(doc_id) for doc_id in ids]


def check_ids(ids: Any, n: int | None, what: str = "ids") -> list[DocId]:
    if isinstance(ids, (str, bytes, int)):
        raise TypeError(f"{what} must be a list of str or int, not a single {type(ids).__name__}")
    out = list(ids)
    if n is not None and len(out) != n:
        raise ValueError(f"got {len(out)} {what} for {n} texts")
    seen: set[tuple[type, DocId]] = set()
    for doc_id in out:
        point_id(doc_id)
        key = (type(doc_id), doc_id)
        if key in seen:
            raise DuplicateIdError(f"id {doc_id!r} appears more than once in one call")
        seen.add(key)
    return out


def check_metadatas(metadatas: Any, n: int) -> list[dict[str, Any]]:
    if metadatas is None:
        return [{} for _ in range(n)]
    if isinstance(metadatas, Mapping):
        raise TypeError("metadatas must be a list of dicts (one per text), not a single dict")
    out = list(metadatas)
    if len(out) != n:
        raise ValueError(f"got {len(out)} metadatas for {n} texts")
    clean: list[dict[str, Any]] = []
    for i, meta in enumerate(out):
        if meta is None:
            clean.append({})
            continue
        if not isinstance(meta, Mapping):
            raise TypeError(f"metadatas[{i}] must be a dict, got {type(meta).__name__}")
        for key in meta:
            if not isinstance(key, str):
                raise TypeError(f"metadatas[{i}] has a non-str key {key!r}")
        try:
            clean.append(json.loads(json.dumps(dict(meta), allow_nan=False)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadatas[{i}] is not JSON-serialisable: {exc}") from None
    return clean


def check_dense(dense: Any, n: int, dim: int | None) -> FloatArray:
    arr = np.asarray(dense, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"dense vectors must have shape [{n}, d], got {list(arr.shape)}")
    if dim is not None and arr.shape[1] != dim:
        raise StoreMismatchError(f"dense vectors have {arr.shape[1]} dims, the store has {dim}")
    if not np.isfinite(arr).all():
        raise ValueError("dense vectors contain NaN or inf")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if n and (norms == 0).any():
        raise ValueError("a dense vector is all zeros (cosine is undefined)")
    # Stored L2-normalised whatever the backend (a Qdrant server normalises cosine vectors,
    # qdrant-client's local mode does not): scores and get_tokens agree everywhere.
    return arr / norms if n else arr


def check_tokens(tokens: Any, n: int, dim: int) -> list[FloatArray]:
    if isinstance(tokens, np.ndarray) and tokens.ndim == 2:
        raise TypeError("tokens must be a list of [T_i, d] arrays, one per document")
    out = list(tokens)
    if len(out) != n:
        raise ValueError(f"got {len(out)} token matrices for {n} documents")
    clean: list[FloatArray] = []
    for i, tok in enumerate(out):
        arr = np.asarray(tok, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"tokens[{i}] must have shape [T>0, d], got {list(arr.shape)}")
        if arr.shape[1] != dim:
            raise StoreMismatchError(f"tokens[{i}] have {arr.shape[1]} dims, the store has {dim}")
        if not np.isfinite(arr).all():
            raise ValueError(f"tokens[{i}] contain NaN or inf")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"tokens[{i}] has an all-zero row (cosine is undefined)")
        clean.append(arr / norms)
    return clean


def check_positive(k: Any, what: str = "k") -> int:
    """``k`` as a positive int (``TypeError`` for non-ints and bools, ``ValueError`` for <= 0)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"{what} must be > 0, got {k}")
    return int(k)


def prepare(
    texts: Any, metadatas: Any, ids: Any, *, allow_empty: bool
) -> tuple[list[str], list[dict[str, Any]], list[DocId]]:
    """Validated texts, metadata (JSON-safe copies) and ids (new UUID4 strings if None)."""
    items = check_texts(texts, allow_empty=allow_empty)
    metas = check_metadatas(metadatas, len(items))
    if ids is None:
        doc_ids: list[DocId] = [str(uuid.uuid4()) for _ in items]
    else:
        doc_ids = check_ids(ids, len(items))
    return items, metas, doc_ids


def make_points(
    texts: list[str],
    dense: FloatArray,
    tokens: list[FloatArray],
    metas: list[dict[str, Any]],
    doc_ids: list[DocId],
) -> list[Point]:
    """One point per document; the payload keeps the caller's id, type preserved."""
    return [
        Point(
            point_id(doc_id),
            dense[i],
            tokens[i],
            {"text": texts[i], "metadata": metas[i], "doc_id": doc_id},
        )
        for i, doc_id in enumerate(doc_ids)
    ]
