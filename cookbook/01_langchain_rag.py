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
# # 1. A LangChain RAG chain with multi-vector retrieval and MaxSim reranking
#
# This notebook builds a small retrieval-augmented generation (RAG) chain in plain LCEL:
#
# 1. **one** vLLM engine (the packaged `all-MiniLM-L6-v2`, CPU is fine) gives every text a
#    dense vector *and* one vector per token, from a single forward pass;
# 2. documents go into an embedded multi-vector store (Qdrant Edge, a folder on disk);
# 3. the `VLLMMultiVectorRetriever` finds candidates (dense prefetch + MaxSim rerank inside
#    the store), the `VLLMMaxSimReranker` re-scores any list of `Document`s by late
#    interaction, and a chat model answers from the top sources.
#
# No LLM is reachable here, so the chat model is LangChain's `FakeListChatModel`: swap in
# any real chat model and nothing else changes.

# %%
import os
import tempfile
from operator import itemgetter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from vllm_retrieval import Encoder, shutdown_engines
from vllm_retrieval.demo import load_sample_corpus
from vllm_retrieval.langchain import (
    VLLMEmbeddings,
    VLLMMaxSimReranker,
    VLLMMultiVectorRetriever,
)
from vllm_retrieval.store import MultiVectorStore

# %% [markdown]
# ## One encoder, one engine
#
# `Encoder()` starts (on first use) the shared vLLM engine. Every adapter below receives this
# same object, so the whole notebook runs on one engine and one copy of the model.

# %%
encoder = Encoder().start()
embeddings = VLLMEmbeddings(encoder=encoder)
vector = embeddings.embed_query("What is late interaction?")
tokens = encoder.embed_query_tokens("What is late interaction?")
print(f"dense query vector: {len(vector)} floats; token vectors: {tokens.shape}")

# %% [markdown]
# ## Index a corpus
#
# The bundled sample corpus has 24 short documents with `topic` and `year` metadata.

# %%
corpus = load_sample_corpus()
workdir = Path(tempfile.mkdtemp(prefix="cookbook-langchain-"))
store = MultiVectorStore(workdir / "index", encoder=encoder)
store.add_texts(
    [row["text"] for row in corpus],
    [{"topic": row["topic"], "year": row["year"]} for row in corpus],
    [row["id"] for row in corpus],
)
print(store, "holds", len(store), "documents")

# %% [markdown]
# ## The retriever
#
# `mode="hybrid"` (the default) prefetches candidates by dense cosine and reranks them by
# MaxSim over the stored token vectors, in one store query. Metadata filters use a
# Mongo-like syntax.

# %%
retriever = VLLMMultiVectorRetriever(store=store, k=4)
for doc in retriever.invoke("How are token vectors compressed?"):
    print(f"{doc.metadata['relevance_score']:7.3f}  {doc.id:<12} {doc.page_content[:70]}")

print("\nonly documents from 2021 on:")
recent = retriever.invoke("retrieval models", filter={"year": {"$gte": 2021}})
for doc in recent:
    print(f"{doc.metadata['year']}  {doc.id:<12} {doc.page_content[:70]}")

# %% [markdown]
# ## The chain: retrieve wide, rerank by MaxSim, answer
#
# A common pattern is a cheap first stage (here: dense only, 8 candidates) followed by a
# precise reranker. `VLLMMaxSimReranker` is a LangChain `BaseDocumentCompressor`: it returns
# scored **copies** of the best `top_n` documents.

# %%
first_stage = VLLMMultiVectorRetriever(store=store, k=8, mode="dense")
reranker = VLLMMaxSimReranker(encoder=encoder, top_n=3)
prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question from the context only.\n\nContext:\n{context}"),
        ("human", "{question}"),
    ]
)
llm = FakeListChatModel(
    responses=["ColBERT sums, over query tokens, the best similarity to any document token."]
)


def rerank(inputs: dict) -> list[Document]:
    return list(reranker.compress_documents(inputs["docs"], inputs["question"]))


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"[{d.id}] {d.page_content}" for d in docs)


context = itemgetter("docs") | RunnableLambda(format_docs)
answer = {"context": context, "question": itemgetter("question")} | prompt | llm | StrOutputParser()
chain = (
    {"docs": first_stage, "question": RunnablePassthrough()}
    | RunnablePassthrough.assign(docs=RunnableLambda(rerank))
    | RunnablePassthrough.assign(answer=answer)
)

result = chain.invoke("How does ColBERT score a document?")
for rank, doc in enumerate(result["docs"], 1):
    print(f"{rank}. {doc.id:<12} MaxSim {doc.metadata['relevance_score']:.3f}")
print("\nanswer:", result["answer"])

# %%
assert result["docs"][0].id in {"colbert", "colbertv2"}
assert len(result["docs"]) == 3

# %% [markdown]
# ## Clean up
#
# Closing the store flushes it; `shutdown_engines()` stops the engine process.

# %%
store.close()
shutdown_engines()
