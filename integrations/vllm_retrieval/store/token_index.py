"""Centroid postings: token-level MaxSim candidate generation (PLAID's first stage) in Qdrant.

A mean-pooled dense vector is a weak candidate generator for MaxSim: two documents with the
same topic have nearly the same mean while MaxSim rewards the exact tokens a query shares with
each. The token index clusters the stored token vectors with k-means (faiss, spherical) and
indexes every document by the *set of centroids its tokens fall in*, as a Qdrant sparse vector
(Qdrant's inverted index; nothing here is a database). A query token probes its ``nprobe``
nearest centroids; the sparse query vector weights each probed centroid by the summed
similarity of the query tokens that probe it, so a document's sparse score is
``sum_i sum_{c in doc, c probed by i} q_i . c``: for ``nprobe=1`` exactly the centroid
approximation of MaxSim, ``sum_i [c_i in doc] q_i . c_i``; for larger ``nprobe`` it can count
several centroids of one query token (a candidate generator, not a score). The store
prefetches the best ``candidates`` by this score (next to the dense prefetch) and reranks
their union with exact MaxSim on the stored vectors.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ..errors import StoreError, require

__all__ = [
    "MIN_DOCS",
    "CentroidIndex",
    "Sparse",
    "TokenIndexSettings",
    "checksum",
    "default_centroids",
    "describe",
    "postings",
    "train_from_documents",
]

FloatArray = npt.NDArray[np.float32]
Sparse = tuple[list[int], list[float]]

# Below this many stored documents `optimize()` does not build the index (exhaustive
# reranking of a dense prefetch is already near-exact on small collections).
MIN_DOCS = 1000


class TokenIndexSettings(BaseModel):
    """The token index recorded in the store manifest (the centroids live beside it)."""

    model_config = ConfigDict(extra="forbid")

    centroids: int = Field(gt=0, description="Number of k-means centroids.")
    nprobe: int = Field(gt=0, description="Centroids probed per query token.")
    sha256: str = Field(description="Checksum of the float32 centroid matrix (C order).")
    trained_tokens: int = Field(ge=0, description="Token vectors the k-means was trained on.")
    indexed_tokens: int = Field(ge=0, description="Token vectors stored when it was built.")


def default_centroids(n_tokens: int) -> int:
    """``2^floor(log2(2 sqrt(T)))`` for T stored tokens, within [64, 8192] (PLAID uses 16 sqrt
    T; fewer centroids keep training and assignment cheap on a CPU).

    The build's arithmetic grows with K: assigning every token costs ``T * K * 2d`` FLOPs
    (10 M tokens, K=4096, d=384: 3.1e13, minutes on two cores) and k-means on the default
    ``64 K`` sample ``64 K^2 * 2d`` per iteration (12 iterations)."""
    k = 2 ** math.floor(math.log2(max(2.0 * math.sqrt(max(n_tokens, 1)), 1.0)))
    return int(min(8192, max(64, k)))


def checksum(centroids: FloatArray) -> str:
    return hashlib.sha256(np.ascontiguousarray(centroids, dtype=np.float32).tobytes()).hexdigest()


class CentroidIndex:
    """Unit-norm centroids ``[K, d]`` with nearest-centroid search (faiss inner product)."""

    def __init__(self, centroids: FloatArray) -> None:
        arr = np.ascontiguousarray(centroids, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] == 0 or not np.isfinite(arr).all():
            raise ValueError(f"centroids must be a finite [K>0, d] matrix, got {list(arr.shape)}")
        self.centroids = arr
        faiss = require("faiss", "qdrant")
        self._index = faiss.IndexFlatIP(arr.shape[1])
        self._index.add(arr)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def train(cls, sample: FloatArray, k: int, *, seed: int = 0, niter: int = 12) -> CentroidIndex:
        """Spherical k-means on ``sample`` (L2-normalised token vectors)."""
        faiss = require("faiss", "qdrant")
        x = np.ascontiguousarray(sample, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0 or k < 1:
            raise ValueError(f"need k >= 1 and a [n>0, d] sample, got k={k}, {list(x.shape)}")
        k = int(min(k, x.shape[0]))  # at most one centroid per sampled token
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=niter,
            seed=seed,
            spherical=True,
            max_points_per_centroid=max(64, -(-x.shape[0] // k)),
            verbose=False,
        )
        km.train(x)
        cents = np.asarray(km.centroids, dtype=np.float32)
        cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
        return cls(cents)

    def nearest(self, flat: FloatArray, chunk: int = 1 << 16) -> npt.NDArray[np.int64]:
        """The nearest centroid of every row of ``flat`` ``[n, d]`` (faiss, ``chunk`` rows
        per search: one BLAS product each, the GIL released)."""
        x = np.ascontiguousarray(flat, dtype=np.float32)
        out = np.empty(x.shape[0], dtype=np.int64)
        for s in range(0, x.shape[0], chunk):
            _, ids = self._index.search(x[s : s + chunk], 1)
            out[s : s + chunk] = ids[:, 0]
        return out

    def assign_flat(
        self, flat: FloatArray, lengths: Sequence[int] | npt.NDArray[Any]
    ) -> list[Sparse]:
        """:meth:`assign` of documents given as one ``[sum(lengths), d]`` matrix."""
        return postings(self.nearest(flat), lengths, self.k)

    def assign(self, tokens: Sequence[FloatArray]) -> list[Sparse]:
        """Each document's sparse vector: its distinct nearest centroids, weight 1."""
        if not tokens:
            return []
        flat = np.concatenate([np.asarray(t, dtype=np.float32) for t in tokens])
        return self.assign_flat(flat, [t.shape[0] for t in tokens])

    def probe(self, query_tokens: FloatArray, nprobe: int) -> Sparse:
        """The sparse query: probed centroids, each weighted by the summed positive
        similarity of the query tokens that probe it."""
        q = np.ascontiguousarray(query_tokens, dtype=np.float32)
        sims, ids = self._index.search(q, int(min(nprobe, self.k)))
        keep = (ids >= 0) & (sims > 0)
        keys, slot = np.unique(ids[keep], return_inverse=True)
        weights = np.bincount(slot, weights=sims[keep].astype(np.float64), minlength=keys.size)
        return keys.tolist(), weights.tolist()


