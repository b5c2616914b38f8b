"""``MultiVectorStore``: dense + ColBERT token vectors in Qdrant (embedded Edge or a server).

Qdrant is the storage engine; this module only maps the project's API onto it:

* **Embedded (default)**: ``MultiVectorStore(path="./idx", encoder=enc)`` keeps a Qdrant Edge
  shard (``qdrant-edge-py``, the Qdrant engine in-process with its WAL) in ``idx/shard`` and
  the store's settings in ``idx/vllm_retrieval.json`` (plain JSON; nothing in the directory is
  ever unpickled or executed).
* **Server / cluster**: ``MultiVectorStore(url=..., api_key=..., collection="docs")`` uses
  ``qdrant-client``; the settings live in the collection's metadata. ``location=":memory:"``
  or ``client_path=...`` use qdrant-client's local mode (same API, for tests).

Both backends have the same schema: a named dense vector ``"dense"`` (cosine, HNSW), a named
multivector ``"colbert"`` (cosine, MaxSim comparator, HNSW disabled with ``m=0``), a named
sparse vector ``"centroids"`` (the token index's postings), and a payload
``{"text", "metadata", "doc_id"}``. String ids are mapped to UUIDv5 point ids (ints
are used as they are); results always carry the caller's original id, type preserved.

Search modes (filters apply before scoring in every mode):

``dense``   cosine on the dense vector (HNSW).
``maxsim``  exhaustive MaxSim (sum over query tokens of the best document-token cosine).
``hybrid``  (default) dense prefetch of ``candidates`` (plus ``candidates`` from the token
            index's centroid postings once built, see :mod:`.token_index`) then MaxSim
            rerank of their union, in one Qdrant query.
``fusion``  reciprocal-rank fusion (``fusion="rrf"``) or distribution-based normalised score
            fusion (``fusion="dbsf"``) of the dense list and a MaxSim list: exhaustive, or,
            once the token index is built, ``hybrid``'s reranked candidates.

Error policy: every input is validated before anything is written (a bad call leaves the store
unchanged). Duplicate ids in one call raise :class:`DuplicateIdError`; deleting unknown ids is
not an error (``delete`` returns how many documents were actually removed); ``get`` skips
unknown ids while ``get_tokens`` raises ``KeyError`` for them (its result is positional).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import StoreCorruptError, StoreError, StoreMismatchError, require
from .filters import FilterFactory, parse_filter, to_qdrant
from .token_index import (
    MIN_DOCS,
    CentroidIndex,
    Sparse,
    TokenIndexSettings,
    checksum,
    default_centroids,
    describe,
)

if TYPE_CHECKING:
    from .encoder import Encoder

__all__ = [
    "COMPRESSIONS",
    "MODES",
    "DuplicateIdError",
    "MultiVectorStore",
    "SearchHit",
    "StoreManifest",
]

FloatArray = npt.NDArray[np.float32]
DocId = str | int
Mode = Literal["dense", "maxsim", "hybrid", "fusion"]
MODES: tuple[str, ...] = ("dense", "maxsim", "hybrid", "fusion")
COMPRESSIONS: tuple[str, ...] = ("fp16", "int8", "binary")
DENSE = "dense"
TOKENS = "colbert"
CENTROIDS = "centroids"  # sparse vector: the centroids a document's tokens fall in
CENTROIDS_FILE = "token_index.npy"
_SIDE_OWNER = "vllm_retrieval_token_index_of"  # metadata of the server's centroid collection
MANIFEST_NAME = "vllm_retrieval.json"
SHARD_DIR = "shard"
FORMAT = "vllm-retrieval/multivector-store"
SCHEMA_VERSION = 1
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


class EncoderSettings(BaseModel):
    """What is needed to rebuild the store's ``Encoder`` and to recognise a different one."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name or folder (the packaged model by its name).")
    query_prefix: str | None = None
    document_prefix: str | None = None
    max_length: int | None = None
    query_length: int | None = None
    pooling: str | None = None
    profile: dict[str, Any] = Field(description="`ModelProfile.describe()` of the encoder.")


