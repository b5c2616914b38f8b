"""The store's state and lifecycle: what it is (settings, backend) and open / close.

A mixin of :class:`~vllm_retrieval.store.store.MultiVectorStore`. A store is a context
manager; :meth:`StoreLifecycle.close` is idempotent and always releases the backend (and with
it an embedded store's lock), even when the final flush fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreError
from .backends import StoreBackend
from .lexical import Bm25Settings
from .manifest import StoreManifest
from .reduction import ReductionSettings
from .token_index import TokenIndexSettings

__all__ = ["StoreLifecycle"]

_S = TypeVar("_S", bound="StoreLifecycle")


class StoreLifecycle:
    """Settings, ``len``, ``repr``, flush and close (state set up by the store's constructor)."""

    _lock: threading.RLock
    _backend: StoreBackend
    _closed: bool
    manifest: StoreManifest
    path: Path | None
    collection: str | None

    @property
    def token_index(self) -> TokenIndexSettings | None:
        """The token index's settings (``None`` until :meth:`build_token_index` has run)."""
        return self.manifest.token_index

    @property
    def bm25(self) -> Bm25Settings | None:
        """The BM25 settings (``None``: no lexical mode until :meth:`build_bm25` runs)."""
        return self.manifest.bm25

    def describe(self) -> dict[str, Any]:
        """The store's settings as JSON-ready data (backend, model, indexes, BM25)."""
        m = self.manifest
        return {
            "backend": self.backend,
            "dim": m.dim,
            "compression": m.compression,
            "pool_factor": m.pool_factor,
            "reduction": m.reduction.model_dump() if m.reduction else None,
            "model": m.encoder.model if m.encoder else None,
            "token_index": m.token_index.model_dump() if m.token_index else None,
            "bm25": m.bm25.model_dump() if m.bm25 else None,
        }

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
    def pool_factor(self) -> int:
        """Token pooling at write time (``1``: none); recorded in the manifest."""
        return self.manifest.pool_factor

    @property
    def reduction(self) -> ReductionSettings | None:
        """Dimension reduction (``reduce_to``; ``None``: none), fitted or not yet."""
        return self.manifest.reduction

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def __repr__(self) -> str:
        where = (
            f"path={str(self.path)!r}"
            if self.path is not None
            else (f"collection={self.collection!r}")
        )
        return (
            f"{type(self).__name__}({where}, backend={self.backend!r}, dim={self.dim}, "
            f"compression={self.compression!r})"
        )

    def _ensure_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def __len__(self) -> int:
        with self._lock:
            self._ensure_open()
            return self._backend.count()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """Flush and release the store: an embedded store's lock is given up, so another
        process may open it (idempotent; the release happens even if the flush fails)."""
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