def postings(
    nearest: npt.NDArray[Any], lengths: Sequence[int] | npt.NDArray[Any], k: int
) -> list[Sparse]:
    """Per document (``lengths`` consecutive rows of ``nearest`` each), its distinct
    centroids in increasing order, weight 1: one sort of (document, centroid) keys, no
    per-document numpy call."""
    lens = np.asarray(lengths, dtype=np.int64)
    doc = np.repeat(np.arange(lens.size, dtype=np.int64), lens)
    keys = np.unique(doc * k + np.asarray(nearest, dtype=np.int64))
    bounds = np.searchsorted(keys // k, np.arange(lens.size + 1, dtype=np.int64)).tolist()
    cents = (keys % k).tolist()
    return [(cents[a:b], [1.0] * (b - a)) for a, b in itertools.pairwise(bounds)]


def describe(index: CentroidIndex, nprobe: int, trained: int, indexed: int) -> TokenIndexSettings:
    """The manifest record of a freshly built index."""
    return TokenIndexSettings(
        centroids=index.k,
        nprobe=nprobe,
        sha256=checksum(index.centroids),
        trained_tokens=trained,
        indexed_tokens=indexed,
    )


def train_from_documents(
    ids: Sequence[Any],
    fetch: Callable[[list[Any]], list[FloatArray | None]],
    *,
    centroids: int | None,
    sample_tokens: int | None,
    seed: int,
    batch: int,
) -> tuple[CentroidIndex, int]:
    """Train on whole documents drawn in random order; returns the index and tokens trained on.

    ``fetch(ids)`` gives the token vectors of a batch of document ids. Documents are drawn
    until ``sample_tokens`` tokens (default ``64 * centroids``); ``centroids`` defaults to
    :func:`default_centroids` of the stored tokens, estimated from the documents drawn.
    """
    order = np.random.default_rng(seed).permutation(len(ids))
    sample: list[FloatArray] = []
    trained = 0
    want = sample_tokens or 64 * (centroids or 8192)
    for s in range(0, len(order), batch):
        toks = [
            t for t in fetch([ids[i] for i in order[s : s + batch]]) if t is not None and len(t)
        ]
        sample.extend(toks)
        trained += sum(t.shape[0] for t in toks)
        if centroids is None and sample:  # the default size follows the estimate
            est = trained / len(sample) * len(ids)
            want = sample_tokens or 64 * default_centroids(int(est))
        if trained >= want:
            break
    if not sample:
        raise StoreError("the store holds no token vectors to build a token index from")
    k = centroids or default_centroids(int(trained / len(sample) * len(ids)))
    flat = np.concatenate(sample)
    del sample
    if flat.shape[0] > want:
        pick = np.random.default_rng(seed).choice(flat.shape[0], size=want, replace=False)
        flat = flat[np.sort(pick)]
    return CentroidIndex.train(flat, k, seed=seed), int(flat.shape[0])
