"""The store's recorded settings: the schema, the manifest and the encoder it was built with.

An embedded store keeps the manifest as plain JSON in ``<path>/vllm_retrieval.json`` (nothing
in the directory is ever unpickled or executed); a server collection keeps it in the
collection's metadata. Both are validated on every open: a store is never silently read with
another model, dimension or compression than its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import StoreCorruptError, StoreMismatchError
from .files import atomic_write_text
from .lexical import BM25, Bm25Settings
from .reduction import ReductionSettings
from .token_index import TokenIndexSettings

if TYPE_CHECKING:
    from ..encoding import Encoder

__all__ = [
    "BM25",
    "CENTROIDS",
    "COMPRESSIONS",
    "DENSE",
    "MANIFEST_NAME",
    "SHARD_DIR",
    "TOKENS",
    "Compression",
    "RecordedEncoder",
    "StoreManifest",
    "check_manifest",
    "new_manifest",
    "parse_manifest",
    "read_manifest_file",
    "reduction_for",
    "write_manifest_file",
]

# The collection schema, the same on every backend.
DENSE = "dense"  # named dense vector (cosine, HNSW)
TOKENS = "colbert"  # named multivector (cosine, MaxSim comparator, no HNSW)
CENTROIDS = "centroids"  # sparse vector: the token-index centroids a document's tokens fall in
# BM25 = "bm25": sparse vector with the IDF modifier, the lexical leg (:mod:`.lexical`)

MANIFEST_NAME = "vllm_retrieval.json"
SHARD_DIR = "shard"
FORMAT: Final = "vllm-retrieval/multivector-store"
SCHEMA_VERSION = 3
# Version 1 also recorded the vector names and the distance, which were never read (the schema
# above is fixed): they are dropped when a version-1 manifest is read. Version 3 added
# ``generation``; older manifests read as generation 0.
_V1_CONSTANTS = {"dense_vector": DENSE, "token_vector": TOKENS, "distance": "cosine"}

#: Token-vector storage: fp16; int8 or 2-bit binary codes in RAM with fp16 originals on disk.
Compression = Literal["fp16", "int8", "binary"]
COMPRESSIONS: tuple[str, ...] = get_args(Compression)


class RecordedEncoder(BaseModel):
    """What is needed to rebuild the store's ``Encoder`` and to recognise a different one."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name or folder (the packaged model by its name).")
    query_prefix: str | None = None
    document_prefix: str | None = None
    max_length: int | None = None
    query_length: int | None = None
    pooling: str | None = None
    profile: dict[str, Any] = Field(description="`ModelProfile.describe()` of the encoder.")

    @classmethod
    def of(cls, encoder: Encoder) -> RecordedEncoder:
        """The settings recorded for ``encoder``."""
        return cls(
            model=_model_id(encoder),
            query_prefix=encoder.query_prefix,
            document_prefix=encoder.document_prefix,
            max_length=encoder.max_length,
            query_length=encoder.query_length,
            pooling=encoder.pooling,
            profile=json.loads(json.dumps(encoder.model_profile.describe())),
        )

    def encoder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild the encoder (``Encoder(**...)``)."""
        kwargs = self.model_dump(exclude={"profile"})
        kind = self.profile.get("kind")
        if kind in ("jina-v4", "vlm"):  # not detected from the checkpoint alone
            kwargs["profile"] = kind
        return kwargs


class StoreManifest(BaseModel):
    """The store's settings, as JSON in the directory or in the collection metadata."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["vllm-retrieval/multivector-store"] = FORMAT
    schema_version: int = SCHEMA_VERSION
    dim: int = Field(gt=0, description="Width of dense and token vectors.")
    compression: Compression | None = None
    pool_factor: int = Field(
        default=1,
        ge=1,
        description="Token pooling at write time (store/reduction.py; 1: none). Queries are "
        "never pooled.",
    )
    reduction: ReductionSettings | None = Field(
        default=None,
        description="PCA of dense and token vectors to fewer dimensions (None: none).",
    )
    encoder: RecordedEncoder | None = Field(
        default=None, description="None: vectors are supplied by the caller (add_encoded)."
    )
    sparse_vector: str | None = Field(
        default=None, description="Sparse vector of centroid postings (None: older schema)."
    )
    token_index: TokenIndexSettings | None = Field(
        default=None, description="The trained token index, once built and complete."
    )
    bm25_vector: str | None = Field(
        default=None, description="Sparse BM25 vector, IDF modifier (None: not in the schema)."
    )
    bm25: Bm25Settings | None = Field(
        default=None, description="BM25 settings, once every document carries its vector."
    )
    generation: int = Field(
        default=0,
        ge=0,
        description="Bumped at every change of the recorded indexes (token index, BM25): "
        "other processes on a shared collection compare it to know when to reload them.",
    )
    shard: str = Field(
        default=SHARD_DIR,
        pattern=r"^shard(\.[0-9]+)?$",
        description="Embedded store: the folder of the Qdrant Edge shard.",
    )

    @property
    def stored_dim(self) -> int:
        """Width of the vectors in Qdrant: ``dim``, or the reduced width once fitted."""
        r = self.reduction
        return r.dims if r is not None and r.fitted else self.dim


