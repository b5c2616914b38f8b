"""Qdrant backends of the store: the protocol, embedded Qdrant Edge, and qdrant-client."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from ...errors import StoreError
from ..lexical import Bm25Settings
from ..manifest import StoreManifest, reduction_for
from .base import Scored, StoreBackend, scroll
from .client import ClientBackend, open_client
from .edge import EdgeBackend, open_edge

if TYPE_CHECKING:
    from ...encoding import Encoder

__all__ = [
    "ClientBackend",
    "EdgeBackend",
    "Scored",
    "StoreBackend",
    "open_backend",
    "open_client",
    "open_edge",
    "scroll",
]


def open_backend(
    *,
    path: str | os.PathLike[str] | None,
    url: str | None,
    api_key: str | SecretStr | None,
    collection: str,
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
) -> tuple[StoreBackend, StoreManifest]:
    """The backend for exactly one target: ``path`` (embedded) or a Qdrant client target.

    ``lock_timeout``: seconds to wait for another process that holds an embedded store (or
    a qdrant-client local folder) before ``StoreLockedError``."""
    targets = [x is not None for x in (path, url, location, client_path)]
    if sum(targets) > 1:
        raise ValueError("give only one of path, url, location, client_path")
    if not any(targets):
        raise ValueError("give path= (embedded Qdrant Edge) or url= (Qdrant server)")
    if path is not None:
        return open_edge(
            Path(path),
            encoder,
            compression,
            dim,
            must_exist,
            bm25,
            lock_timeout,
            pool_factor,
            reduce_to,
        )
    if reduce_to is not None and reduction_for(encoder, reduce_to).method != "matryoshka":
        raise StoreError(
            "reduce_to (a PCA fitted at optimize()) needs the embedded store (path=) for now: "
            "the vectors' width of a Qdrant collection is fixed when it is created (Matryoshka "
            "truncation, for models that declare the width, works on a server too)"
        )
    return open_client(
        collection,
        url=url,
        api_key=api_key,
        location=location,
        client_path=client_path,
        client_kwargs=client_kwargs,
        encoder=encoder,
        compression=compression,
        dim=dim,
        must_exist=must_exist,
        bm25=bm25,
        lock_timeout=lock_timeout,
        pool_factor=pool_factor,
        reduce_to=reduce_to,
    )
