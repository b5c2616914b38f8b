"""The seam between the store and a Qdrant engine: the ``StoreBackend`` protocol.

Both backends hold the same schema (:mod:`..manifest`) and render the same
:class:`~vllm_retrieval.store.plan.QueryPlan`; the store never branches on which one it has.
A new engine is a new module implementing this protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..filters import FilterFactory
from ..manifest import CENTROIDS, TOKENS, StoreManifest
from ..plan import Fuse, Params, QueryPlan, Search, Stage, weighted_fusion
from ..records import Point, PointId, Record
from ..token_index import Sparse

__all__ = [
    "QueryVectors",
    "Scored",
    "StoreBackend",
    "pid_of",
    "run_weighted",
    "scroll",
    "search_params",
]

FloatArray = npt.NDArray[np.float32]
Scored = list[tuple[float, dict[str, Any]]]
#: The query's vectors by schema name: DENSE ``[d]``, TOKENS ``[Q, d]``, CENTROIDS and BM25
#: sparse ``(indices, values)``; a name is absent when the plan does not search it.
QueryVectors = dict[str, Any]


class StoreBackend(Protocol):
    """What the store needs from Qdrant (embedded Edge, or a server through qdrant-client)."""

    kind: str  # "edge" or "client"
    factory: FilterFactory  # renders parsed filters with this backend's classes
    #: Other processes may change the manifest (a server): re-read it before writes/searches.
    shared: bool

    def read_manifest(self) -> dict[str, Any] | None:
        """The recorded manifest as JSON (None: there is no store yet)."""
        ...

    def save_manifest(self, manifest: StoreManifest) -> None: ...

    def save_centroids(self, centroids: FloatArray) -> None: ...

    def load_centroids(self) -> FloatArray:
        """The token index's centroids (``StoreCorruptError`` if missing or damaged)."""
        ...

    def upsert(self, points: list[Point]) -> None:
        """Write points; durable when this returns."""
        ...

    def set_sparse(self, pids: list[PointId], sparse: list[Sparse], name: str = CENTROIDS) -> None:
        """Set the sparse vector ``name`` (CENTROIDS or BM25) of existing points."""
        ...

    def add_bm25_vector(self, manifest: StoreManifest) -> StoreManifest:
        """Add the BM25 sparse vector (IDF modifier) to an older schema; returns the manifest
        recording it, already saved (an embedded shard is copied into a new folder and the
        manifest naming it is the commit point)."""
        ...

    def scroll_page(
        self, offset: Any, batch: int, with_tokens: bool, with_payload: bool = False
    ) -> tuple[list[Any], Any]:
        """One page of points (``.id``, ``.vector[TOKENS]`` / ``.payload`` if asked) and the
        next offset."""
        ...

    def delete_ids(self, pids: list[PointId]) -> None: ...

    def delete_filter(self, flt: Any) -> None: ...

    def retrieve(self, pids: list[PointId], with_tokens: bool) -> dict[PointId, Record]: ...

    def count(self, flt: Any = None) -> int: ...

    def query(self, plan: QueryPlan, vectors: QueryVectors, flt: Any) -> Scored:
        """Run ``plan.tree(token_index=CENTROIDS in vectors)``: ``(score, payload)`` best
        first (a ``"weighted"`` fusion through :func:`run_weighted`)."""
        ...

    def query_ids(
        self, stages: tuple[Search, ...], plan: QueryPlan, vectors: QueryVectors, flt: Any
    ) -> list[list[tuple[PointId, float]]]:
        """Each stage as its own query (one batch): ``(point id, score)`` best first."""
        ...

    def optimize(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def pid_of(point_id: Any) -> PointId:
    """A point id as the store keys it (int, or the UUID as a string)."""
    return point_id if isinstance(point_id, int) else str(point_id)


def run_weighted(
    backend: StoreBackend, top: Stage, plan: QueryPlan, vectors: QueryVectors, flt: Any
) -> Scored:
    """A ``"weighted"`` fusion: the lists from Qdrant (one batch), fused by
    :func:`~vllm_retrieval.store.plan.weighted_fusion`, then the winners' payloads."""
    assert isinstance(top, Fuse)
    lists = backend.query_ids(top.prefetch, plan, vectors, flt)
    fused = weighted_fusion(lists, top.weights, top.limit)
    found = backend.retrieve([pid for pid, _ in fused], with_tokens=False)
    return [(score, found[pid].payload) for pid, score in fused if pid in found]


def scroll(
    backend: StoreBackend, batch: int, with_tokens: bool
) -> Iterator[tuple[list[PointId], list[FloatArray]]]:
    """Every point of the store, ``batch`` at a time: ids and (if asked) token vectors."""
    offset: Any = None
    while True:
        recs, offset = backend.scroll_page(offset, batch, with_tokens)
        if recs:
            pids = [pid_of(r.id) for r in recs]
            toks = (
                [np.asarray(r.vector[TOKENS], dtype=np.float32) for r in recs]
                if with_tokens
                else []
            )
            yield pids, toks
        if offset is None or not recs:
            return


def search_params(
    kind: Params, plan: QueryPlan, *, quantized: bool, params: Any, quantization: Any
) -> Any:
    """A stage's search parameters, built with a backend's ``SearchParams`` and
    ``QuantizationSearchParams`` classes (the same keywords in Qdrant Edge and qdrant-client).

    Quantised stores score exhaustive MaxSim and reranks on the originals (codes ignored) and
    deep MaxSim lists on the codes, rescored with 4x oversampling.
    """
    if kind is None:
        return None
    if kind == "dense":
        return params(hnsw_ef=max(plan.candidates, 64))
    if not quantized:
        return None
    if kind == "exact":
        return params(exact=True, quantization=quantization(ignore=True))
    if kind == "rerank":
        return params(quantization=quantization(ignore=True))
    return params(quantization=quantization(rescore=True, oversampling=4.0))