def _model_id(encoder: Encoder) -> str:
    from ..encoding import DEFAULT_MODEL, default_model_path

    try:
        if Path(encoder.model_path).resolve() == Path(default_model_path()).resolve():
            return DEFAULT_MODEL
    except Exception:  # pragma: no cover - packaged model missing
        pass
    return encoder.model or encoder.model_path


def new_manifest(
    encoder: Encoder | None,
    compression: str | None,
    dim: int | None,
    bm25: Bm25Settings | None = None,
    *,
    pool_factor: int | None = None,
    reduce_to: int | None = None,
) -> StoreManifest:
    """The manifest of a new store (``dim`` learned from the encoder when not given).

    The schema always has the BM25 vector; ``bm25=None`` leaves it unused (no lexical mode)
    until ``build_bm25()`` fills it."""
    recorded = RecordedEncoder.of(encoder) if encoder is not None else None
    if dim is None:
        if encoder is None:
            raise ValueError("a new store without an encoder needs dim=")
        dim = int(encoder.dimension)
    if reduce_to is not None and reduce_to >= dim:
        raise ValueError(f"reduce_to must be below the vectors' width {dim}, got {reduce_to}")
    return StoreManifest(
        dim=dim,
        compression=compression,  # type: ignore[arg-type]
        pool_factor=1 if pool_factor is None else pool_factor,
        reduction=None if reduce_to is None else reduction_for(encoder, reduce_to),
        encoder=recorded,
        sparse_vector=CENTROIDS,
        bm25_vector=BM25,
        bm25=bm25,
    )


def reduction_for(encoder: Encoder | None, dims: int) -> ReductionSettings:
    """Matryoshka truncation when the encoder's model declares ``dims``, else a PCA."""
    from ..encoding import matryoshka_dims

    declared = None if encoder is None else matryoshka_dims(encoder.model_path)
    if declared is not None and (not declared or dims in declared):
        return ReductionSettings(method="matryoshka", dims=dims)
    return ReductionSettings(dims=dims)


def check_manifest(
    manifest: StoreManifest,
    encoder: Encoder | None,
    compression: str | None,
    dim: int | None,
    where: str,
    *,
    pool_factor: int | None = None,
    reduce_to: int | None = None,
) -> None:
    """Refuse (``StoreMismatchError``) settings other than the store's own."""
    if dim is not None and dim != manifest.dim:
        raise StoreMismatchError(f"{where} holds {manifest.dim}-dim vectors, not {dim}")
    if compression is not None and compression != manifest.compression:
        raise StoreMismatchError(
            f"{where} was built with compression={manifest.compression!r}, not {compression!r}"
        )
    if pool_factor is not None and pool_factor != manifest.pool_factor:
        raise StoreMismatchError(
            f"{where} pools document tokens with pool_factor={manifest.pool_factor}, not "
            f"{pool_factor}: one store holds one kind of token vectors"
        )
    have = None if manifest.reduction is None else manifest.reduction.dims
    if reduce_to is not None and reduce_to != have:
        held = "full-width vectors" if have is None else f"vectors reduced to {have} dims"
        raise StoreMismatchError(
            f"{where} holds {held}, not reduce_to={reduce_to}: one store holds one kind of vectors"
        )
    if encoder is not None and manifest.encoder is not None:
        mine = RecordedEncoder.of(encoder)
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


def parse_manifest(raw: Any, where: str) -> StoreManifest:
    """A manifest from its JSON form (``StoreCorruptError`` for anything else)."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise StoreCorruptError(f"{where} is not a vllm-retrieval store manifest")
    version = raw.get("schema_version")
    if version == 1:
        raw = dict(raw, schema_version=SCHEMA_VERSION)
        for key, value in _V1_CONSTANTS.items():
            if raw.pop(key, value) != value:
                raise StoreCorruptError(f"store manifest {where} is damaged: {key} is not {value}")
    elif version == 2 and "generation" not in raw:
        raw = dict(raw, schema_version=SCHEMA_VERSION)
    elif version != SCHEMA_VERSION:
        raise StoreCorruptError(
            f"{where} has schema version {version!r}; "
            f"this vllm-retrieval reads versions 1 to {SCHEMA_VERSION}"
        )
    try:
        return StoreManifest.model_validate(raw)
    except ValidationError as exc:
        raise StoreCorruptError(f"store manifest {where} is damaged: {exc}") from None


def read_manifest_file(path: Path) -> StoreManifest:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreCorruptError(f"store manifest {path} is unreadable: {exc}") from None
    return parse_manifest(raw, str(path))


def write_manifest_file(path: Path, manifest: StoreManifest) -> None:
    """Write whole to a unique temporary file, fsync, rename over the old one, fsync the
    directory (crash-safe: :func:`~.files.atomic_write`)."""
    data = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    atomic_write_text(path, data + "\n")
