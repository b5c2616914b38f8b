"""Typed errors of vllm-retrieval and the lazy-import helper that names a missing extra."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "EngineError",
    "RemoteEngineError",
    "StoreCorruptError",
    "StoreError",
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


class StoreError(VLLMRetrievalError):
    """A multi-vector store operation failed; the store is left unchanged."""


class StoreMismatchError(StoreError, ValueError):
    """A store was opened with settings (model, dimensions, profile) other than its own."""


class StoreCorruptError(StoreError):
    """A directory is not a vllm-retrieval store, or its manifest is damaged."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
        raise ImportError(
            f"{module!r} is needed for this feature: install it with "
            f"`pip install 'vllm-retrieval[{extra}]'`"
        ) from exc