class StoreManifest(BaseModel):
    """The store's settings, as JSON in the directory or in the collection metadata."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["vllm-retrieval/multivector-store"] = "vllm-retrieval/multivector-store"
    schema_version: int = SCHEMA_VERSION
    dim: int = Field(gt=0, description="Width of dense and token vectors.")
    dense_vector: str = DENSE
    token_vector: str = TOKENS
    distance: Literal["cosine"] = "cosine"
    compression: Literal["fp16", "int8", "binary"] | None = None
    encoder: EncoderSettings | None = Field(
        default=None, description="None: vectors are supplied by the caller (add_encoded)."
    )
    sparse_vector: str | None = Field(
        default=None, description="Sparse vector of centroid postings (None: older schema)."
    )
    token_index: TokenIndexSettings | None = Field(
        default=None, description="The trained token index, once built and complete."
    )


def _model_id(encoder: Encoder) -> str:
    from .profiles import DEFAULT_MODEL, default_model_path

    try:
        if Path(encoder.model_path).resolve() == Path(default_model_path()).resolve():
            return DEFAULT_MODEL
    except Exception:  # pragma: no cover - packaged model missing
        pass
    return encoder.model or encoder.model_path


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value))


def encoder_settings(encoder: Encoder) -> EncoderSettings:
    """The settings recorded for ``encoder``."""
    return EncoderSettings(
        model=_model_id(encoder),
        query_prefix=encoder.query_prefix,
        document_prefix=encoder.document_prefix,
        max_length=encoder.max_length,
        query_length=encoder.query_length,
        pooling=encoder.pooling,
        profile=_json_safe(encoder.profile.describe()),
    )


# -- input validation -------------------------------------------------------------------------


def _point_id(doc_id: Any) -> int | str:
    if isinstance(doc_id, bool) or not isinstance(doc_id, (int, str)):
        raise TypeError(f"ids must be str or int, got {type(doc_id).__name__}: {doc_id!r}")
    if isinstance(doc_id, int):
        if not 0 <= doc_id <= _MAX_INT_ID:
            raise ValueError(f"int ids must be in [0, 2**63), got {doc_id}")
        return doc_id
    if doc_id == "":
        raise ValueError("ids must not be empty strings")
    return str(uuid.uuid5(_ID_NAMESPACE, doc_id))


def _check_ids(ids: Any, n: int | None, what: str = "ids") -> list[DocId]:
    if isinstance(ids, (str, bytes, int)):
        raise TypeError(f"{what} must be a list of str or int, not a single {type(ids).__name__}")
    out = list(ids)
    if n is not None and len(out) != n:
        raise ValueError(f"got {len(out)} {what} for {n} texts")
    seen: set[tuple[type, DocId]] = set()
    for doc_id in out:
        _point_id(doc_id)
        key = (type(doc_id), doc_id)
        if key in seen:
            raise DuplicateIdError(f"id {doc_id!r} appears more than once in one call")
        seen.add(key)
    return out


def _check_metadatas(metadatas: Any, n: int) -> list[dict[str, Any]]:
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


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
    return out


def _check_dense(dense: Any, n: int, dim: int | None) -> FloatArray:
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


def _check_tokens(tokens: Any, n: int, dim: int) -> list[FloatArray]:
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


def _check_k(k: Any, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"{what} must be > 0, got {k}")
    return int(k)


@dataclass
class _Point:
    pid: int | str
    dense: FloatArray
    tokens: FloatArray
    payload: dict[str, Any]
    sparse: Sparse | None = None


@dataclass
class _Record:
    payload: dict[str, Any]
    tokens: FloatArray | None


# -- backends ---------------------------------------------------------------------------------


class _EdgeBackend:
    """Qdrant Edge: an in-process shard in ``<path>/shard``."""

    kind = "edge"

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

    def save_manifest(self, manifest: StoreManifest) -> None:
        _write_manifest_file(self.dir / MANIFEST_NAME, manifest)

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

    def _vectors(self, p: _Point) -> dict[str, Any]:
        vec: dict[str, Any] = {DENSE: p.dense, TOKENS: p.tokens}
        if p.sparse is not None:
            vec[CENTROIDS] = self.qe.SparseVector(*p.sparse)
        return vec

    def upsert(self, points: list[_Point]) -> None:
        qe = self.qe
        pts = [qe.Point(id=p.pid, vector=self._vectors(p), payload=p.payload) for p in points]
        self.shard.update(qe.UpdateOperation.upsert_points(pts))

    def set_sparse(self, pids: list[int | str], sparse: list[Sparse]) -> None:
        qe = self.qe
        ops = [
            qe.PointVectors(id=pid, vector={CENTROIDS: qe.SparseVector(*sp)})
            for pid, sp in zip(pids, sparse, strict=True)
        ]
        self.shard.update(qe.UpdateOperation.update_vectors(ops))

    def scroll_page(self, offset: Any, batch: int, with_tokens: bool) -> tuple[list[Any], Any]:
        """One page of points (ids, token vectors if asked) and the next offset."""
        return self.shard.scroll(  # type: ignore[no-any-return]
            self.qe.ScrollRequest(
                offset=offset,
                limit=batch,
                with_payload=False,
                with_vector=[TOKENS] if with_tokens else False,
            )
        )

    def delete_ids(self, pids: list[int | str]) -> None:
        self.shard.update(self.qe.UpdateOperation.delete_points(pids))

    def delete_filter(self, flt: Any) -> None:
        self.shard.update(self.qe.UpdateOperation.delete_points_by_filter(flt))

    def retrieve(self, pids: list[int | str], with_tokens: bool) -> dict[int | str, _Record]:
        recs = self.shard.retrieve(
            pids, with_payload=True, with_vector=[TOKENS] if with_tokens else False
        )
        out: dict[int | str, _Record] = {}
        for r in recs:
            pid = r.id if isinstance(r.id, int) else str(r.id)
            toks = None
            if with_tokens and r.vector is not None:
                toks = np.asarray(r.vector[TOKENS], dtype=np.float32)
            out[pid] = _Record(dict(r.payload or {}), toks)
        return out

    def count(self, flt: Any = None) -> int:
        return int(self.shard.count(self.qe.CountRequest(exact=True, filter=flt)))

    def _nearest(self, vec: Any, using: str) -> Any:
        return self.qe.Query.Nearest(vec, using=using)

    def query(
        self,
        mode: str,
        dense: FloatArray | None,
        tokens: FloatArray | None,
        k: int,
        candidates: int,
        flt: Any,
        fusion: str,
        sparse: Sparse | None = None,
    ) -> list[tuple[float, dict[str, Any]]]:
        qe = self.qe
        tok_params = (
            qe.SearchParams(
                quantization=qe.QuantizationSearchParams(rescore=True, oversampling=4.0)
            )
            if self.quantized
            else None
        )
        # Exhaustive MaxSim is exact: quantised codes are ignored, originals are scored.
        exact_params = (
            qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
            if self.quantized
            else None
        )
        # The hybrid rerank scores its few candidates on the originals: MaxSim on the quantised
        # codes is no faster in Qdrant (binary, 10k docs, 200 candidates: 81 ms on codes vs
        # 17 ms on the originals, same recall; benchmarks/search.py).
        rerank_params = (
            qe.SearchParams(quantization=qe.QuantizationSearchParams(ignore=True))
            if self.quantized
            else None
        )
        dense_params = qe.SearchParams(hnsw_ef=max(candidates, 64))
        prefetches = None
        if mode == "dense":
            query: Any = self._nearest(dense.tolist(), DENSE)  # type: ignore[union-attr]
            params: Any = dense_params
        elif mode == "maxsim":
            query, params = self._nearest(tokens.tolist(), TOKENS), exact_params  # type: ignore[union-attr]
        else:

            def dense_prefetch() -> Any:
                return qe.Prefetch(
                    limit=candidates,
                    query=self._nearest(dense.tolist(), DENSE),  # type: ignore[union-attr]
                    filter=flt,
                    params=dense_params,
                )

            # MaxSim candidates: the dense prefetch, plus the token index's postings if built.
            pool = [dense_prefetch()]
            if sparse is not None:
                pool.append(
                    qe.Prefetch(
                        limit=candidates,
                        query=self._nearest(qe.SparseVector(*sparse), CENTROIDS),
                        filter=flt,
                    )
                )
            if mode == "hybrid":
                prefetches = pool
                query, params = self._nearest(tokens.tolist(), TOKENS), rerank_params  # type: ignore[union-attr]
            else:
                # fusion: the MaxSim list is exhaustive, or the reranked pool with a token index.
                maxsim_list = qe.Prefetch(
                    limit=candidates,
                    query=self._nearest(tokens.tolist(), TOKENS),  # type: ignore[union-attr]
                    filter=flt,
                    params=rerank_params if sparse is not None else tok_params,
                    prefetches=pool if sparse is not None else None,
                )
                prefetches = [dense_prefetch(), maxsim_list]
                query = qe.Fusion.Rrf(k=60) if fusion == "rrf" else qe.Fusion.Dbsf()
                params = None
        res = self.shard.query(
            qe.QueryRequest(
                limit=k,
                query=query,
                prefetches=prefetches,
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


class _ClientBackend:
    """A Qdrant server or cluster (or qdrant-client's local mode) through ``qdrant-client``."""

    kind = "client"

    def __init__(self, client: Any, collection: str) -> None:
        qc = require("qdrant_client", "qdrant")
        self.m = qc.models
        self.client = client
        self.collection = collection
        m = self.m
        self.factory = FilterFactory(
            match_value=lambda k, v: m.FieldCondition(key=k, match=m.MatchValue(value=v)),
            match_any=lambda k, vs: m.FieldCondition(key=k, match=m.MatchAny(any=vs)),
            range=lambda k, b: m.FieldCondition(key=k, range=m.Range(**b)),
            filter=lambda **kw: m.Filter(**kw),
        )
        self.quantized = False
        # qdrant-client's local mode searches exactly and warns about search params.
        self.local = False

    def read_manifest(self) -> dict[str, Any] | None:
        """The recorded settings; None if the collection does not exist."""
        if not self.client.collection_exists(self.collection):
            return None
        info = self.client.get_collection(self.collection)
        meta = info.config.metadata or {}
        raw = meta.get("vllm_retrieval")
        if not isinstance(raw, dict):
            raise StoreCorruptError(
                f"collection {self.collection!r} exists but was not created by vllm-retrieval"
            )
        return raw

    def create(self, manifest: StoreManifest) -> None:
        m = self.m
        tok_kw: dict[str, Any] = {}
        if manifest.compression == "fp16":
            tok_kw["datatype"] = m.Datatype.FLOAT16
        elif manifest.compression == "int8":
            tok_kw["datatype"] = m.Datatype.FLOAT16
            tok_kw["on_disk"] = True
            tok_kw["quantization_config"] = m.ScalarQuantization(
                scalar=m.ScalarQuantizationConfig(
                    type=m.ScalarType.INT8, quantile=0.99, always_ram=True
                )
            )
        elif manifest.compression == "binary":
            tok_kw["datatype"] = m.Datatype.FLOAT16
            tok_kw["on_disk"] = True
            tok_kw["quantization_config"] = m.BinaryQuantization(
                binary=m.BinaryQuantizationConfig(
                    always_ram=True, encoding=m.BinaryQuantizationEncoding.TWO_BITS
                )
            )
        self.quantized = manifest.compression in ("int8", "binary")
        self.client.create_collection(
            self.collection,
            vectors_config={
                DENSE: m.VectorParams(size=manifest.dim, distance=m.Distance.COSINE),
                TOKENS: m.VectorParams(
                    size=manifest.dim,
                    distance=m.Distance.COSINE,
                    multivector_config=m.MultiVectorConfig(
                        comparator=m.MultiVectorComparator.MAX_SIM
                    ),
                    hnsw_config=m.HnswConfigDiff(m=0),
                    **tok_kw,
                ),
            },
            sparse_vectors_config=(
                {CENTROIDS: m.SparseVectorParams()} if manifest.sparse_vector else None
            ),
            metadata={"vllm_retrieval": manifest.model_dump(mode="json")},
        )

    def save_manifest(self, manifest: StoreManifest) -> None:
        self.client.update_collection(
            self.collection, metadata={"vllm_retrieval": manifest.model_dump(mode="json")}
        )

    @property
    def _centroid_collection(self) -> str:
        return f"{self.collection}__token_index"

    def save_centroids(self, centroids: FloatArray) -> None:
        """A side collection ``<collection>__token_index``: one point per centroid."""
        m = self.m
        name = self._centroid_collection
        if self.client.collection_exists(name):
            meta = self.client.get_collection(name).config.metadata or {}
            if meta.get(_SIDE_OWNER) != self.collection:
                raise StoreError(
                    f"collection {name!r} exists and is not this store's token index: "
                    "refusing to replace it"
                )
            self.client.delete_collection(name)
        self.client.create_collection(
            name,
            vectors_config=m.VectorParams(size=centroids.shape[1], distance=m.Distance.DOT),
            metadata={_SIDE_OWNER: self.collection},
        )
        for s in range(0, centroids.shape[0], 1024):
            self.client.upsert(
                name,
                points=[
                    m.PointStruct(id=s + i, vector=row.tolist(), payload={})
                    for i, row in enumerate(centroids[s : s + 1024])
                ],
                wait=True,
            )

    def load_centroids(self) -> FloatArray:
        name = self._centroid_collection
        if not self.client.collection_exists(name):
            raise StoreCorruptError(f"token index collection {name!r} is missing")
        try:
            meta = self.client.get_collection(name).config.metadata or {}
            if meta.get(_SIDE_OWNER) != self.collection:
                raise ValueError("it belongs to another collection")
            rows: dict[int, Any] = {}
            offset: Any = None
            while True:
                recs, offset = self.client.scroll(
                    name, limit=1024, offset=offset, with_payload=False, with_vectors=True
                )
                for r in recs:
                    if not isinstance(r.id, int) or not isinstance(r.vector, list):
                        raise ValueError(f"unexpected point {r.id!r}")
                    rows[r.id] = r.vector
                if offset is None or not recs:
                    break
            if sorted(rows) != list(range(len(rows))):
                raise ValueError("centroid ids are not 0..K-1")
            return np.asarray([rows[i] for i in range(len(rows))], dtype=np.float32)
        except Exception as exc:  # any damage is reported as such, never as a crash
            raise StoreCorruptError(f"token index collection {name!r} unreadable: {exc}") from None

    def _vectors(self, p: _Point) -> dict[str, Any]:
        vec: dict[str, Any] = {DENSE: p.dense.tolist(), TOKENS: p.tokens.tolist()}
        if p.sparse is not None:
            vec[CENTROIDS] = self.m.SparseVector(indices=p.sparse[0], values=p.sparse[1])
        return vec

    def upsert(self, points: list[_Point]) -> None:
        m = self.m
        self.client.upsert(
            self.collection,
            points=[
                m.PointStruct(id=p.pid, vector=self._vectors(p), payload=p.payload) for p in points
            ],
            wait=True,
        )

    def set_sparse(self, pids: list[int | str], sparse: list[Sparse]) -> None:
        m = self.m
        self.client.update_vectors(
            self.collection,
            points=[
                m.PointVectors(
                    id=pid, vector={CENTROIDS: m.SparseVector(indices=sp[0], values=sp[1])}
                )
                for pid, sp in zip(pids, sparse, strict=True)
            ],
            wait=True,
        )

    def scroll_page(self, offset: Any, batch: int, with_tokens: bool) -> tuple[list[Any], Any]:
        return self.client.scroll(  # type: ignore[no-any-return]
            self.collection,
            limit=batch,
            offset=offset,
            with_payload=False,
            with_vectors=[TOKENS] if with_tokens else False,
        )

    def delete_ids(self, pids: list[int | str]) -> None:
        self.client.delete(
            self.collection, points_selector=self.m.PointIdsList(points=pids), wait=True
        )

    def delete_filter(self, flt: Any) -> None:
        self.client.delete(
            self.collection, points_selector=self.m.FilterSelector(filter=flt), wait=True
        )

    def retrieve(self, pids: list[int | str], with_tokens: bool) -> dict[int | str, _Record]:
        recs = self.client.retrieve(
            self.collection,
            ids=pids,
            with_payload=True,
            with_vectors=[TOKENS] if with_tokens else False,
        )
        out: dict[int | str, _Record] = {}
        for r in recs:
            pid = r.id if isinstance(r.id, int) else str(r.id)
            toks = None
            if with_tokens and isinstance(r.vector, dict):
                toks = np.asarray(r.vector[TOKENS], dtype=np.float32)
            out[pid] = _Record(dict(r.payload or {}), toks)
        return out

    def count(self, flt: Any = None) -> int:
        return int(self.client.count(self.collection, count_filter=flt, exact=True).count)

    def query(
        self,
        mode: str,
        dense: FloatArray | None,
        tokens: FloatArray | None,
        k: int,
        candidates: int,
        flt: Any,
        fusion: str,
        sparse: Sparse | None = None,
    ) -> list[tuple[float, dict[str, Any]]]:
        m = self.m
        tok_params = (
            m.SearchParams(quantization=m.QuantizationSearchParams(rescore=True, oversampling=4.0))
            if self.quantized and not self.local
            else None
        )
        exact_params = (
            m.SearchParams(exact=True, quantization=m.QuantizationSearchParams(ignore=True))
            if self.quantized and not self.local
            else None
        )
        # Hybrid reranks its candidates on the originals (see the Edge backend).
        rerank_params = (
            m.SearchParams(quantization=m.QuantizationSearchParams(ignore=True))
            if self.quantized and not self.local
            else None
        )
        dense_params = None if self.local else m.SearchParams(hnsw_ef=max(candidates, 64))
        kw: dict[str, Any] = {}
        if mode == "dense":
            kw.update(query=dense.tolist(), using=DENSE, search_params=dense_params)  # type: ignore[union-attr]
        elif mode == "maxsim":
            kw.update(query=tokens.tolist(), using=TOKENS, search_params=exact_params)  # type: ignore[union-attr]
        else:

            def dense_prefetch() -> Any:
                return m.Prefetch(
                    query=dense.tolist(),  # type: ignore[union-attr]
                    using=DENSE,
                    limit=candidates,
                    filter=flt,
                    params=dense_params,
                )

            # MaxSim candidates: the dense prefetch, plus the token index's postings if built.
            pool = [dense_prefetch()]
            if sparse is not None:
                pool.append(
                    m.Prefetch(
                        query=m.SparseVector(indices=sparse[0], values=sparse[1]),
                        using=CENTROIDS,
                        limit=candidates,
                        filter=flt,
                    )
                )
            if mode == "hybrid":
                kw.update(
                    prefetch=pool,
                    query=tokens.tolist(),  # type: ignore[union-attr]
                    using=TOKENS,
                    search_params=rerank_params,
                )
            elif mode == "fusion":
                # The MaxSim list is exhaustive, or the reranked pool when a token index exists.
                maxsim_list = m.Prefetch(
                    query=tokens.tolist(),  # type: ignore[union-attr]
                    using=TOKENS,
                    limit=candidates,
                    filter=flt,
                    params=rerank_params if sparse is not None else tok_params,
                    prefetch=pool if sparse is not None else None,
                )
                kw.update(
                    prefetch=[dense_prefetch(), maxsim_list],
                    query=(
                        m.RrfQuery(rrf=m.Rrf(k=60))
                        if fusion == "rrf"
                        else m.FusionQuery(fusion=m.Fusion.DBSF)
                    ),
                )
        res = self.client.query_points(
            self.collection, query_filter=flt, limit=k, with_payload=True, **kw
        )
        return [(float(p.score), dict(p.payload or {})) for p in res.points]

    def optimize(self) -> None:
        """The server optimises in the background; nothing to do."""

    def flush(self) -> None:
        """Writes use ``wait=True``: acknowledged means applied."""

    def close(self) -> None:
        self.client.close()


def _scroll(
    backend: _EdgeBackend | _ClientBackend, batch: int, with_tokens: bool
) -> Iterator[tuple[list[int | str], list[FloatArray]]]:
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


# -- the store --------------------------------------------------------------------------------


def _read_manifest_file(path: Path) -> StoreManifest:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreCorruptError(f"store manifest {path} is unreadable: {exc}") from None
    return _parse_manifest(raw, str(path))


def _parse_manifest(raw: Any, where: str) -> StoreManifest:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise StoreCorruptError(f"{where} is not a vllm-retrieval store manifest")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise StoreCorruptError(
            f"{where} has schema version {raw.get('schema_version')!r}; "
            f"this vllm-retrieval reads version {SCHEMA_VERSION}"
        )
    try:
        return StoreManifest.model_validate(raw)
    except ValidationError as exc:
        raise StoreCorruptError(f"store manifest {where} is damaged: {exc}") from None


def _write_manifest_file(path: Path, manifest: StoreManifest) -> None:
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(data + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class MultiVectorStore:
    """Dense + token (ColBERT) vectors, text and metadata in Qdrant; see the module doc.

    Args:
        path: Directory of an embedded Qdrant Edge store (created if missing or empty;
            reopened, with its settings checked, if it holds a store).
        encoder: The :class:`~vllm_retrieval.Encoder` for ``add_texts``/``search``. When
            reopening without one, an encoder with the recorded settings is rebuilt on first
            use.
        url, api_key, collection: A Qdrant server or cluster (through qdrant-client).
        location, client_path: qdrant-client local mode (``":memory:"`` or a folder).
        client_kwargs: Further keyword arguments for ``QdrantClient``.
        compression: Token-vector storage: ``None`` (float32), ``"fp16"`` (half the bytes),
            ``"int8"`` (scalar-quantised codes in RAM, fp16 originals on disk for rescoring)
            or ``"binary"`` (2-bit binary codes in RAM, fp16 originals on disk). ``None`` on
            reopen keeps the recorded choice; another value than the recorded one is refused.
        dim: Vector width; needed only for a new store without an encoder (otherwise learned
            from the encoder). Checked against the store on reopen.
        batch_size: Documents per write (and per encoder call in ``add_texts``).
        show_progress: Show a tqdm bar while ingesting.
        drop_token_index: Forget a recorded token index on opening (e.g. after its centroids
            were lost or damaged, which otherwise raises ``StoreCorruptError``); ``hybrid``
            then uses the dense prefetch until :meth:`build_token_index` runs again.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        encoder: Encoder | None = None,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = "vllm_retrieval",
        location: str | None = None,
        client_path: str | os.PathLike[str] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        compression: str | None = None,
        dim: int | None = None,
        batch_size: int = 256,
        show_progress: bool = False,
        drop_token_index: bool = False,
        _must_exist: bool = False,
    ) -> None:
        if compression is not None and compression not in COMPRESSIONS:
            raise ValueError(
                f"unknown compression {compression!r} (choose None, {', '.join(COMPRESSIONS)})"
            )
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        targets = [x is not None for x in (path, url, location, client_path)]
        if sum(targets) > 1:
            raise ValueError("give only one of path, url, location, client_path")
        if not any(targets):
            raise ValueError("give path= (embedded Qdrant Edge) or url= (Qdrant server)")
        self._encoder = encoder
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._lock = threading.RLock()
        self._closed = False
        self._drop_token_index = bool(drop_token_index)
        self._token_index: CentroidIndex | None = None
        self.path: Path | None = None
        self.collection: str | None = None
        self._backend: _EdgeBackend | _ClientBackend
        if path is not None:
            self.path = Path(path)
            self._open_edge(self.path, encoder, compression, dim, _must_exist)
        else:
            self.collection = collection
            self._open_client(
                url,
                api_key,
                location,
                client_path,
                client_kwargs,
                encoder,
                compression,
                dim,
                _must_exist,
            )

    # -- opening ------------------------------------------------------------------------------

    def _new_manifest(
        self, encoder: Encoder | None, compression: str | None, dim: int | None
    ) -> StoreManifest:
        settings = encoder_settings(encoder) if encoder is not None else None
        if dim is None:
            if encoder is None:
                raise ValueError("a new store without an encoder needs dim=")
            dim = int(encoder.dimension)
        return StoreManifest(
            dim=dim,
            compression=compression,  # type: ignore[arg-type]
            encoder=settings,
            sparse_vector=CENTROIDS,
        )

    @staticmethod
    def _check(
        manifest: StoreManifest,
        encoder: Encoder | None,
        compression: str | None,
        dim: int | None,
        where: str,
    ) -> None:
        if dim is not None and dim != manifest.dim:
            raise StoreMismatchError(f"{where} holds {manifest.dim}-dim vectors, not {dim}")
        if compression is not None and compression != manifest.compression:
            raise StoreMismatchError(
                f"{where} was built with compression={manifest.compression!r}, not {compression!r}"
            )
        if encoder is not None and manifest.encoder is not None:
            mine = encoder_settings(encoder)
            if mine.model != manifest.encoder.model:
                raise StoreMismatchError(
                    f"{where} was built with model {manifest.encoder.model!r}; "
                    f"the encoder given is {mine.model!r}"
                )
            if mine.profile != manifest.encoder.profile:
                diff = {
                    k: (manifest.encoder.profile.get(k), v)
                    for k, v in mine.profile.items()
                    if manifest.encoder.profile.get(k) != v
                }
                raise StoreMismatchError(
                    f"{where} was built with other encoder settings (stored, given): {diff}"
                )

    def _open_edge(
        self,
        path: Path,
        encoder: Encoder | None,
        compression: str | None,
        dim: int | None,
        must_exist: bool,
    ) -> None:
        manifest_path = path / MANIFEST_NAME
        shard_dir = path / SHARD_DIR
        if path.exists() and not path.is_dir():
            raise StoreCorruptError(f"{path} is not a directory")
        if manifest_path.is_file():
            manifest = _read_manifest_file(manifest_path)
            self._check(manifest, encoder, compression, dim, str(path))
            create = not shard_dir.exists()
        else:
            if path.is_dir() and any(path.iterdir()):
                raise StoreCorruptError(
                    f"{path} is not empty and holds no {MANIFEST_NAME}: not a vllm-retrieval store"
                )
            if must_exist:
                raise FileNotFoundError(f"no vllm-retrieval store at {path}")
            manifest = self._new_manifest(encoder, compression, dim)
            path.mkdir(parents=True, exist_ok=True)
            # The manifest goes first: a crash before the shard exists leaves an empty store.
            _write_manifest_file(manifest_path, manifest)
            create = True
        self.manifest = manifest
        try:
            self._backend = _EdgeBackend(shard_dir, manifest, create)
        except ImportError:
            raise
        except Exception as exc:
            raise StoreCorruptError(f"cannot open the Qdrant Edge shard in {path}: {exc}") from exc
        try:
            self._token_index = self._load_token_index()
        except BaseException:
            self._backend.close()
            raise

    def _open_client(
        self,
        url: str | None,
        api_key: str | None,
        location: str | None,
        client_path: str | os.PathLike[str] | None,
        client_kwargs: Mapping[str, Any] | None,
        encoder: Encoder | None,
        compression: str | None,
        dim: int | None,
        must_exist: bool,
    ) -> None:
        qc = require("qdrant_client", "qdrant")
        kwargs = dict(client_kwargs or {})
        if url is not None:
            client = qc.QdrantClient(url=url, api_key=api_key, **kwargs)
        elif location is not None:
            client = qc.QdrantClient(location=location, **kwargs)
        else:
            client = qc.QdrantClient(path=str(client_path), **kwargs)
        assert self.collection is not None
        backend = _ClientBackend(client, self.collection)
        backend.local = url is None
        where = f"collection {self.collection!r}"
        try:
            raw = backend.read_manifest()
            if raw is not None:
                manifest = _parse_manifest(raw, where)
                self._check(manifest, encoder, compression, dim, where)
                backend.quantized = manifest.compression in ("int8", "binary")
            else:
                if must_exist:
                    raise FileNotFoundError(f"no {where} on the Qdrant server")
                manifest = self._new_manifest(encoder, compression, dim)
                backend.create(manifest)
            self.manifest = manifest
            self._backend = backend
            self._token_index = self._load_token_index()
        except BaseException:
            client.close()
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        encoder: Encoder | None = None,
        **kwargs: Any,
    ) -> MultiVectorStore:
        """Reopen an existing store (``FileNotFoundError`` if there is none).

        Without ``encoder`` the recorded encoder settings are used to rebuild one on first
        use; with one, it must match the store's model and settings (``StoreMismatchError``).
        """
        return cls(path, encoder=encoder, _must_exist=True, **kwargs)

    def _load_token_index(self) -> CentroidIndex | None:
        settings = self.manifest.token_index
        if settings is None:
            return None
        if self._drop_token_index:
            self._save_manifest(self.manifest.model_copy(update={"token_index": None}))
            return None
        hint = "; open with drop_token_index=True, then build_token_index() again"
        try:
            cents = self._backend.load_centroids()
        except StoreCorruptError as exc:
            raise StoreCorruptError(f"{exc}{hint}") from None
        if cents.shape != (settings.centroids, self.manifest.dim) or (
            checksum(cents) != settings.sha256
        ):
            raise StoreCorruptError(
                f"the token index centroids ({list(cents.shape)}) do not match the manifest "
                f"({settings.centroids} x {self.manifest.dim}, sha256 {settings.sha256[:12]}...)"
                f"{hint}"
            )
        return CentroidIndex(cents)

    def _sync_token_index(self) -> None:
        """On a server other processes may (re)build the index: follow the recorded one."""
        if not isinstance(self._backend, _ClientBackend):
            return
        raw = self._backend.read_manifest()
        recorded = raw.get("token_index") if raw else None
        mine = self.manifest.token_index
        if recorded != (mine.model_dump(mode="json") if mine is not None else None):
            self.manifest = _parse_manifest(raw, f"collection {self.collection!r}")
            self._token_index = self._load_token_index()

    # -- properties ---------------------------------------------------------------------------

    @property
    def token_index(self) -> TokenIndexSettings | None:
        """The token index's settings (``None`` until :meth:`build_token_index` has run)."""
        return self.manifest.token_index

    @property
    def backend(self) -> str:
        """``"edge"`` (embedded Qdrant Edge) or ``"client"`` (qdrant-client)."""
        return self._backend.kind

    @property
    def dim(self) -> int:
        """Width of the stored vectors."""
        return self.manifest.dim

    @property
    def compression(self) -> str | None:
        """Token-vector compression (``None``, ``"fp16"``, ``"int8"`` or ``"binary"``)."""
        return self.manifest.compression

    @property
    def encoder(self) -> Encoder:
        """The encoder (rebuilt from the recorded settings if none was given)."""
        if self._encoder is None:
            settings = self.manifest.encoder
            if settings is None:
                raise StoreError(
                    "this store was built from caller-supplied vectors and has no encoder: "
                    "pass encoder= or use add_encoded/search_encoded"
                )
            from .encoder import Encoder

            self._encoder = Encoder(
                model=settings.model,
                query_prefix=settings.query_prefix,
                document_prefix=settings.document_prefix,
                max_length=settings.max_length,
                query_length=settings.query_length,
                pooling=settings.pooling,  # type: ignore[arg-type]
            )
            self._check(self.manifest, self._encoder, None, None, "this store")
        return self._encoder

    def __repr__(self) -> str:
        where = (
            f"path={str(self.path)!r}"
            if self.path is not None
            else (f"collection={self.collection!r}")
        )
        return (
            f"MultiVectorStore({where}, backend={self.backend!r}, dim={self.dim}, "
            f"compression={self.compression!r})"
        )

    def _ensure_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def __len__(self) -> int:
        with self._lock:
            self._ensure_open()
            return self._backend.count()

    def __enter__(self) -> MultiVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------

    def _prepare(
        self,
        texts: Any,
        metadatas: Any,
        ids: Any,
    ) -> tuple[list[str], list[dict[str, Any]], list[DocId]]:
        items = _check_texts(texts)
        metas = _check_metadatas(metadatas, len(items))
        if ids is None:
            doc_ids: list[DocId] = [str(uuid.uuid4()) for _ in items]
        else:
            doc_ids = _check_ids(ids, len(items))
        return items, metas, doc_ids

    def _points(
        self,
        texts: list[str],
        dense: FloatArray,
        tokens: list[FloatArray],
        metas: list[dict[str, Any]],
        doc_ids: list[DocId],
    ) -> list[_Point]:
        return [
            _Point(
                _point_id(doc_id),
                dense[i],
                tokens[i],
                {"text": texts[i], "metadata": metas[i], "doc_id": doc_id},
            )
            for i, doc_id in enumerate(doc_ids)
        ]

    def _write(self, points: list[_Point]) -> None:
        with self._lock:
            self._ensure_open()
            self._sync_token_index()
            index = self._token_index
            if index is not None:  # new documents join the token index as they are written
                for p, sparse in zip(points, index.assign([p.tokens for p in points]), strict=True):
                    p.sparse = sparse
            self._backend.upsert(points)

    def _progress(self, total: int, show: bool | None) -> Any:
        if not (self.show_progress if show is None else show):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="Indexing", unit="doc")

    def add_encoded(
        self,
        texts: Sequence[str],
        dense: Any,
        tokens: Sequence[Any],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[DocId] | None = None,
        *,
        show_progress: bool | None = None,
    ) -> list[DocId]:
        """Upsert documents whose vectors are already computed; returns their ids.

        ``dense`` is ``[n, d]``, ``tokens`` a list of ``[T_i, d]``. Everything is validated
        before the first write; documents are written in batches of ``batch_size``. When this
        returns, every document is durable (Edge's WAL; ``wait=True`` on a server).
        """
        self._ensure_open()
        items, metas, doc_ids = self._prepare(texts, metadatas, ids)
        dense_arr = _check_dense(dense, len(items), self.dim)
        toks = _check_tokens(tokens, len(items), self.dim)
        bar = self._progress(len(items), show_progress)
        try:
            for s in range(0, len(items), self.batch_size):
                e = s + self.batch_size
                self._write(
                    self._points(items[s:e], dense_arr[s:e], toks[s:e], metas[s:e], doc_ids[s:e])
                )
                if bar is not None:
                    bar.update(min(e, len(items)) - s)
        finally:
            if bar is not None:
                bar.close()
        return doc_ids

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[DocId] | None = None,
        *,
        show_progress: bool | None = None,
    ) -> list[DocId]:
        """Encode (one forward pass per text) and upsert texts; returns their ids.

        Ids, metadata and texts are validated before anything is encoded or written; each
        batch of ``batch_size`` texts is encoded and then written.
        """
        self._ensure_open()
        items, metas, doc_ids = self._prepare(texts, metadatas, ids)
        for i, t in enumerate(items):
            if not t:
                raise ValueError(f"texts[{i}] is an empty string")
        enc = self.encoder
        bar = self._progress(len(items), show_progress)
        try:
            for s in range(0, len(items), self.batch_size):
                e = s + self.batch_size
                dense, toks = enc.encode_documents(items[s:e])
                n = len(items[s:e])
                dense_arr = _check_dense(dense, n, self.dim)
                tok_list = _check_tokens(toks, n, self.dim)
                self._write(self._points(items[s:e], dense_arr, tok_list, metas[s:e], doc_ids[s:e]))
                if bar is not None:
                    bar.update(n)
        finally:
            if bar is not None:
                bar.close()
        return doc_ids

    async def aadd_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[DocId] | None = None,
    ) -> list[DocId]:
        """Async :meth:`add_texts` (encoder's async path; Qdrant calls in a worker thread)."""
        self._ensure_open()
        items, metas, doc_ids = self._prepare(texts, metadatas, ids)
        for i, t in enumerate(items):
            if not t:
                raise ValueError(f"texts[{i}] is an empty string")
        enc = self.encoder
        for s in range(0, len(items), self.batch_size):
            e = s + self.batch_size
            dense, toks = await enc.aencode_documents(items[s:e])
            n = len(items[s:e])
            dense_arr = _check_dense(dense, n, self.dim)
            tok_list = _check_tokens(toks, n, self.dim)
            points = self._points(items[s:e], dense_arr, tok_list, metas[s:e], doc_ids[s:e])
            await asyncio.to_thread(self._write, points)
        return doc_ids

    def delete(
        self,
        ids: Sequence[DocId] | None = None,
        *,
        filter: Mapping[str, Any] | None = None,
    ) -> int:
        """Delete by ids and/or by filter; returns how many documents were removed.

        Unknown ids are not an error (they count 0). Giving neither ids nor a filter is a
        ``ValueError`` (use a filter such as ``{"$not": {...}}`` to delete broadly).
        """
        self._ensure_open()
        if ids is None and filter is None:
            raise ValueError("delete() needs ids or filter=")
        pids: list[int | str] = []
        if ids is not None:
            if isinstance(ids, (str, bytes, int)):
                raise TypeError("ids must be a list of str or int")
            pids = list(dict.fromkeys(_point_id(i) for i in ids))
        node = parse_filter(filter) if filter is not None else None
        if filter is not None and node is None:
            raise ValueError("delete(filter={}) would delete everything; refused")
        removed = 0
        with self._lock:
            self._ensure_open()
            if pids:
                removed += len(self._backend.retrieve(pids, with_tokens=False))
                self._backend.delete_ids(pids)
            if node is not None:
                flt = to_qdrant(node, self._backend.factory)
                n = self._backend.count(flt)
                if n:
                    self._backend.delete_filter(flt)
                removed += n
        return removed

    # -- reading ------------------------------------------------------------------------------

    def _retrieve(self, ids: Sequence[DocId], with_tokens: bool) -> list[tuple[DocId, _Record]]:
        if isinstance(ids, (str, bytes, int)):
            raise TypeError("ids must be a list of str or int")
        wanted = [(doc_id, _point_id(doc_id)) for doc_id in ids]
        if not wanted:
            return []
        with self._lock:
            self._ensure_open()
            found = self._backend.retrieve(list(dict.fromkeys(p for _, p in wanted)), with_tokens)
        return [(doc_id, found[p]) for doc_id, p in wanted if p in found]

    def get(self, ids: Sequence[DocId]) -> list[SearchHit]:
        """Stored documents for ``ids`` in the given order (unknown ids are skipped)."""
        return [
            SearchHit(
                id=rec.payload.get("doc_id", doc_id),
                score=math.nan,
                text=str(rec.payload.get("text", "")),
                metadata=dict(rec.payload.get("metadata") or {}),
            )
            for doc_id, rec in self._retrieve(ids, with_tokens=False)
        ]

    def get_tokens(self, ids: Sequence[DocId]) -> list[FloatArray]:
        """Stored token vectors ``[T_i, d]`` float32 per id (``KeyError`` for unknown ids).

        Vectors come back as stored: L2-normalised (cosine) and, with ``fp16``/``int8``/
        ``binary`` compression, rounded to fp16.
        """
        ids = list(ids)
        recs = self._retrieve(ids, with_tokens=True)
        if len(recs) != len(ids):
            present = {(type(d), d) for d, _ in recs}
            missing = [i for i in ids if (type(i), i) not in present]
            raise KeyError(f"unknown ids: {missing[:10]!r}")
        out: list[FloatArray] = []
        for doc_id, rec in recs:
            if rec.tokens is None:  # pragma: no cover - schema guarantees token vectors
                raise StoreCorruptError(f"document {doc_id!r} has no token vectors")
            out.append(rec.tokens)
        return out

    def search_encoded(
        self,
        dense: Any = None,
        tokens: Any = None,
        k: int = 10,
        *,
        mode: str = "hybrid",
        filter: Mapping[str, Any] | None = None,
        candidates: int = 200,
        fusion: str = "rrf",
        nprobe: int | None = None,
    ) -> list[SearchHit]:
        """Search with an already-encoded query (``dense [d]``, ``tokens [Q, d]``).

        ``nprobe`` overrides the token index's centroids probed per query token (``hybrid``).
        """
        k = _check_k(k)
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r} (choose {', '.join(MODES)})")
        if fusion not in ("rrf", "dbsf"):
            raise ValueError(f"unknown fusion {fusion!r} (choose 'rrf' or 'dbsf')")
        candidates = _check_k(candidates)
        node = parse_filter(filter)
        q_dense = q_tok = None
        if mode != "maxsim":
            if dense is None:
                raise ValueError(f"mode {mode!r} needs the dense query vector")
            q_dense = np.asarray(dense, dtype=np.float32).reshape(-1)
            if q_dense.shape[0] != self.dim:
                raise StoreMismatchError(
                    f"query has {q_dense.shape[0]} dims, the store has {self.dim}"
                )
        if mode != "dense":
            if tokens is None:
                raise ValueError(f"mode {mode!r} needs the query token vectors")
            q_tok = np.asarray(tokens, dtype=np.float32)
            if q_tok.ndim != 2 or q_tok.shape[0] == 0 or q_tok.shape[1] != self.dim:
                raise StoreMismatchError(
                    f"query tokens must be [Q>0, {self.dim}], got {list(q_tok.shape)}"
                )
        nprobe = None if nprobe is None else _check_k(nprobe, "nprobe")
        with self._lock:
            self._ensure_open()
            flt = to_qdrant(node, self._backend.factory) if node is not None else None
            index, sparse = self._token_index, None
            if mode in ("hybrid", "fusion") and index is not None and self.manifest.token_index:
                sparse = index.probe(q_tok, nprobe or self.manifest.token_index.nprobe)  # type: ignore[arg-type]
            rows = self._backend.query(
                mode, q_dense, q_tok, k, max(candidates, k), flt, fusion, sparse
            )
        return [
            SearchHit(
                id=payload.get("doc_id", ""),
                score=score,
                text=str(payload.get("text", "")),
                metadata=dict(payload.get("metadata") or {}),
            )
            for score, payload in rows
        ]

    def _validate_search(
        self, query: Any, k: Any, mode: str, filter: Any, nprobe: Any = None
    ) -> None:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if not query:
            raise ValueError("query is an empty string")
        _check_k(k)
        if nprobe is not None:
            _check_k(nprobe, "nprobe")
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r} (choose {', '.join(MODES)})")
        parse_filter(filter)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = "hybrid",
        filter: Mapping[str, Any] | None = None,
        candidates: int = 200,
        fusion: str = "rrf",
        nprobe: int | None = None,
    ) -> list[SearchHit]:
        """Top-``k`` documents for ``query`` (fewer if the store, or the filter, has fewer).

        Scores: cosine (``dense``), MaxSim sum (``maxsim``, ``hybrid``), fused score
        (``fusion``). ``candidates`` is the depth of each prefetch (``hybrid``: the dense
        vector and, once built, the token index) or of each list fused (``fusion``);
        ``nprobe`` overrides the token index's centroids probed per query token.
        """
        self._validate_search(query, k, mode, filter, nprobe)
        dense, toks = self.encoder.encode_queries([query])
        return self.search_encoded(
            dense[0],
            toks[0],
            k,
            mode=mode,
            filter=filter,
            candidates=candidates,
            fusion=fusion,
            nprobe=nprobe,
        )

    async def asearch(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = "hybrid",
        filter: Mapping[str, Any] | None = None,
        candidates: int = 200,
        fusion: str = "rrf",
        nprobe: int | None = None,
    ) -> list[SearchHit]:
        """Async :meth:`search`."""
        self._validate_search(query, k, mode, filter, nprobe)
        dense, toks = await self.encoder.aencode_queries([query])
        return await asyncio.to_thread(
            self.search_encoded,
            dense[0],
            toks[0],
            k,
            mode=mode,
            filter=filter,
            candidates=candidates,
            fusion=fusion,
            nprobe=nprobe,
        )

    # -- maintenance --------------------------------------------------------------------------

    def optimize(self) -> None:
        """Build indexes / merge segments now (Edge runs its optimisers in-process).

        Also builds the token index (:meth:`build_token_index`) the first time the store
        holds at least 1,000 documents; later documents join it as they are written.
        """
        with self._lock:
            self._ensure_open()
            self._backend.optimize()
            if (
                self.manifest.sparse_vector is not None
                and self.manifest.token_index is None
                and self._backend.count() >= MIN_DOCS
            ):
                self.build_token_index()

    def _save_manifest(self, manifest: StoreManifest) -> None:
        self._backend.save_manifest(manifest)
        self.manifest = manifest

    def build_token_index(
        self,
        centroids: int | None = None,
        *,
        nprobe: int = 2,
        sample_tokens: int | None = None,
        seed: int = 0,
        show_progress: bool | None = None,
    ) -> TokenIndexSettings:
        """(Re)build the token index: k-means centroids over the stored token vectors and
        every document's centroid postings (a Qdrant sparse vector).

        ``hybrid`` search then prefetches candidates from the postings as well as from the
        dense vector, which finds the documents that share the query's tokens. Documents
        added later are assigned to the centroids as they are written; rebuild after the
        collection has grown several-fold. ``centroids`` defaults to
        ``2^floor(log2(2 sqrt(T)))`` (T stored tokens, estimated from the sample, 64..8192),
        trained on up to ``sample_tokens`` (default ``64 * centroids``) tokens of documents
        drawn at random; then every document is read once and assigned.

        Crash-safe: the old index is dropped from the manifest first and the new one is
        recorded only once every document carries its postings; until then ``hybrid`` uses
        the dense prefetch alone. The build holds the store's lock (searches and writes of
        this object wait for it); on a server, build while no other process writes to the
        collection (other writers pick up the new index at their next write).
        """
        centroids = None if centroids is None else _check_k(centroids, "centroids")
        nprobe = _check_k(nprobe, "nprobe")
        sample_tokens = None if sample_tokens is None else _check_k(sample_tokens, "sample_tokens")
        if self.manifest.sparse_vector is None:
            raise StoreError(
                "this store was created without the centroid sparse vector (an older "
                "vllm-retrieval); re-create it to use a token index"
            )
        with self._lock:
            self._ensure_open()
            n_docs = self._backend.count()
            if n_docs == 0:
                raise StoreError("cannot build a token index for an empty store")
            if self.manifest.token_index is not None:
                self._save_manifest(self.manifest.model_copy(update={"token_index": None}))
            self._token_index = None
            # Training sample: whole documents in random order (ids first: a cheap scroll),
            # until ``sample_tokens`` tokens; T is estimated from the sampled documents.
            pids = [p for page, _ in _scroll(self._backend, 4096, False) for p in page]
            order = np.random.default_rng(seed).permutation(len(pids))
            sample: list[FloatArray] = []
            trained = 0
            want = sample_tokens or 64 * (centroids or 8192)
            for s in range(0, len(order), self.batch_size):
                batch = [pids[i] for i in order[s : s + self.batch_size]]
                recs = self._backend.retrieve(batch, with_tokens=True).values()
                toks = [r.tokens for r in recs if r.tokens is not None and len(r.tokens)]
                sample.extend(toks)
                trained += sum(t.shape[0] for t in toks)
                if centroids is None and sample:  # the default size follows the estimate
                    est = trained / len(sample) * len(pids)
                    want = sample_tokens or 64 * default_centroids(int(est))
                if trained >= want:
                    break
            if not sample:
                raise StoreError("the store holds no token vectors to build a token index from")
            k = centroids or default_centroids(int(trained / len(sample) * len(pids)))
            flat = np.concatenate(sample)
            del sample
            if flat.shape[0] > want:
                pick = np.random.default_rng(seed).choice(flat.shape[0], size=want, replace=False)
                flat = flat[np.sort(pick)]
            trained = int(flat.shape[0])
            index = CentroidIndex.train(flat, k, seed=seed)
            del flat
            self._backend.save_centroids(index.centroids)
            total = 0
            bar = self._progress(n_docs, show_progress)
            for batch_ids, toks in _scroll(self._backend, self.batch_size, True):
                self._backend.set_sparse(batch_ids, index.assign(toks))
                total += sum(t.shape[0] for t in toks)
                if bar is not None:
                    bar.update(len(batch_ids))
            if bar is not None:
                bar.close()
            settings = describe(index, nprobe, trained, total)
            self._backend.optimize()
            self._save_manifest(self.manifest.model_copy(update={"token_index": settings}))
            self._token_index = index
            return settings

    def flush(self) -> None:
        """Flush segments to disk (acknowledged writes are already durable through the WAL)."""
        with self._lock:
            self._ensure_open()
            self._backend.flush()

    def disk_bytes(self) -> int:
        """Bytes on disk of an embedded store (0 for a server)."""
        if self.path is None:
            return 0
        return sum(f.stat().st_size for f in _walk(self.path))

    def close(self) -> None:
        """Flush and release the store (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._backend.flush()
            finally:
                self._backend.close()


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                yield p
