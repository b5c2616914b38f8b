"""Qdrant Edge: the embedded default, a Qdrant shard in-process in ``<path>/shard``.

The manifest is ``<path>/vllm_retrieval.json`` and the token index's centroids
``<path>/token_index.npy``, both written whole, fsynced and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ...errors import StoreCorruptError, require
from ..filters import FilterFactory
from ..manifest import (
    CENTROIDS,
    DENSE,
    MANIFEST_NAME,
    SHARD_DIR,
    TOKENS,
    StoreManifest,
    check_manifest,
    new_manifest,
    read_manifest_file,
    write_manifest_file,
)
from ..plan import RRF_K, Fuse, Params, QueryPlan, Search
from ..records import Point, PointId, Record
from ..token_index import Sparse
from .base import Scored, search_params

if TYPE_CHECKING:
    from ...encoding import Encoder

__all__ = ["CENTROIDS_FILE", "EdgeBackend", "open_edge"]

FloatArray = npt.NDArray[np.float32]
CENTROIDS_FILE = "token_index.npy"


class EdgeBackend:
    """Qdrant Edge: an in-process shard in ``<path>/shard``."""

    kind = "edge"
    shared = False

    def __init__(self, shard_dir: Path, manifest: StoreManifest, create: bool) -> None:
        qe = require("qdrant_edge", "qdrant")
        self.qe = qe
        self.factory = FilterFactory(
            # Edge reads a Python bool as the int 0/1 (it matches integers, never booleans);
            # numpy's bool_ is not an int subclass and arrives as a JSON boolean.
            match_value=lambda k, v: qe.FieldCondition(
                key=k, match=qe.MatchValue(np.bool_(v) if isinstance(v, bool) else v)
            ),
            match_any=lambda k, vs: qe.FieldCondition(key=k, match=qe.MatchAny(vs)),
            range=lambda k, b: qe.FieldCondition(key=k, range=qe.RangeFloat(**b)),
            filter=lambda **kw: qe.Filter(**kw),
        )
        self.quantized = manifest.compression in ("int8", "binary")
        self.dir = shard_dir.parent
        if create:
            self.shard = qe.EdgeShard.create(str(shard_dir), self._config(manifest))
        else:
            self.shard = qe.EdgeShard.load(str(shard_dir))

    # -- manifest and centroids ---------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        return read_manifest_file(self.dir / MANIFEST_NAME).model_dump(mode="json")

    def save_manifest(self, manifest: StoreManifest) -> None:
        write_manifest_file(self.dir / MANIFEST_NAME, manifest)

    def save_centroids(self, centroids: FloatArray) -> None:
        """``token_index.npy`` beside the manifest (written whole, then renamed)."""
        path = self.dir / CENTROIDS_FILE
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            np.save(fh, np.ascontiguousarray(centroids, dtype=np.float32), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    def load_centroids(self) -> FloatArray:
        try:
            arr = np.load(self.dir / CENTROIDS_FILE, allow_pickle=False)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
                raise ValueError(f"not a float32 matrix: {type(arr).__name__}")
        except Exception as exc:  # any damage is reported as such, never as a crash
            raise StoreCorruptError(f"token index centroids unreadable: {exc}") from None
        return arr

    # -- schema ---------------------------------------------------------------------------------

    def _config(self, m: StoreManifest) -> Any:
        qe = self.qe
        tok_kw: dict[str, Any] = {}
        if m.compression == "fp16":
            tok_kw["datatype"] = qe.VectorStorageDatatype.Float16
        elif m.compression in ("int8", "binary"):
            # Quantised codes pinned in RAM, fp16 originals on disk for rescoring.
            tok_kw["datatype"] = qe.VectorStorageDatatype.Float16
            tok_kw["memory"] = qe.Memory.Cold
            if m.compression == "int8":
                tok_kw["quantization_config"] = qe.ScalarQuantizationConfig(
                    qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
                )
            else:
                tok_kw["quantization_config"] = qe.BinaryQuantizationConfig(
                    encoding=qe.BinaryQuantizationEncoding.TwoBits,
                    query_encoding=qe.BinaryQuantizationQueryEncoding.Scalar8Bits,
                    memory=qe.Memory.Pinned,
                )
        sparse = {CENTROIDS: qe.EdgeSparseVectorParams()} if m.sparse_vector else None
        return qe.EdgeConfig(
            sparse_vectors=sparse,
            vectors={
                DENSE: qe.EdgeVectorParams(size=m.dim, distance=qe.Distance.Cosine),
                TOKENS: qe.EdgeVectorParams(
                    size=m.dim,
                    distance=qe.Distance.Cosine,
                    multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                    hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=0),
                    **tok_kw,
                ),
            },
        )

    # -- points ---------------------------------------------------------------------------------

    def _vectors(self, p: Point) -> dict[str, Any]:
        vec: dict[str, Any] = {DENSE: p.dense, TOKENS: p.tokens}
        if p.sparse is not None:
            vec[CENTROIDS] = self.qe.SparseVector(*p.sparse)
        return vec

    def upsert(self, points: list[Point]) -> None:
        qe = self.qe
        pts = [qe.Point(id=p.pid, vector=self._vectors(p), payload=p.payload) for p in points]
        self.shard.update(qe.UpdateOperation.upsert_points(pts))

    def set_sparse(self, pids: list[PointId], sparse: list[Sparse]) -> None:
        qe = self.qe
        ops = [
            qe.PointVectors(id=pid, vector={CENTROIDS: qe.SparseVector(*sp)})
            for pid, sp in zip(pids, sparse, strict=True)
        ]
        self.shard.update(qe.UpdateOperation.update_vectors(ops))

    def scroll_page(self, offset: Any, batch: int, with_tokens: bool) -> tuple[list[Any], Any]:
        return self.shard.scroll(  # type: ignore[no-any-return]
            self.qe.ScrollRequest(
                offset=offset,
                limit=batch,
                with_payload=False,
                with_vector=[TOKENS] if with_tokens else False,
            )
        )

    def delete_ids(self, pids: list[PointId]) -> None:
        self.shard.update(self.qe.UpdateOperation.delete_points(pids))

    def delete_filter(self, flt: Any) -> None:
        self.shard.update(self.qe.UpdateOperation.delete_points_by_filter(flt))

    def retrieve(self, pids: list[PointId], with_tokens: bool) -> dict[PointId, Record]:
        recs = self.shard.retrieve(
            pids, with_payload=True, with_vector=[TOKENS] if with_tokens else False
        )
        out: dict[PointId, Record] = {}
        for r in recs:
            pid = r.id if isinstance(r.id, int) else str(r.id)
            toks = None
            if with_tokens and r.vector is not None:
                toks = np.asarray(r.vector[TOKENS], dtype=np.float32)
            out[pid] = Record(dict(r.payload or {}), toks)
        return out

    def count(self, flt: Any = None) -> int:
        return int(self.shard.count(self.qe.CountRequest(exact=True, filter=flt)))

    # -- search: the plan rendered with Edge's classes --------------------------------------

    def _params(self, kind: Params, plan: QueryPlan) -> Any:
        qe = self.qe
        return search_params(
            kind,
            plan,
            quantized=self.quantized,
            params=qe.SearchParams,
            quantization=qe.QuantizationSearchParams,
        )

    def _prefetch(self, s: Search, plan: QueryPlan, values: dict[str, Any], flt: Any) -> Any:
        return self.qe.Prefetch(
            limit=s.limit,
            query=self.qe.Query.Nearest(values[s.vector], using=s.vector),
            filter=flt,
            params=self._params(s.params, plan),
            prefetches=[self._prefetch(p, plan, values, flt) for p in s.prefetch] or None,
        )

    def query(
        self,
        plan: QueryPlan,
        dense: FloatArray | None,
        tokens: FloatArray | None,
        sparse: Sparse | None,
        flt: Any,
    ) -> Scored:
        qe = self.qe
        values: dict[str, Any] = {
            DENSE: None if dense is None else dense.tolist(),
            TOKENS: None if tokens is None else tokens.tolist(),
            CENTROIDS: None if sparse is None else qe.SparseVector(*sparse),
        }
        top = plan.tree(token_index=sparse is not None)
        query: Any
        if isinstance(top, Fuse):
            query = qe.Fusion.Rrf(k=RRF_K) if top.fusion == "rrf" else qe.Fusion.Dbsf()
            params = None
        else:
            query = qe.Query.Nearest(values[top.vector], using=top.vector)
            params = self._params(top.params, plan)
        res = self.shard.query(
            qe.QueryRequest(
                limit=top.limit,
                query=query,
                prefetches=[self._prefetch(p, plan, values, flt) for p in top.prefetch] or None,
                filter=flt,
                params=params,
                with_payload=True,
            )
        )
        return [(float(p.score), dict(p.payload or {})) for p in res]

    def optimize(self) -> None:
        self.shard.optimize()

    def flush(self) -> None:
        self.shard.flush()

    def close(self) -> None:
        self.shard.close()


def open_edge(
    path: Path,
    encoder: Encoder | None,
    compression: str | None,
    dim: int | None,
    must_exist: bool,
) -> tuple[EdgeBackend, StoreManifest]:
    """Open (or create) the embedded store in ``path``; checks its settings on reopen."""
    manifest_path = path / MANIFEST_NAME
    shard_dir = path / SHARD_DIR
    if path.exists() and not path.is_dir():
        raise StoreCorruptError(f"{path} is not a directory")
    if manifest_path.is_file():
        manifest = read_manifest_file(manifest_path)
        check_manifest(manifest, encoder, compression, dim, str(path))
        create = not shard_dir.exists()
    else:
        if path.is_dir() and any(path.iterdir()):
            raise StoreCorruptError(
                f"{path} is not empty and holds no {MANIFEST_NAME}: not a vllm-retrieval store"
            )
        if must_exist:
            raise FileNotFoundError(f"no vllm-retrieval store at {path}")
        manifest = new_manifest(encoder, compression, dim)
        path.mkdir(parents=True, exist_ok=True)
        # The manifest goes first: a crash before the shard exists leaves an empty store.
        write_manifest_file(manifest_path, manifest)
        create = True
    try:
        return EdgeBackend(shard_dir, manifest, create), manifest
    except ImportError:
        raise
    except Exception as exc:
        raise StoreCorruptError(f"cannot open the Qdrant Edge shard in {path}: {exc}") from exc
