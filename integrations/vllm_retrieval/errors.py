"""Typed errors of vllm-retrieval and the lazy-import helper that names a missing extra."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "DenseOnlyModelError",
    "EngineError",
    "RemoteAuthError",
    "RemoteEngineError",
    "RemoteMalformedResponseError",
    "RemoteModelMismatchError",
    "RemoteTimeoutError",
    "RemoteUnreachableError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "VLLMRetrievalError",
    "require",
]


class VLLMRetrievalError(Exception):
    """Base class of every error raised by vllm-retrieval itself."""


class EngineError(VLLMRetrievalError, RuntimeError):
    """The vLLM engine failed to start or to encode a request."""


class RemoteEngineError(EngineError):
    """A remote vLLM server failed, timed out or answered something unusable."""


class RemoteUnreachableError(RemoteEngineError, ConnectionError):
    """No remote vLLM server answered: refused connection, DNS failure, server gone."""


class RemoteTimeoutError(RemoteEngineError, TimeoutError):
    """The remote server did not answer within the configured timeout."""


class RemoteAuthError(RemoteEngineError, PermissionError):
    """The remote server refused the API key (HTTP 401 or 403)."""


class RemoteModelMismatchError(RemoteEngineError):
    """The remote server does not serve the requested model (or serves another one)."""


class RemoteMalformedResponseError(RemoteEngineError):
    """The remote server answered with a body that is not the expected JSON or shape."""


class DenseOnlyModelError(VLLMRetrievalError, ValueError):
    """Token vectors were asked of a model that gives one vector per input (CLIP, SigLIP):
    MaxSim, multi-vector stores and the reranker need a late-interaction model."""


class StoreError(VLLMRetrievalError):
    """A multi-vector store operation failed; the store is left unchanged."""


class StoreMismatchError(StoreError, ValueError):
    """A store was opened with settings (model, dimensions, profile) other than its own."""


class StoreCorruptError(StoreError):
    """A directory is not a vllm-retrieval store, or its manifest is damaged."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store open; nothing was read or changed.

    ``path`` is the store directory and ``pid`` the holder's process id where it is known.
    """

    def __init__(self, message: str, *, path: str | None = None, pid: int | None = None):
        super().__init__(message)
        self.path = path
        self.pid = pid


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
        raise ImportError(
            f"{module!r} is needed for this feature: install it with "
            f"`pip install 'vllm-retrieval[{extra}]'`"
        ) from exc
