"""A Qdrant server or cluster (or qdrant-client's local mode) through ``qdrant-client``.

Same schema and the same rendered :class:`~vllm_retrieval.store.plan.QueryPlan` as the
embedded backend; the manifest lives in the collection's metadata and the token index's
centroids in a side collection ``<collection>__token_index``.

The API key is held as a ``pydantic.SecretStr`` (never in a repr or an error message); without
one, ``QDRANT_API_KEY`` from the environment is used for a ``url``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from ...errors import StoreCorruptError, StoreError, StoreLockedError, require
from ..filters import FilterFactory
from ..lexical import Bm25Settings
from ..manifest import (
    BM25,
    CENTROIDS,
    DENSE,
    TOKENS,
    StoreManifest,
    check_manifest,
    new_manifest,
    parse_manifest,
)
from ..plan import RRF_K, Fuse, Params, QueryPlan, Search
from ..records import Point, PointId, Record
from ..token_index import Sparse
from .base import QueryVectors, Scored, pid_of, run_weighted, search_params

if TYPE_CHECKING:
    from ...encoding import Encoder

__all__ = ["API_KEY_ENV", "ClientBackend", "api_key_secret", "open_client"]

#: The environment variable read for the server's API key when none is given.
API_KEY_ENV = "QDRANT_API_KEY"

FloatArray = npt.NDArray[np.float32]
_SIDE_OWNER = "vllm_retrieval_token_index_of"  # metadata of the server's centroid collection


class ClientBackend:
    """A Qdrant server or cluster (or qdrant-client's local mode) through ``qdrant-client``."""

    kind = "client"
    shared = True

    def __init__(self, client: Any, collection: str, *, local: bool = False) -> None:
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
        self.local = local

    # -- manifest and centroids ---------------------------------------------------------------

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
                DENSE: m.VectorParams(size=manifest.stored_dim, distance=m.Distance.COSINE),
                TOKENS: m.VectorParams(
                    size=manifest.stored_dim,
                    distance=m.Distance.COSINE,
                    multivector_config=m.MultiVectorConfig(
                        comparator=m.MultiVectorComparator.MAX_SIM
                    ),
                    hnsw_config=m.HnswConfigDiff(m=0),
                    **tok_kw,
                ),
            },
            sparse_vectors_config=self._sparse_config(manifest),
            metadata={"vllm_retrieval": manifest.model_dump(mode="json")},
        )

    def _sparse_config(self, manifest: StoreManifest) -> dict[str, Any] | None:
        m = self.m
        sparse: dict[str, Any] = {}
        if manifest.sparse_vector:
            sparse[CENTROIDS] = m.SparseVectorParams()
        if manifest.bm25_vector:
            sparse[BM25] = m.SparseVectorParams(modifier=m.Modifier.IDF)
        return sparse or None

    def add_bm25_vector(self, manifest: StoreManifest) -> StoreManifest:
        """A new named sparse vector on the collection (``create_vector_name``; Qdrant
        servers that predate it refuse, and the store is left as it was)."""
        m = self.m
        info = self.client.get_collection(self.collection)
        have = info.config.params.sparse_vectors or {}
        if BM25 not in have:
            try:
                self.client.create_vector_name(
                    self.collection,
                    BM25,
                    m.SparseVectorNameConfig(sparse=m.SparseVectorConfig(modifier=m.Modifier.IDF)),
                )
            except Exception as exc:
                raise StoreError(
                    f"cannot add the BM25 vector to collection {self.collection!r} ({exc}); "
                    "this needs a Qdrant server that can create vector names, or re-create "
                    "the collection"
                ) from exc
        new = manifest.model_copy(update={"bm25_vector": BM25})
        self.save_manifest(new)
        return new

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

    # -- points ---------------------------------------------------------------------------------

    def _vectors(self, p: Point) -> dict[str, Any]:
        vec: dict[str, Any] = {DENSE: p.dense.tolist(), TOKENS: p.tokens.tolist()}
        if p.sparse is not None:
            vec[CENTROIDS] = self.m.SparseVector(indices=p.sparse[0], values=p.sparse[1])
        if p.bm25 is not None:
            vec[BM25] = self.m.SparseVector(indices=p.bm25[0], values=p.bm25[1])
        return vec

    def upsert(self, points: list[Point]) -> None:
        m = self.m
        self.client.upsert(
            self.collection,
            points=[
                m.PointStruct(id=p.pid, vector=self._vectors(p), payload=p.payload) for p in points
            ],
            wait=True,
        )

    def set_sparse(self, pids: list[PointId], sparse: list[Sparse], name: str = CENTROIDS) -> None:
        m = self.m
        self.client.update_vectors(
            self.collection,
            points=[
                m.PointVectors(id=pid, vector={name: m.SparseVector(indices=sp[0], values=sp[1])})
                for pid, sp in zip(pids, sparse, strict=True)
            ],
            wait=True,
        )

    def scroll_page(
        self, offset: Any, batch: int, with_tokens: bool, with_payload: bool = False
    ) -> tuple[list[Any], Any]:
        return self.client.scroll(  # type: ignore[no-any-return]
            self.collection,
            limit=batch,
            offset=offset,
            with_payload=with_payload,
            with_vectors=[TOKENS] if with_tokens else False,
        )

    def delete_ids(self, pids: list[PointId]) -> None:
        self.client.delete(
            self.collection, points_selector=self.m.PointIdsList(points=pids), wait=True
        )

    def delete_filter(self, flt: Any) -> None:
        self.client.delete(
            self.collection, points_selector=self.m.FilterSelector(filter=flt), wait=True
        )

    def retrieve(self, pids: list[PointId], with_tokens: bool) -> dict[PointId, Record]:
        recs = self.client.retrieve(
            self.collection,
            ids=pids,
            with_payload=True,
            with_vectors=[TOKENS] if with_tokens else False,
        )
        out: dict[PointId, Record] = {}
        for r in recs:
            pid = pid_of(r.id)
            toks = None
            if with_tokens and isinstance(r.vector, dict):
                toks = np.asarray(r.vector[TOKENS], dtype=np.float32)
            out[pid] = Record(dict(r.payload or {}), toks)
        return out

    def count(self, flt: Any = None) -> int:
        return int(self.client.count(self.collection, count_filter=flt, exact=True).count)

    # -- search: the plan rendered with qdrant-client's models --------------------------------

    def _params(self, kind: Params, plan: QueryPlan) -> Any:
        if self.local:  # local mode searches exactly and warns about search params
            return None
        m = self.m
        return search_params(
            kind,
            plan,
            quantized=self.quantized,
            params=m.SearchParams,
            quantization=m.QuantizationSearchParams,
        )

    def _prefetch(self, s: Search, plan: QueryPlan, values: dict[str, Any], flt: Any) -> Any:
        return self.m.Prefetch(
            query=values[s.vector],
            using=s.vector,
            limit=s.limit,
            filter=flt,
            params=self._params(s.params, plan),
            prefetch=[self._prefetch(p, plan, values, flt) for p in s.prefetch] or None,
        )

    def _values(self, vectors: QueryVectors) -> dict[str, Any]:
        m = self.m
        values: dict[str, Any] = {}
        for name, v in vectors.items():
            values[name] = (
                m.SparseVector(indices=v[0], values=v[1])
                if name in (CENTROIDS, BM25)
                else v.tolist()
            )
        return values

    def _search_kw(self, s: Search, plan: QueryPlan, values: dict[str, Any], flt: Any) -> Any:
        return {
            "query": values[s.vector],
            "using": s.vector,
            "prefetch": [self._prefetch(p, plan, values, flt) for p in s.prefetch] or None,
        }

    def query(self, plan: QueryPlan, vectors: QueryVectors, flt: Any) -> Scored:
        m = self.m
        top = plan.tree(token_index=CENTROIDS in vectors)
        if isinstance(top, Fuse) and top.fusion == "weighted":
            return run_weighted(self, top, plan, vectors, flt)
        values = self._values(vectors)
        kw: dict[str, Any]
        if isinstance(top, Fuse):
            kw = {
                "prefetch": [self._prefetch(p, plan, values, flt) for p in top.prefetch],
                "query": (
                    m.RrfQuery(
                        rrf=m.Rrf(k=RRF_K, weights=list(top.weights) if top.weights else None)
                    )
                    if top.fusion == "rrf"
                    else m.FusionQuery(fusion=m.Fusion.DBSF)
                ),
            }
        else:
            kw = self._search_kw(top, plan, values, flt)
            kw["search_params"] = self._params(top.params, plan)
        res = self.client.query_points(
            self.collection, query_filter=flt, limit=top.limit, with_payload=True, **kw
        )
        return [(float(p.score), dict(p.payload or {})) for p in res.points]

    def query_ids(
        self, stages: tuple[Search, ...], plan: QueryPlan, vectors: QueryVectors, flt: Any
    ) -> list[list[tuple[PointId, float]]]:
        m = self.m
        values = self._values(vectors)
        requests = []
        for s in stages:
            kw = self._search_kw(s, plan, values, flt)
            requests.append(
                m.QueryRequest(
                    **kw,
                    filter=flt,
                    params=self._params(s.params, plan),
                    limit=s.limit,
                    with_payload=False,
                )
            )
        res = self.client.query_batch_points(self.collection, requests=requests)
        return [[(pid_of(p.id), float(p.score)) for p in r.points] for r in res]

    def optimize(self) -> None:
        """The server optimises in the background; nothing to do."""

    def flush(self) -> None:
        """Writes use ``wait=True``: acknowledged means applied."""

    def close(self) -> None:
        self.client.close()


