"""Dimension reduction inside the store: PCA fitted once on a sample of the stored vectors.

A store created with ``reduce_to=k`` records the wish (:class:`.reduction.ReductionSettings`,
not fitted) and stores full-width vectors until ``optimize()`` (from 1,000 documents) or
``reduce_dimensions()`` fits two projections (:class:`.reduction.Projection`, an uncentred
PCA; one for token vectors, one for dense vectors) on documents drawn at random. Then:

1. the projections are written beside the manifest (``projection.npz``, checksum in the
   manifest once committed);
2. every point is copied into a new shard whose vectors are ``k`` wide, projected and
   re-normalised (the centroid postings are dropped: the token index is rebuilt on the
   reduced vectors);
3. the manifest naming the new shard and recording the fitted projections is the commit
   point (a crash before it leaves the full-width store as it was).

Afterwards writes project documents (after pooling) and searches project queries, both under
the store's lock. The full-width vectors are gone: the reduction is fitted once, never again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import StoreCorruptError, StoreError
from .backends import EdgeBackend, StoreBackend, scroll
from .backends.edge import float_view, row_views
from .manifest import CENTROIDS, DENSE, TOKENS, StoreManifest
from .records import Point
from .reduction import Projection, ReductionSettings, projections_checksum

__all__ = ["Projections", "fit_projections", "load_projections", "reduce_store"]

FloatArray = npt.NDArray[np.float32]

#: Token vectors the token PCA is fitted on, about (whole documents drawn at random).
SAMPLE_TOKENS = 65_536
#: Dense vectors the dense PCA is fitted on, at most.
SAMPLE_DOCS = 20_000


@dataclass(frozen=True)
class Projections:
    """The fitted pair: token vectors and dense vectors, each ``[dims, d]``."""

    tokens: Projection
    dense: Projection

    def points(self, points: list[Point]) -> None:
        """Project the points' vectors in place (the points are the store's own copies)."""
        if not points:
            return
        dense = self.dense(np.stack([p.dense for p in points]))
        flat = self.tokens(np.concatenate([p.tokens for p in points]))
        bounds = np.cumsum([p.tokens.shape[0] for p in points])[:-1]
        for p, d, t in zip(points, dense, np.split(flat, bounds), strict=True):
            p.dense, p.tokens = d, t

    def query(
        self, dense: FloatArray | None, tokens: FloatArray | None
    ) -> tuple[FloatArray | None, FloatArray | None]:
        """A query's ``dense [d]`` and ``tokens [Q, d]`` projected (``None`` stays)."""
        return (
            None if dense is None else self.dense(dense[None, :])[0],
            None if tokens is None else self.tokens(tokens),
        )


def _edge(backend: StoreBackend) -> EdgeBackend:
    if not isinstance(backend, EdgeBackend):  # open_backend refuses reduce_to elsewhere
        raise StoreError("dimension reduction needs the embedded store")
    return backend


def load_projections(backend: StoreBackend, manifest: StoreManifest) -> Projections | None:
    """The recorded projections, verified against the manifest (``StoreCorruptError``)."""
    r = manifest.reduction
    if r is not None and r.method == "matryoshka":  # the first dims coordinates
        first = Projection(np.eye(r.dims, manifest.dim, dtype=np.float32))
        return Projections(first, first)
    if r is None or r.sha256 is None:
        return None
    toks, dense = _edge(backend).load_projections()
    want = (r.dims, manifest.dim)
    if toks.shape != want or dense.shape != want or projections_checksum(toks, dense) != r.sha256:
        raise StoreCorruptError(
            f"the dimension-reduction projections ({list(toks.shape)}, {list(dense.shape)}) "
            f"do not match the manifest ({r.dims} x {manifest.dim}, sha256 {r.sha256[:12]}...)"
        )
    return Projections(Projection(toks), Projection(dense))


def fit_projections(
    backend: StoreBackend,
    dims: int,
    *,
    sample_tokens: int = SAMPLE_TOKENS,
    sample_docs: int = SAMPLE_DOCS,
    seed: int = 0,
    batch: int = 256,
) -> tuple[Projections, int, int]:
    """Fit both projections on documents drawn at random; returns them and the numbers of
    token and dense vectors they were fitted on."""
    edge = _edge(backend)
    pids = [p for page, _ in scroll(edge, 4096, False) for p in page]
    if len(pids) < dims:
        raise StoreError(
            f"fitting {dims} dimensions needs at least {dims} stored documents, "
            f"this store holds {len(pids)}"
        )
    order = np.random.default_rng(seed).permutation(len(pids))[:sample_docs]
    dense: list[FloatArray] = []
    tokens: list[FloatArray] = []
    n_tokens = 0
    for s in range(0, len(order), batch):
        with_tokens = n_tokens < sample_tokens
        for d, t in edge.vectors([pids[i] for i in order[s : s + batch]], with_tokens):
            dense.append(d)
            if t is not None and len(t):
                tokens.append(t)
                n_tokens += t.shape[0]
    tok = np.concatenate(tokens)  # whole documents, drawn at random: no further sampling
    if tok.shape[0] < dims:
        raise StoreError(f"fitting {dims} dimensions needs at least {dims} stored tokens")
    dense_arr = np.stack(dense)
    fitted = Projections(
        Projection.fit(tok, dims, max_rows=tok.shape[0]),
        Projection.fit(dense_arr, dims, max_rows=dense_arr.shape[0]),
    )
    return fitted, tok.shape[0], dense_arr.shape[0]


def reduce_store(
    backend: StoreBackend,
    manifest: StoreManifest,
    projections: Projections,
    fitted: tuple[int, int],
) -> StoreManifest:
    """Save the projections, copy every point reduced into a new shard and commit (the
    returned manifest, already saved: one ``generation`` on, no token index)."""
    edge = _edge(backend)
    r = manifest.reduction
    if r is None:  # pragma: no cover - the caller checks
        raise StoreError("this store was not created with reduce_to")
    toks, dense = projections.tokens.components, projections.dense.components
    edge.save_projections(toks, dense)
    settings = ReductionSettings(
        dims=r.dims,
        sha256=projections_checksum(toks, dense),
        fitted_tokens=fitted[0],
        fitted_docs=fitted[1],
    )
    new = manifest.model_copy(
        update={
            "reduction": settings,
            "token_index": None,
            "generation": manifest.generation + 1,
        }
    )

    def convert(vecs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        mats = [np.asarray(v[TOKENS], dtype=np.float32) for v in vecs]
        flat = projections.tokens(np.concatenate(mats))
        parts = np.split(flat, np.cumsum([m.shape[0] for m in mats])[:-1])
        dense_rows = projections.dense(np.asarray([v[DENSE] for v in vecs], dtype=np.float32))
        out = []
        for v, t, d in zip(vecs, parts, dense_rows, strict=True):
            w = {k: x for k, x in v.items() if k != CENTROIDS}
            w[TOKENS], w[DENSE] = row_views(t), float_view(d)
            out.append(w)
        return out

    return edge.copy_shard(new, convert)
