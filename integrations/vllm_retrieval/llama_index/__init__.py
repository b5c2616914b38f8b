"""LlamaIndex adapters over the vllm-retrieval core (imports only ``llama_index.core``).

- :class:`VLLMEmbedding` — dense embeddings (``BaseEmbedding``) for ``VectorStoreIndex`` and
  ``Settings.embed_model``.
- :class:`VLLMMultiVectorStore` — a ``BasePydanticVectorStore`` over a ``MultiVectorStore``
  for ``VectorStoreIndex`` / ``StorageContext`` / ``IngestionPipeline``; nodes round-trip
  whole, and a node embedded by ``VLLMEmbedding`` is not encoded a second time.
- :class:`VLLMMultiVectorRetriever` — a ``BaseRetriever`` over a ``MultiVectorStore``, with
  LlamaIndex ``MetadataFilters``; :func:`build_store_from_documents` / :func:`index_nodes`
  fill a store from Documents/Nodes (ids and JSON-safe metadata kept).
- :class:`VLLMMaxSimRerank` — a ``BaseNodePostprocessor`` reranking nodes by MaxSim (on
  the stored token vectors of nodes that come from a store, with ``store=``).

Every adapter takes ``encoder=`` (or ``store=`` / ``reranker=``) so one vLLM engine serves
all of them. Needs the ``llamaindex`` extra: ``pip install 'vllm-retrieval[llamaindex]'``.
"""

from ..errors import require

require("llama_index.core", "llamaindex")

from .embeddings import VLLMEmbedding  # noqa: E402
from .filters import SUPPORTED_OPERATORS, to_store_filter  # noqa: E402
from .nodes import hit_to_node, node_record  # noqa: E402
from .postprocessors import VLLMMaxSimRerank  # noqa: E402
from .retrievers import (  # noqa: E402
    VLLMMultiVectorRetriever,
    aindex_nodes,
    build_store_from_documents,
    index_nodes,
    json_safe_metadata,
)
from .vector_store import VLLMMultiVectorStore  # noqa: E402

__all__ = [
    "SUPPORTED_OPERATORS",
    "VLLMEmbedding",
    "VLLMMaxSimRerank",
    "VLLMMultiVectorRetriever",
    "VLLMMultiVectorStore",
    "aindex_nodes",
    "build_store_from_documents",
    "hit_to_node",
    "index_nodes",
    "json_safe_metadata",
    "node_record",
    "to_store_filter",
]
