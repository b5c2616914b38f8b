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
from ..manifest import TOKENS, StoreManifest
from ..plan import Params, QueryPlan
from ..records import Point, PointId, Record
from ..token_index import Sparse

__all__ = ["Scored", "StoreBackend", "scroll", "search_params"]

FloatArray = npt.NDArray[np.float32]
Scored = list[tuple[float, dict[str, Any]]]


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

    def set_sparse(self, pids: list[PointId], sparse: list[Sparse]) -> None: ...

    def scroll_page(self, offset: Any, batch: int, with_tokens: bool) -> tuple[list[Any], Any]:
        """One page of points (``.id``, ``.vector[TOKENS]`` if asked) and the next offset."""
        ...

    def delete_ids(self, pids: list[PointId]) -> None: ...

    def delete_filter(self, flt: Any) -> None: ...

    def retrieve(self, pids: list[PointId], with_tokens: bool) -> dict[PointId, Record]: ...

    def count(self, flt: Any = None) -> int: ...

    def query(
        self,
        plan: QueryPlan,
        dense: FloatArray | None,
        tokens: FloatArray | None,
        sparse: Sparse | None,
        flt: Any,
    ) -> Scored:
        """Run ``plan.tree(token_index=sparse is not None)``: ``(score, payload)`` best first."""
        ...

    def optimize(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def scroll(
    backend: StoreBackend, batch: int, with_tokens: bool
) -> Iterator[tuple[list[PointId], list[FloatArray]]]:
    """Every point of the store, ``batch`` at a time: ids and (if asked) token vectors."""
    offset: Any = None
    while True:
        recs, offset = backend.scroll_page(offset, batch, with_tokens)
        if recs:
            pids = [r.id if isinstance(r.id, int) else str(r.id) for r in recs]
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