def api_key_secret(api_key: str | SecretStr | None) -> SecretStr | None:
    """The API key as a ``SecretStr``: the one given, else ``$QDRANT_API_KEY``, else None."""
    if isinstance(api_key, SecretStr):
        return api_key if api_key.get_secret_value() else None
    if api_key is not None and not isinstance(api_key, str):
        raise TypeError(f"api_key must be a str or SecretStr, got {type(api_key).__name__}")
    key = api_key or os.environ.get(API_KEY_ENV) or None
    return None if key is None else SecretStr(key)


def _local_client(qc: Any, path: str, kwargs: dict[str, Any], lock_timeout: float) -> Any:
    """qdrant-client's local mode on a folder, waiting up to ``lock_timeout`` seconds for
    another holder of the folder (``StoreLockedError`` after)."""
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            return qc.QdrantClient(path=path, **kwargs)
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"the qdrant-client folder {path} is in use by another client (this "
                    "process or another); close it there, or open with "
                    "lock_timeout=<seconds> to wait for it",
                    path=path,
                ) from None
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))


def open_client(
    collection: str,
    *,
    url: str | None,
    api_key: str | SecretStr | None,
    location: str | None,
    client_path: str | os.PathLike[str] | None,
    client_kwargs: Mapping[str, Any] | None,
    encoder: Encoder | None,
    compression: str | None,
    dim: int | None,
    must_exist: bool,
    bm25: Bm25Settings | None = None,
    lock_timeout: float = 0.0,
    pool_factor: int | None = None,
    reduce_to: int | None = None,
) -> tuple[ClientBackend, StoreManifest]:
    """Open (or create) the store's collection; checks its settings on reopen."""
    qc = require("qdrant_client", "qdrant")
    kwargs = dict(client_kwargs or {})
    if url is not None:
        secret = api_key_secret(api_key)
        key = None if secret is None else secret.get_secret_value()
        client = qc.QdrantClient(url=url, api_key=key, **kwargs)
    elif location is not None:
        client = qc.QdrantClient(location=location, **kwargs)
    else:
        client = _local_client(qc, str(client_path), kwargs, lock_timeout)
    backend = ClientBackend(client, collection, local=url is None)
    where = f"collection {collection!r}"
    try:
        raw = backend.read_manifest()
        if raw is not None:
            manifest = parse_manifest(raw, where)
            layout = {"pool_factor": pool_factor, "reduce_to": reduce_to}
            check_manifest(manifest, encoder, compression, dim, where, **layout)
            backend.quantized = manifest.compression in ("int8", "binary")
        else:
            if must_exist:
                raise FileNotFoundError(f"no {where} on the Qdrant server")
            manifest = new_manifest(
                encoder, compression, dim, bm25, pool_factor=pool_factor, reduce_to=reduce_to
            )
            backend.create(manifest)
    except BaseException:
        client.close()
        raise
    return backend, manifest
