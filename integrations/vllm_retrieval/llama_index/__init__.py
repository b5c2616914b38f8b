"""LlamaIndex adapters over the vllm-retrieval core (imports only ``llama_index.core``).

- :class:`VLLMEmbedding` — dense embeddings (``BaseEmbedding``) for ``VectorStoreIndex`` and
  ``Settings.embed_model``.
- :class:`VLLMMultiVectorRetriever` — a ``BaseRetriever`` over a ``MultiVectorStore``, with
  LlamaIndex ``MetadataFilters``; :func:`build_store_from_documents` / :func:`index_nodes`
  fill a store from Documents/Nodes (ids and JSON-safe metadata kept).
- :class:`VLLMMaxSimRerank` — a ``BaseNodePostprocessor`` reranking nodes by MaxSim.

Every adapter takes ``encoder=`` (or ``store=`` / ``reranker=``) so one vLLM engine serves
all of them. Needs the ``llamaindex`` extra: ``pip install 'vllm-retrieval[llamaindex]'``.
"""

from ..errors import require

require("llama_index.core", "llamaindex")

from .embeddings import VLLMEmbedding  # noqa: E402
from .filters import SUPPORTED_OPERATORS, to_store_filter  # noqa: E402
from .postprocessors import VLLMMaxSimRerank  # noqa: E402
from .retrievers import (  # noqa: E402
    VLLMMultiVectorRetriever,
    aindex_nodes,
    build_store_from_documents,
    index_nodes,
    json_safe_metadata,
)

__all__ = [
    "SUPPORTED_OPERATORS",
    "VLLMEmbedding",
    "VLLMMaxSimRerank",
    "VLLMMultiVectorRetriever",
    "aindex_nodes",
    "build_store_from_documents",
    "index_nodes",
    "json_safe_metadata",
    "to_store_filter",
]
