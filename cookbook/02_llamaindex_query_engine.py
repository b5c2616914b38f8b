# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. A LlamaIndex query engine with MaxSim reranking and metadata filters
#
# The LlamaIndex side of vllm-retrieval:
#
# * `build_store_from_documents` indexes LlamaIndex `Document`s (text, id and metadata) into
#   an embedded multi-vector store — one vLLM forward pass per text gives the dense vector
#   and the token vectors;
# * `VLLMMultiVectorRetriever` is a `BaseRetriever` over that store that understands
#   LlamaIndex `MetadataFilters`;
# * `VLLMMaxSimRerank` is a node postprocessor that reranks any nodes by MaxSim;
# * `RetrieverQueryEngine` ties them to an LLM. `MockLLM` stands in for a real one here.

# %%
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import Document
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from vllm_retrieval import Encoder, shutdown_engines
from vllm_retrieval.demo import load_sample_corpus
from vllm_retrieval.llama_index import (
    VLLMMaxSimRerank,
    VLLMMultiVectorRetriever,
    build_store_from_documents,
)

# %% [markdown]
# ## Documents → store

# %%
encoder = Encoder().start()
documents = [
    Document(text=row["text"], id_=row["id"], metadata={"topic": row["topic"], "year": row["year"]})
    for row in load_sample_corpus()
]
workdir = Path(tempfile.mkdtemp(prefix="cookbook-llamaindex-"))
store = build_store_from_documents(documents, encoder=encoder, path=str(workdir / "index"))
print(store, "holds", len(store), "documents")

# %% [markdown]
# ## A retriever with metadata filters
#
# Filters are applied inside the store before scoring, in every search mode. Here: only
# the `biology` and `medicine` topics, and only documents from 2015 on.

# %%
filters = MetadataFilters(
    filters=[
        MetadataFilter(key="topic", value=["biology", "medicine"], operator=FilterOperator.IN),
        MetadataFilter(key="year", value=2015, operator=FilterOperator.GTE),
    ],
    condition=FilterCondition.AND,
)
retriever = VLLMMultiVectorRetriever(store, similarity_top_k=5, filters=filters)
for hit in retriever.retrieve("How do cells get energy?"):
    meta = hit.node.metadata
    print(f"{hit.score:7.3f}  {hit.node.node_id:<14} {meta['topic']:<9} {meta['year']}")

# %% [markdown]
# ## The query engine: dense retrieval, MaxSim rerank, LLM
#
# The retriever fetches 8 candidates by dense cosine; `VLLMMaxSimRerank` keeps the best 3
# by late interaction. The response carries the ranked `source_nodes`.

# %%
retriever = VLLMMultiVectorRetriever(store, similarity_top_k=8, mode="dense")
rerank = VLLMMaxSimRerank(top_n=3, encoder=encoder)
engine = RetrieverQueryEngine.from_args(
    retriever, llm=MockLLM(max_tokens=16), node_postprocessors=[rerank]
)
response = engine.query("Which methods find nearest neighbours quickly?")
for rank, node in enumerate(response.source_nodes, 1):
    text = node.node.get_content()[:60]
    print(f"{rank}. {node.node.node_id:<12} MaxSim {node.score:.3f}  {text}")
print("\nMockLLM says:", str(response)[:80])

# %%
top_ids = [n.node.node_id for n in response.source_nodes]
assert len(top_ids) == 3
assert {"hnsw", "dense"} & set(top_ids)

# %% [markdown]
# ## The same engine with a filter
#
# Filters and reranking compose: here the engine only ever sees `cooking` documents.

# %%
cooking = MetadataFilters(filters=[MetadataFilter(key="topic", value="cooking")])
engine = RetrieverQueryEngine.from_args(
    VLLMMultiVectorRetriever(store, similarity_top_k=5, filters=cooking),
    llm=MockLLM(max_tokens=8),
    node_postprocessors=[VLLMMaxSimRerank(top_n=2, encoder=encoder)],
)
response = engine.query("what needs to ferment?")
for node in response.source_nodes:
    print(f"{node.node.node_id:<8} {node.score:.3f}  {node.node.metadata}")
assert all(n.node.metadata["topic"] == "cooking" for n in response.source_nodes)

# %%
store.close()
shutdown_engines()
