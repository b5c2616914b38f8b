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

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import require

FloatArray = npt.NDArray[np.float32]

__all__ = ["Projection", "check_pool_factor", "pool_tokens"]


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
        # Right singular vectors from the d×d Gram matrix: cheap for any N.
        gram = x.T.astype(np.float64) @ x.astype(np.float64)
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
