"""vllm-retrieval: dense + ColBERT token embeddings and MaxSim retrieval on one vLLM engine.

Importing this package imports neither vLLM nor torch nor LangChain nor LlamaIndex; the engine
starts on first use, and the framework adapters live in ``vllm_retrieval.langchain`` and
``vllm_retrieval.llama_index``.
"""

from .core import (
    DEFAULT_MODEL,
    DuplicateIdError,
    EncodedText,
    Encoder,
    EngineError,
    Explanation,
    MaxSimReranker,
    ModelProfile,
    MultiVectorStore,
    PackedDocs,
    RemoteEngineError,
    RerankResult,
    SearchHit,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    TokenMatch,
    VLLMRetrievalError,
    maxsim_batch,
    maxsim_topk,
    pack,
    shutdown_engines,
)
from .core.maxsim import maxsim

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DuplicateIdError",
    "EncodedText",
    "Encoder",
    "EngineError",
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
    "__version__",
    "maxsim",
    "maxsim_batch",
    "maxsim_topk",
    "pack",
    "shutdown_engines",
]
