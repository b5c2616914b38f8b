"""Smaller token indexes: hierarchical token pooling and a fitted linear projection (PCA).

* :func:`pool_tokens` — PyLate's hierarchical token pooling: each document's token vectors
  (after ``protected`` leading ones, kept as they are) are clustered by Ward linkage
  (SciPy) into ``max(T // pool_factor, 1)`` clusters, and each cluster is replaced by the
  mean of its vectors. Queries are never pooled. Pool factor 2 halves the stored tokens.
* :class:`Projection` — an uncentred PCA (the top right singular vectors of a sample of the
  stored vectors): ``x ↦ x Pᵀ`` keeps the dot products MaxSim sums as well as any rank-``k``
  linear map can, and is applied to documents at write time and to queries at search time.
  Vectors are re-normalised after projection (the store's vectors are unit-length).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ..errors import require

FloatArray = npt.NDArray[np.float32]

__all__ = [
    "Projection",
    "ReductionSettings",
    "check_pool_factor",
    "check_reduce_to",
    "pool_tokens",
    "projections_checksum",
]


class ReductionSettings(BaseModel):
    """Dimension reduction recorded in the store manifest (the projections live beside it).

    Asked for when the store is created (``reduce_to``). ``pca``: fitted once, at
    ``optimize()`` (or ``reduce_dimensions()``), on a sample of the stored vectors: until then
    the store holds full-width vectors, afterwards ``dims``-wide ones (the full-width ones are
    gone). ``matryoshka`` (the encoder's model declares that width in its config): the first
    ``dims`` coordinates, re-normalised, from the first write on; nothing is fitted.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["pca", "matryoshka"] = "pca"
    dims: int = Field(gt=0, description="Width of the stored vectors once fitted.")
    sha256: str | None = Field(
        default=None,
        description="Checksum of the fitted projections (None: not fitted yet, the stored "
        "vectors are full-width).",
    )
    fitted_tokens: int = Field(default=0, ge=0, description="Token vectors the PCA saw.")
    fitted_docs: int = Field(default=0, ge=0, description="Dense vectors the PCA saw.")

    @property
    def fitted(self) -> bool:
        """Whether stored vectors are ``dims`` wide (always for Matryoshka truncation)."""
        return self.method == "matryoshka" or self.sha256 is not None


def check_reduce_to(reduce_to: Any) -> int:
    """``reduce_to`` itself if it is an int ``>= 1``, else ``ValueError``."""
    if isinstance(reduce_to, bool) or not isinstance(reduce_to, int) or reduce_to < 1:
        raise ValueError(f"reduce_to must be an int >= 1, got {reduce_to!r}")
    return reduce_to


def projections_checksum(tokens: FloatArray, dense: FloatArray) -> str:
    """SHA-256 of the token then the dense projection matrix (float32, C order)."""
    h = hashlib.sha256()
    for arr in (tokens, dense):
        h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return h.hexdigest()


def check_pool_factor(pool_factor: Any) -> int:
    """``pool_factor`` itself if it is an int ``>= 1``, else ``ValueError``."""
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, int) or pool_factor < 1:
        raise ValueError(f"pool_factor must be an int >= 1, got {pool_factor!r}")
    return pool_factor


def pool_tokens(
    tokens: Sequence[FloatArray], pool_factor: int, *, protected: int = 1
) -> list[FloatArray]:
    """Each document's token vectors pooled to about ``T / pool_factor`` vectors.

    ``protected`` leading vectors (the ``[CLS]``/``[D]`` position) are kept unpooled;
    a document of ``protected + 1`` vectors or fewer is returned as it is. ``pool_factor=1``
    returns the inputs unchanged. The input arrays are never modified.
    """
    factor = check_pool_factor(pool_factor)
    if isinstance(protected, bool) or not isinstance(protected, int) or protected < 0:
        raise ValueError(f"protected must be an int >= 0, got {protected!r}")
    if factor == 1:
        return [np.asarray(t, dtype=np.float32) for t in tokens]
    hierarchy = require("scipy.cluster.hierarchy", "qdrant")
    out: list[FloatArray] = []
    for doc in tokens:
        mat = np.asarray(doc, dtype=np.float32)
        if mat.ndim != 2:
            raise ValueError(f"token matrices must be 2-D, got shape {mat.shape}")
        head, rest = mat[:protected], mat[protected:]
        n = rest.shape[0]
        clusters = max(n // factor, 1)
        if n <= 1 or clusters >= n:
            out.append(mat.copy())
            continue
        links = hierarchy.linkage(rest, method="ward")
        labels = hierarchy.fcluster(links, t=clusters, criterion="maxclust") - 1
        count = int(labels.max()) + 1
        member = np.zeros((count, n), dtype=np.float32)  # cluster × token membership
        member[labels, np.arange(n)] = 1.0
        member /= member.sum(axis=1, keepdims=True)
        out.append(np.concatenate([head, member @ rest]))
    return out


class Projection:
    """A rank-``dims`` linear projection fitted on a sample of vectors (uncentred PCA)."""

    def __init__(self, components: npt.ArrayLike) -> None:
        comp = np.asarray(components, dtype=np.float32)
        if comp.ndim != 2 or comp.shape[0] < 1 or comp.shape[0] > comp.shape[1]:
            raise ValueError(f"components must be [dims, d] with dims <= d, got {comp.shape}")
        if not np.isfinite(comp).all():
            raise ValueError("components contain NaN or inf")
        self.components = np.ascontiguousarray(comp)

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @property
    def source_dim(self) -> int:
        return int(self.components.shape[1])

    @classmethod
    def fit(
        cls, sample: npt.ArrayLike, dims: int, *, max_rows: int = 200_000, seed: int = 0
    ) -> Projection:
        """Fit on ``sample`` ``[N, d]`` (at most ``max_rows`` rows, drawn with ``seed``)."""
        x = np.asarray(sample, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"the sample must be [N, d], got shape {x.shape}")
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= x.shape[1]:
            raise ValueError(f"dims must be an int in [1, {x.shape[1]}], got {dims!r}")
        if x.shape[0] < dims:
            raise ValueError(f"need at least {dims} sample vectors to fit {dims} dims")
        if x.shape[0] > max_rows:
            rows = np.random.default_rng(seed).choice(x.shape[0], max_rows, replace=False)
            x = x[np.sort(rows)]
        # Right singular vectors from the d×d Gram matrix: cheap for any N (a float32 GEMM,
        # in blocks of 65,536 rows summed in float64; the eigensolver in float64).
        gram = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
        for s in range(0, x.shape[0], 1 << 16):
            block = np.ascontiguousarray(x[s : s + (1 << 16)])
            gram += block.T @ block
        values, vectors = np.linalg.eigh(gram)
        order = np.argsort(values)[::-1][:dims]
        return cls(vectors[:, order].T)

    def __call__(self, vectors: npt.ArrayLike) -> FloatArray:
        """Project ``[n, d]`` vectors to ``[n, dims]`` and re-normalise each row."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.source_dim:
            raise ValueError(f"expected [n, {self.source_dim}] vectors, got shape {x.shape}")
        y = x @ self.components.T
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return np.asarray(y / np.maximum(norms, 1e-12), dtype=np.float32)
