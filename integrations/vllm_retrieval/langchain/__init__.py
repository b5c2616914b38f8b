"""LangChain adapters: embeddings, a multi-vector retriever, a MaxSim reranker, a vector store.

Thin wrappers over :mod:`vllm_retrieval.core`; they import only ``langchain_core`` (install
the ``langchain`` extra). Pass one core ``Encoder`` (``encoder=``) or ``MultiVectorStore``
(``store=``) to several adapters to serve them all from one vLLM engine.

The classes are imported on first access, so ``VLLMEmbeddings`` works without the store's
optional dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import require

require("langchain_core", "langchain")

if TYPE_CHECKING:
    from .embeddings import VLLMEmbeddings
    from .reranker import VLLMMaxSimReranker
    from .retrievers import VLLMMultiVectorRetriever
    from .vectorstores import VLLMMultiVectorStore

__all__ = [
    "VLLMEmbeddings",
    "VLLMMaxSimReranker",
    "VLLMMultiVectorRetriever",
    "VLLMMultiVectorStore",
]

_WHERE = {
    "VLLMEmbeddings": ".embeddings",
    "VLLMMaxSimReranker": ".reranker",
    "VLLMMultiVectorRetriever": ".retrievers",
    "VLLMMultiVectorStore": ".vectorstores",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
