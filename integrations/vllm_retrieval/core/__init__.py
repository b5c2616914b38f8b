"""Framework-free core: engine, model profiles, MaxSim, reranker and store."""

from .encoder import EncodedText, Encoder
from .engine import EngineSettings, get_engine, shutdown_engines
from .errors import (
    EngineError,
    RemoteEngineError,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    VLLMRetrievalError,
)
from .profiles import DEFAULT_MODEL, ModelProfile, load_profile

__all__ = [
    "DEFAULT_MODEL",
    "EncodedText",
    "Encoder",
    "EngineError",
    "EngineSettings",
    "ModelProfile",
    "RemoteEngineError",
    "StoreCorruptError",
    "StoreError",
    "StoreMismatchError",
    "VLLMRetrievalError",
    "get_engine",
    "load_profile",
    "shutdown_engines",
]
