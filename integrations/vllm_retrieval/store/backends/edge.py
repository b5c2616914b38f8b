"""Qdrant Edge: the embedded default, a Qdrant shard in-process in ``<path>/shard``.

The manifest is ``<path>/vllm_retrieval.json`` and the token index's centroids
``<path>/token_index.npy``, both written whole to unique temporary files, fsynced, renamed
into place and the directory synced (:mod:`..files`). One process at a time holds the store
(:mod:`..locking`: ``<path>/vllm_retrieval.lock``, the holder's pid in
``<path>/vllm_retrieval.pid``); every other file is read or changed only under that lock.

Creating a store is atomic: a marker ``<path>/.vllm_retrieval.creating`` is written first,
then the shard, then the manifest (the commit point), then the marker is removed. A create
that fails removes what it made (the directory too, if it made it); one that was killed
leaves the marker, and the next open clears its leftovers and creates the store again.

Disk footprint (``benchmarks/disk.py``): Qdrant Edge truncates its WAL, and deletes the
segments an optimisation replaced (a full copy of the vectors each), only at a flush; so
:meth:`EdgeBackend.optimize` flushes, and writes flush once :data:`FLUSH_BYTES` of vectors went
into the WAL since the last flush. Writes go to the WAL in operations of about
:data:`OP_VALUES` floats, since after a flush Edge keeps its last closed WAL segment (32 MiB,
or the one entry that overflowed it): the WAL stays under ~100 MB, ~45 MB at rest.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ...errors import StoreCorruptError, StoreError, StoreLockedError, require
from ..files import atomic_write, ensure_room, fsync_dir, remove_temporaries
from ..filters import FilterFactory
from ..lexical import Bm25Settings
from ..locking import LOCK_NAME, PID_NAME, StoreLock
from ..manifest import (
    BM25,
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
from .base import QueryVectors, Scored, pid_of, run_weighted, search_params

if TYPE_CHECKING:
    from ...encoding import Encoder

__all__ = ["CENTROIDS_FILE", "CREATING", "EdgeBackend", "open_edge"]

FloatArray = npt.NDArray[np.float32]
#: Rewrites a page of stored records' vectors (by schema name) for :meth:`copy_shard`.
Convert = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
CENTROIDS_FILE = "token_index.npy"
PROJECTION_FILE = "projection.npz"
CREATING = ".vllm_retrieval.creating"
_SHARD_RE = re.compile(r"^shard(\.[0-9]+)?$")
#: Floats (token and dense vectors) per update operation: one WAL entry each, ~1.25x their
#: float32 bytes there (a document with more is an operation of its own).
OP_VALUES = 1 << 21
#: Vector bytes written since the last flush after which a write flushes (WAL bound).
FLUSH_BYTES = 32 << 20


class EdgeBackend:
    """Qdrant Edge: an in-process shard in ``<path>/shard``."""

    kind = "edge"
    shared = False

    def __init__(
        self, shard_dir: Path, manifest: StoreManifest, create: bool, lock: StoreLock
    ) -> None:
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
        self.shard_dir = shard_dir
        self.lock = lock
        self._unflushed = 0  # vector bytes in the WAL since the last flush
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
        """``token_index.npy`` beside the manifest (unique temporary file, fsynced, renamed,
        directory synced)."""
        arr = np.ascontiguousarray(centroids, dtype=np.float32)
        atomic_write(self.dir / CENTROIDS_FILE, lambda fh: np.save(fh, arr, allow_pickle=False))

    def load_centroids(self) -> FloatArray:
        try:
            arr = np.load(self.dir / CENTROIDS_FILE, allow_pickle=False)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
                raise ValueError(f"not a float32 matrix: {type(arr).__name__}")
        except Exception as exc:  # any damage is reported as such, never as a crash
            raise StoreCorruptError(f"token index centroids unreadable: {exc}") from None
        return arr

    def save_projections(self, tokens: FloatArray, dense: FloatArray) -> None:
        """``projection.npz`` beside the manifest (written like the centroids)."""
        toks = np.ascontiguousarray(tokens, dtype=np.float32)
        dense = np.ascontiguousarray(dense, dtype=np.float32)
        atomic_write(self.dir / PROJECTION_FILE, lambda fh: np.savez(fh, tokens=toks, dense=dense))

    def load_projections(self) -> tuple[FloatArray, FloatArray]:
        try:
            with np.load(self.dir / PROJECTION_FILE, allow_pickle=False) as npz:
                pair = (npz["tokens"], npz["dense"])
            if any(a.dtype != np.float32 or a.ndim != 2 for a in pair):
                raise ValueError("not two float32 matrices")
        except Exception as exc:  # any damage is reported as such, never as a crash
            raise StoreCorruptError(f"dimension-reduction projections unreadable: {exc}") from None
        return pair

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
        sparse = {CENTROIDS: qe.EdgeSparseVectorParams()} if m.sparse_vector else {}
        optimizers = None
        if m.bm25_vector:
            sparse[BM25] = qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)
            # Qdrant counts deleted points in IDF until a segment is vacuumed: let optimize()
            # vacuum after any deletion, so that IDF is exact again afterwards.
            optimizers = qe.EdgeOptimizersConfig(
                deleted_threshold=0.001, vacuum_min_vector_number=1
            )
        return qe.EdgeConfig(
            sparse_vectors=sparse or None,
            optimizers=optimizers,
            vectors={
                DENSE: qe.EdgeVectorParams(size=m.stored_dim, distance=qe.Distance.Cosine),
                TOKENS: qe.EdgeVectorParams(
                    size=m.stored_dim,
                    distance=qe.Distance.Cosine,
                    multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                    hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=0),
                    **tok_kw,
                ),
            },
        )

    # -- points ---------------------------------------------------------------------------------

    def _vectors(self, p: Point) -> dict[str, Any]:
        vec: dict[str, Any] = {DENSE: float_view(p.dense), TOKENS: row_views(p.tokens)}
        if p.sparse is not None:
            vec[CENTROIDS] = self.qe.SparseVector(*p.sparse)
        if p.bm25 is not None:
            vec[BM25] = self.qe.SparseVector(*p.bm25)
        return vec

    def upsert(self, points: list[Point]) -> None:
        qe = self.qe
        start, values = 0, 0
        for i, p in enumerate(points):
            values += p.tokens.size + p.dense.size
            if values >= OP_VALUES or i == len(points) - 1:
                ensure_room(self.dir, 4 * values)
                pts = [
                    qe.Point(id=q.pid, vector=self._vectors(q), payload=q.payload)
                    for q in points[start : i + 1]
                ]
                self.shard.update(qe.UpdateOperation.upsert_points(pts))
                self._wrote(4 * values)
                start, values = i + 1, 0

    def set_sparse(self, pids: list[PointId], sparse: list[Sparse], name: str = CENTROIDS) -> None:
        """Only the sparse vector ``name`` changes (an update-vectors operation): in place in
        an appendable segment; Qdrant copies a point of an optimised segment whole into an
        appendable one, and the next :meth:`optimize` compacts the copies."""
        qe = self.qe
        ensure_room(self.dir)  # an optimised point is copied whole, token vectors included
        ops = [
            qe.PointVectors(id=pid, vector={name: qe.SparseVector(*sp)})
            for pid, sp in zip(pids, sparse, strict=True)
        ]
        self.shard.update(qe.UpdateOperation.update_vectors(ops))
        self._wrote(8 * sum(len(sp[0]) for sp in sparse))

    def _wrote(self, nbytes: int) -> None:
        self._unflushed += nbytes
        if self._unflushed >= FLUSH_BYTES:
            self.flush()  # truncates the WAL: it stays bounded however much is written

    def add_bm25_vector(self, manifest: StoreManifest) -> StoreManifest:
        """Edge cannot add a vector to a shard: copy every point into a new shard folder
        whose schema has it (:meth:`copy_shard`)."""
        return self.copy_shard(manifest.model_copy(update={"bm25_vector": BM25}), None)

    def copy_shard(self, manifest: StoreManifest, convert: Convert | None) -> StoreManifest:
        """Copy every point into a new shard folder made with ``manifest``'s schema, each
        page of records through ``convert`` (``None``: as they are); the manifest naming the
        new folder is the commit point (a crash before leaves the old shard in use, and the
        next open removes the copy). Returns the manifest committed."""
        qe = self.qe
        n = 0 if manifest.shard == SHARD_DIR else int(manifest.shard.split(".")[1])
        new = manifest.model_copy(update={"shard": f"{SHARD_DIR}.{n + 1}"})
        target = self.dir / new.shard
        if target.exists():
            shutil.rmtree(target)
        shard = qe.EdgeShard.create(str(target), self._config(new))
        try:
            offset: Any = None
            copied = 0  # floats since the new shard's last flush (its WAL is truncated then)
            while True:
                recs, offset = self.shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=64, with_payload=True, with_vector=True)
                )
                if recs:
                    vecs = [dict(r.vector or {}) for r in recs]
                    if convert is not None:
                        vecs = convert(vecs)
                    pts = [
                        qe.Point(id=r.id, vector=v, payload=r.payload or {})
                        for r, v in zip(recs, vecs, strict=True)
                    ]
                    ensure_room(self.dir)  # the copy fails cleanly (the old shard stays)
                    shard.update(qe.UpdateOperation.upsert_points(pts))
                    copied += sum(len(v.get(TOKENS) or ()) + 1 for v in vecs)
                    if 4 * copied * new.stored_dim >= FLUSH_BYTES:
                        shard.flush()
                        copied = 0
                if offset is None or not recs:
                    break
            shard.flush()
        except BaseException:
            shard.close()
            shutil.rmtree(target, ignore_errors=True)
            raise
        self.save_manifest(new)  # the commit point
        old, self.shard, self.shard_dir = self.shard, shard, target
        old.close()
        remove_stale_shards(self.dir, new.shard)
        return new

    def vectors(
        self, pids: list[PointId], with_tokens: bool
    ) -> list[tuple[FloatArray, FloatArray | None]]:
        """Stored ``(dense [d], tokens [T, d] or None)`` of the ids found, in no set order."""
        names = [DENSE, TOKENS] if with_tokens else [DENSE]
        recs = self.shard.retrieve(pids, with_payload=False, with_vector=names)
        out: list[tuple[FloatArray, FloatArray | None]] = []
        for r in recs:
            v = r.vector or {}
            toks = np.asarray(v[TOKENS], dtype=np.float32) if with_tokens else None
            out.append((np.asarray(v[DENSE], dtype=np.float32), toks))
        return out

    def scroll_page(
        self, offset: Any, batch: int, with_tokens: bool, with_payload: bool = False
    ) -> tuple[list[Any], Any]:
        return self.shard.scroll(  # type: ignore[no-any-return]
            self.qe.ScrollRequest(
                offset=offset,
                limit=batch,
                with_payload=with_payload,
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
            pid = pid_of(r.id)
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

    def _nearest(self, s: Search, values: dict[str, Any]) -> Any:
        return self.qe.Query.Nearest(values[s.vector], using=s.vector)

    def _prefetch(self, s: Search, plan: QueryPlan, values: dict[str, Any], flt: Any) -> Any:
        return self.qe.Prefetch(
            limit=s.limit,
            query=self._nearest(s, values),
            filter=flt,
            params=self._params(s.params, plan),
            prefetches=[self._prefetch(p, plan, values, flt) for p in s.prefetch] or None,
        )

    def _values(self, vectors: QueryVectors) -> dict[str, Any]:
        qe = self.qe
        values: dict[str, Any] = {}
        for name, v in vectors.items():
            values[name] = qe.SparseVector(*v) if name in (CENTROIDS, BM25) else v.tolist()
        return values

    def _request(
        self, s: Search, plan: QueryPlan, values: dict[str, Any], flt: Any, payload: bool
    ) -> Any:
        return self.qe.QueryRequest(
            limit=s.limit,
            query=self._nearest(s, values),
            prefetches=[self._prefetch(p, plan, values, flt) for p in s.prefetch] or None,
            filter=flt,
            params=self._params(s.params, plan),
            with_payload=payload,
        )

    def query(self, plan: QueryPlan, vectors: QueryVectors, flt: Any) -> Scored:
        qe = self.qe
        top = plan.tree(token_index=CENTROIDS in vectors)
        if isinstance(top, Fuse) and top.fusion == "weighted":
            return run_weighted(self, top, plan, vectors, flt)
        values = self._values(vectors)
        if isinstance(top, Fuse):
            query = (
                qe.Fusion.Rrf(k=RRF_K, weights=list(top.weights) if top.weights else None)
                if top.fusion == "rrf"
                else qe.Fusion.Dbsf()
            )
            request = qe.QueryRequest(
                limit=top.limit,
                query=query,
                prefetches=[self._prefetch(p, plan, values, flt) for p in top.prefetch],
                filter=flt,
                with_payload=True,
            )
        else:
            request = self._request(top, plan, values, flt, payload=True)
        res = self.shard.query(request)
        return [(float(p.score), dict(p.payload or {})) for p in res]

    def query_ids(
        self, stages: tuple[Search, ...], plan: QueryPlan, vectors: QueryVectors, flt: Any
    ) -> list[list[tuple[PointId, float]]]:
        values = self._values(vectors)
        batch = self.qe.QueryBatchRequest(
            [self._request(s, plan, values, flt, payload=False) for s in stages]
        )
        return [
            [(pid_of(p.id), float(p.score)) for p in res] for res in self.shard.query_batch(batch)
        ]

    def optimize(self) -> None:
        """Run Edge's optimisers (vacuum, merge, index), then flush: Edge deletes the segments
        an optimisation replaced only at a flush (a full copy of the vectors each).

        Edge refuses to start when the disk lacks room for the segments it would rewrite (up
        to the shard's size again): a ``StoreError`` that says so; the shard is untouched."""
        try:
            self.shard.optimize()
        except Exception as exc:  # Edge raises a bare Exception ("Service runtime error: ...")
            raise StoreError(
                f"Qdrant Edge could not optimise the shard in {self.shard_dir}: {exc}. The "
                "stored documents and recorded indexes are intact and searchable. An "
                "optimisation needs free disk space for the segments it rewrites (up to the "
                "store's size): if that is what it lacked, free some and run store.optimize() "
                "again"
            ) from exc
        self.flush()

    def flush(self) -> None:
        self.shard.flush()
        self._unflushed = 0

    def close(self) -> None:
        try:
            self.shard.close()
        finally:
            self.lock.release()


def float_view(a: FloatArray) -> memoryview[float]:
    """A float32 vector (or matrix, flattened) as a 1-D ``memoryview`` of its own buffer."""
    return np.ascontiguousarray(a, dtype=np.float32).data.cast("B").cast("f")


def row_views(a: FloatArray) -> list[memoryview[float]]:
    """A ``[T, d]`` float32 matrix as T row ``memoryview``s over its buffer (no copy).

    Edge's ``Point`` takes vectors only as Python sequences of floats (its binding extracts
    ``Vec<Vec<f32>>``; numpy arrays, buffers and bytes are not read as buffers), and copies
    them into Rust while the ``Point`` is made. Row memoryviews are the cheapest such
    sequence measured (``benchmarks/ingest.py``, 1,000 SciFact abstracts, 384-d, CPU per
    token for conversion + ``Point``): 8.0 us written through the store, against 16.2 us
    for ``tolist()`` (whose Python floats all exist at once), and 4-6 against 10-11 us
    alone; a 2-D numpy array (numpy scalars, one by one) costs 13-23 us."""
    flat = float_view(a)
    d = a.shape[-1] if a.ndim == 2 else len(flat)
    return [flat[i : i + d] for i in range(0, len(flat), d)]


def open_edge(
    path: Path,
    encoder: Encoder | None,
    compression: str | None,
    dim: int | None,
    must_exist: bool,
    bm25: Bm25Settings | None = None,
    lock_timeout: float = 0.0,
    pool_factor: int | None = None,
    reduce_to: int | None = None,
) -> tuple[EdgeBackend, StoreManifest]:
    """Open (or create) the embedded store in ``path``, holding its lock; checks its settings
    on reopen (``bm25``: the BM25 settings of a new store, None for none). ``lock_timeout``:
    seconds to wait for another holder (``StoreLockedError`` after)."""
    if path.exists() and not path.is_dir():
        raise StoreCorruptError(f"{path} is not a directory")
    if not path.exists() and must_exist:
        raise FileNotFoundError(f"no vllm-retrieval store at {path}")
    _check_ours(path)  # before writing anything into a directory that is not a store
    made = _make_dirs(path)
    lock = StoreLock(path)
    try:
        lock.acquire(lock_timeout)
    except BaseException:
        _remove_made(path, made)
        raise
    try:
        layout = {"pool_factor": pool_factor, "reduce_to": reduce_to}
        return _open_locked(path, lock, encoder, compression, dim, must_exist, bm25, layout)
    except BaseException:
        if (path / MANIFEST_NAME).is_file():
            lock.release()
        else:  # nothing was created: leave nothing behind
            _remove_leftovers(path)
            lock.discard()
            _remove_made(path, made)
        raise


_OURS = (LOCK_NAME, PID_NAME, CREATING)


def _check_ours(path: Path) -> None:
    """``StoreCorruptError`` for a non-empty directory that holds neither a store nor the
    leftovers of one being created (checked again under the lock)."""
    if not path.is_dir() or (path / MANIFEST_NAME).is_file():
        return
    names = {p.name for p in path.iterdir()}
    if names and CREATING not in names and not names <= set(_OURS):
        raise StoreCorruptError(
            f"{path} is not empty and holds no {MANIFEST_NAME}: not a vllm-retrieval store"
        )


def _open_locked(
    path: Path,
    lock: StoreLock,
    encoder: Encoder | None,
    compression: str | None,
    dim: int | None,
    must_exist: bool,
    bm25: Bm25Settings | None,
    layout: dict[str, int | None],
) -> tuple[EdgeBackend, StoreManifest]:
    remove_temporaries(path, (MANIFEST_NAME, CENTROIDS_FILE, PROJECTION_FILE, PID_NAME, CREATING))
    manifest_path = path / MANIFEST_NAME
    if manifest_path.is_file():
        manifest = read_manifest_file(manifest_path)
        check_manifest(manifest, encoder, compression, dim, str(path), **layout)
        shard_dir = path / manifest.shard
        with contextlib.suppress(FileNotFoundError):
            (path / CREATING).unlink()  # a create killed after its commit point
        remove_stale_shards(path, manifest.shard)
        return _backend(path, manifest, not shard_dir.exists(), lock), manifest
    _check_ours(path)
    if must_exist:
        raise FileNotFoundError(f"no vllm-retrieval store at {path}")
    manifest = new_manifest(encoder, compression, dim, bm25, **layout)
    _remove_leftovers(path)  # of a create that was killed before its commit point
    atomic_write(path / CREATING, lambda fh: fh.write(b"vllm-retrieval store being created\n"))
    backend = _backend(path, manifest, True, lock)
    try:
        backend.shard.flush()
        write_manifest_file(manifest_path, manifest)  # the commit point
        (path / CREATING).unlink()
        fsync_dir(path)
    except BaseException:
        backend.shard.close()
        raise
    return backend, manifest


def _backend(path: Path, manifest: StoreManifest, create: bool, lock: StoreLock) -> EdgeBackend:
    try:
        return EdgeBackend(path / manifest.shard, manifest, create, lock)
    except ImportError:
        raise
    except Exception as exc:
        if "WouldBlock" in str(exc):  # Edge's WAL lock: a holder that did not take ours
            raise StoreLockedError(
                f"the store in {path} is in use by another process (its Qdrant Edge WAL is "
                "locked); close the store there",
                path=str(path),
            ) from exc
        raise StoreCorruptError(f"cannot open the Qdrant Edge shard in {path}: {exc}") from exc


def _remove_leftovers(path: Path) -> None:
    """Remove what an unfinished create made: shard folders and the creation marker."""
    if not path.is_dir() or (path / MANIFEST_NAME).is_file():
        return
    if CREATING not in {p.name for p in path.iterdir()}:
        return
    for entry in path.iterdir():
        if _SHARD_RE.match(entry.name) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (path / CREATING).unlink()
    fsync_dir(path)


def _make_dirs(path: Path) -> Path | None:
    """Create ``path`` (and parents); returns the top-most folder created (None: none)."""
    top: Path | None = None
    p = path
    while not p.exists():
        top = p
        if p.parent == p:  # pragma: no cover - the root always exists
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return top


def _remove_made(path: Path, top: Path | None) -> None:
    """Remove the (empty) folders :func:`_make_dirs` created, from ``path`` up to ``top``."""
    if top is None:
        return
    p = path
    while True:
        try:
            p.rmdir()
        except OSError:
            return
        if p == top:
            return
        p = p.parent


def remove_stale_shards(path: Path, current: str) -> None:
    """Remove shard folders other than ``current`` (copies left by an interrupted
    ``add_bm25_vector``, or the old shard after it committed)."""
    for entry in path.iterdir():
        if entry.name != current and _SHARD_RE.match(entry.name) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
