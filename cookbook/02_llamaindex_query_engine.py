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
# * `VLLMMultiVectorStore` is a LlamaIndex vector store over the embedded multi-vector
#   store: `VectorStoreIndex`, `StorageContext`, `IngestionPipeline` and query engines use it
#   as they use any vector store, and nodes come back whole (type, metadata, relationships);
# * `VLLMEmbedding` embeds with the shared vLLM engine; the token vectors of the same forward
#   pass go to the store, so no node is encoded twice;
# * `VLLMMultiVectorRetriever` is a `BaseRetriever` straight over the core store, with
#   LlamaIndex `MetadataFilters`;
# * `VLLMMaxSimRerank` is a node postprocessor that reranks any nodes by MaxSim — on the
#   stored token vectors for nodes that come from the store;
# * `RetrieverQueryEngine` ties them to an LLM. `MockLLM` stands in for a real one here (no
#   network, no model download).

# %%
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from vllm_retrieval import Encoder, shutdown_engines
from vllm_retrieval.demo import load_sample_corpus
from vllm_retrieval.llama_index import (
    VLLMEmbedding,
    VLLMMaxSimRerank,
    VLLMMultiVectorRetriever,
    VLLMMultiVectorStore,
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

# %% [markdown]
# ## `VectorStoreIndex` over the multi-vector store
#
# The LlamaIndex way: a `StorageContext` with the vector store, `VectorStoreIndex`, a query
# engine. `VLLMEmbedding` embeds the nodes; the store writes each node's dense and token
# vectors from that one forward pass, and encodes each query once (dense + token vectors).
# The query engine runs the store's default search (a dense prefetch reranked by MaxSim);
# `vector_store_kwargs` reach every store option, here the candidate depth.

# %%
embed_model = VLLMEmbedding(encoder=encoder)
vector_store = VLLMMultiVectorStore(path=str(workdir / "vector_index"), encoder=encoder)
index = VectorStoreIndex.from_documents(
    [
        Document(
            text=row["text"],
            id_=row["id"],
            metadata={"topic": row["topic"], "year": row["year"]},
            excluded_embed_metadata_keys=["topic", "year"],
        )
        for row in load_sample_corpus()
    ],
    storage_context=StorageContext.from_defaults(vector_store=vector_store),
    embed_model=embed_model,
)
engine = index.as_query_engine(
    llm=MockLLM(max_tokens=16),
    similarity_top_k=6,
    vector_store_kwargs={"candidates": 12},
    node_postprocessors=[VLLMMaxSimRerank(store=vector_store, top_n=3)],
)
response = engine.query("How does late interaction score a document?")
for node in response.source_nodes:
    print(f"{node.node.ref_doc_id:<10} MaxSim {node.score:6.2f}  {node.node.get_content()[:60]}")
assert response.source_nodes[0].node.ref_doc_id in {"colbert", "colbertv2"}

# %% [markdown]
# Filters are LlamaIndex `MetadataFilters`; MMR (`vector_store_query_mode="mmr"`) trades
# relevance for diversity among the best candidates of the store's search.

# %%
retriever = index.as_retriever(
    similarity_top_k=3,
    vector_store_query_mode="mmr",
    vector_store_kwargs={"mmr_threshold": 0.5},
    filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="retrieval")]),
)
picked = retriever.retrieve("token vectors and late interaction")
print([n.node.ref_doc_id for n in picked])
assert len(picked) == 3 and all(n.node.metadata["topic"] == "retrieval" for n in picked)

# %% [markdown]
# ## An ingestion pipeline with a docstore
#
# Split, embed, store. With a docstore, running the pipeline again on unchanged documents
# writes nothing; a changed document replaces its own nodes only. The vector store reopens
# from disk with its recorded settings.

# %%
pipeline_store = VLLMMultiVectorStore(path=str(workdir / "pipeline_index"), encoder=encoder)
pipeline = IngestionPipeline(
    transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0), embed_model],
    vector_store=pipeline_store,
    docstore=SimpleDocumentStore(),
)
rows = load_sample_corpus()
first = pipeline.run(documents=[Document(text=r["text"], id_=r["id"]) for r in rows])
again = pipeline.run(documents=[Document(text=r["text"], id_=r["id"]) for r in rows])
print(f"first run wrote {len(first)} nodes, the second run {len(again)}")
assert len(first) == len(rows) and again == []
changed = [Document(text=r["text"], id_=r["id"]) for r in rows]
changed[0] = Document(text="vLLM also serves pooling models over HTTP.", id_=rows[0]["id"])
updated = pipeline.run(documents=changed)
print("after one edit:", [n.ref_doc_id for n in updated], "written")
assert [n.ref_doc_id for n in updated] == [rows[0]["id"]]
pipeline_store.close()

reopened = VLLMMultiVectorStore(path=str(workdir / "pipeline_index"))
reopened_index = VectorStoreIndex.from_vector_store(reopened, embed_model=embed_model)
top = reopened_index.as_retriever(similarity_top_k=1).retrieve("Which engine serves over HTTP?")
print("reopened:", top[0].node.ref_doc_id, top[0].node.get_content())
assert top[0].node.ref_doc_id == rows[0]["id"]

# %%
reopened.close()
vector_store.close()
store.close()
shutdown_engines()
