"""vllm-retrieval: dense + ColBERT token embeddings and MaxSim retrieval on one vLLM engine.

Importing this package imports neither vLLM nor torch nor LangChain nor LlamaIndex; the engine
starts on first use, and the framework adapters live in ``vllm_retrieval.langchain`` and
``vllm_retrieval.llama_index``.

The house, by concern (each a package with its own seams):

* :mod:`.encoding` — ``Encoder``: texts to dense + token vectors in one forward pass of a
  shared engine (``EngineBackend``: in-process vLLM, or a remote ``vllm serve``);
* :mod:`.scoring` — the MaxSim family, ``MaxSimReranker`` and explanations;
* :mod:`.store` — ``MultiVectorStore`` over Qdrant (embedded Edge, or a server);
* :mod:`.cli` — ``vllm-retrieval index | search | eval | bench``;
* :mod:`.langchain`, :mod:`.llama_index` — thin framework adapters over the above.
"""

from .encoding import (
    DEFAULT_MODEL,
    EncodedText,
    Encoder,
    EncoderSettings,
    ImageError,
    ModelProfile,
    MultimodalItem,
    shutdown_engines,
    shutdown_remote_engines,
)
from .errors import (
    DenseOnlyModelError,
    EngineError,
    RemoteAuthError,
    RemoteEngineError,
    RemoteMalformedResponseError,
    RemoteModelMismatchError,
    RemoteTimeoutError,
    RemoteUnreachableError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    VLLMRetrievalError,
)
from .scoring import (
    Explanation,
    MaxSimReranker,
    PackedDocs,
    RerankResult,
    TokenMatch,
    alignment,
    explain,
    maxsim_batch,
    maxsim_topk,
    pack,
)
from .scoring.maxsim import maxsim
from .store import MODES, DuplicateIdError, MultiVectorStore, SearchHit

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "MODES",
    "DenseOnlyModelError",
    "DuplicateIdError",
    "EncodedText",
    "Encoder",
    "EncoderSettings",
    "EngineError",
    "Explanation",
    "ImageError",
    "MaxSimReranker",
    "ModelProfile",
    "MultiVectorStore",
    "MultimodalItem",
    "PackedDocs",
    "RemoteAuthError",
    "RemoteEngineError",
    "RemoteMalformedResponseError",
    "RemoteModelMismatchError",
    "RemoteTimeoutError",
    "RemoteUnreachableError",
    "RerankResult",
    "SearchHit",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "TokenMatch",
    "VLLMRetrievalError",
    "__version__",
    "alignment",
    "explain",
    "maxsim",
    "maxsim_batch",
    "maxsim_topk",
    "pack",
    "shutdown_engines",
    "shutdown_remote_engines",
]
