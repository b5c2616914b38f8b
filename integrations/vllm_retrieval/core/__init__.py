"""Framework-free core: engine, model profiles, MaxSim, reranker and store."""

from .encoder import EncodedText, Encoder
from .engine import EngineSettings, get_engine, release_engine, shutdown_engines
from .errors import (
    EngineError,
    RemoteEngineError,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    VLLMRetrievalError,
)

# ``maxsim`` (the function) is not re-exported here: it would shadow the ``core.maxsim`` module.
from .maxsim import (
    PackedDocs,
    alignment,
    maxsim_batch,
    maxsim_reference,
    maxsim_topk,
    pack,
)
from .profiles import DEFAULT_MODEL, ModelProfile, load_profile
from .reranker import Explanation, MaxSimReranker, RerankResult, TokenMatch
from .store import DuplicateIdError, MultiVectorStore, SearchHit

__all__ = [
    "DEFAULT_MODEL",
    "DuplicateIdError",
    "EncodedText",
    "Encoder",
    "EngineError",
    "EngineSettings",
    "Explanation",
    "MaxSimReranker",
    "ModelProfile",
    "MultiVectorStore",
    "PackedDocs",
    "RemoteEngineError",
    "RerankResult",
    "SearchHit",
    "StoreCorruptError",
    "StoreError",
    "StoreMismatchError",
    "TokenMatch",
    "VLLMRetrievalError",
    "alignment",
    "get_engine",
    "load_profile",
    "maxsim_batch",
    "maxsim_reference",
    "maxsim_topk",
    "pack",
    "release_engine",
    "shutdown_engines",
]
