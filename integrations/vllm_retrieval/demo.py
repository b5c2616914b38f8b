"""`make demo`: the main job on the embedded default, end to end.

1. Encodes the bundled sample corpus with the packaged all-MiniLM-L6-v2 on one vLLM engine
   (dense + token vectors from one forward pass), prints the shapes, and ranks the corpus for
   a few queries by dense cosine and by MaxSim late interaction.
2. Indexes the corpus into an embedded ``MultiVectorStore`` (Qdrant Edge, in a temporary
   folder) and retrieves context for questions through a LangChain chain (multi-vector
   retriever → MaxSim reranker → prompt) and LlamaIndex (retriever with a metadata filter →
   MaxSim rerank node → the query engine's prompt), printing the ranked sources and the exact
   prompt a chat model would get. No LLM runs here (none ships with the package, and a fake
   one's "answer" would tell you nothing): pipe the chain into your chat model.

Everything runs on ONE engine: the store, the rerankers and both frameworks share the encoder.
vLLM's own logs are hidden; ``python -m vllm_retrieval.demo -v`` shows them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm_retrieval import Encoder
    from vllm_retrieval.store import MultiVectorStore

RAG_QUESTIONS = [
    "How does ColBERT score documents?",
    "What makes bread rise?",
]
LLAMA_QUESTION = "Which tools find nearest neighbours quickly?"
LLAMA_FILTER = ("topic", "retrieval")

QUERIES = [
    "How does late interaction score a document?",
    "Which enzyme edits genes?",
    "how do you make bread rise",
]


def load_sample_corpus() -> list[dict[str, Any]]:
    """The bundled sample corpus: ``{"id", "text", "topic", "year"}`` rows."""
    text = resources.files("vllm_retrieval").joinpath("data/sample_corpus.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vllm_retrieval.demo", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show vLLM's logs")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vllm_retrieval.encoding.backends.local import prefer_in_process_engine, quiet_engine_logs

    quiet_engine_logs(not args.verbose)  # before vLLM is imported
    prefer_in_process_engine()  # a program with one engine: the faster start
    import numpy as np

    from vllm_retrieval import Encoder, shutdown_engines
    from vllm_retrieval.scoring.maxsim import maxsim

    corpus = load_sample_corpus()
    texts = [row["text"] for row in corpus]
    print("Starting the shared vLLM engine (packaged all-MiniLM-L6-v2)...", flush=True)
    t0 = time.perf_counter()
    enc = Encoder().start()
    print(f"engine ready in {time.perf_counter() - t0:.1f} s", flush=True)

    dense, tokens = enc.encode_documents(texts)  # one forward pass per document
    print(f"\ncorpus: {len(texts)} documents")
    print(f"dense vectors: {dense.shape} {dense.dtype}")
    for row, tok in list(zip(corpus, tokens, strict=True))[:3]:
        print(f"token vectors of {row['id']!r}: {tok.shape}")
    print(f"total token vectors: {sum(t.shape[0] for t in tokens)}")

    for query in QUERIES:
        q_dense, q_tokens = enc.encode_queries([query])
        by_dense = np.argsort(-(dense @ q_dense[0]), kind="stable")[:3]
        scores = maxsim(q_tokens[0], tokens)
        by_maxsim = np.argsort(-scores, kind="stable")[:3]
        print(f"\nquery: {query!r}  (query tokens: {q_tokens[0].shape})")
        print("  dense cosine        | MaxSim (sum over query tokens)")
        for a, b in zip(by_dense, by_maxsim, strict=True):
            left = f"{corpus[a]['id']:<14} {float(dense[a] @ q_dense[0]):.3f}"
            right = f"{corpus[b]['id']:<14} {float(scores[b]):.3f}"
            print(f"  {left} | {right}")

    with tempfile.TemporaryDirectory(prefix="vllm-retrieval-demo-") as tmp:
        store = index_sample_corpus(enc, corpus, Path(tmp) / "index")
        try:
            langchain_demo(store, enc)
            llama_index_demo(store, enc)
        finally:
            store.close()
    shutdown_engines()  # now, not in the interpreter's teardown


def index_sample_corpus(enc: Encoder, corpus: list[dict[str, Any]], path: Path) -> MultiVectorStore:
    """The sample corpus in an embedded store (ids and topic/year metadata kept)."""
    from vllm_retrieval.store import MultiVectorStore

    store = MultiVectorStore(path, encoder=enc)
    store.add_texts(
        [row["text"] for row in corpus],
        [{k: v for k, v in row.items() if k not in ("id", "text")} for row in corpus],
        [row["id"] for row in corpus],
    )
    print(f"\nindexed {len(store)} documents into {store!r}")
    return store


def _show_prompt(messages: Sequence[tuple[str, str]]) -> None:
    print("  prompt a chat model would get:")
    for role, content in messages:
        print(f"    [{role}]")
        for line in content.splitlines():
            print(f"      {line}")


def langchain_demo(store: MultiVectorStore, enc: Encoder) -> None:
    """A LangChain RAG chain up to the prompt: retriever → MaxSim reranker → prompt."""
    from operator import itemgetter

    from langchain_core.documents import Document
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    from vllm_retrieval.langchain import VLLMMaxSimReranker, VLLMMultiVectorRetriever

    retriever = VLLMMultiVectorRetriever(store=store, k=6, mode="dense")
    reranker = VLLMMaxSimReranker(encoder=enc, top_n=3)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context.\n\n{context}"), ("human", "{question}")]
    )

    def rerank(inputs: dict[str, Any]) -> list[Document]:
        return list(reranker.compress_documents(inputs["docs"], inputs["question"]))

    def context(docs: list[Document]) -> str:
        return "\n".join(f"[{d.id}] {d.page_content}" for d in docs)

    to_prompt = {
        "context": itemgetter("docs") | RunnableLambda(context),
        "question": itemgetter("question"),
    } | prompt
    # Add `| your_chat_model | StrOutputParser()` to to_prompt for answers.
    chain = (
        {"docs": retriever, "question": RunnablePassthrough()}
        | RunnablePassthrough.assign(docs=RunnableLambda(rerank))
        | RunnablePassthrough.assign(prompt=to_prompt)
    )
    print("\n== LangChain: dense retriever (k=6) → MaxSim reranker (top 3) → prompt")
    for question in RAG_QUESTIONS:
        out = chain.invoke(question)
        print(f"\nQ: {question}")
        print("  retrieved context:")
        for rank, doc in enumerate(out["docs"], 1):
            score = doc.metadata["relevance_score"]
            print(f"  {rank}. {doc.id:<14} MaxSim {score:6.3f}  {doc.page_content[:60]}...")
        _show_prompt([(m.type, str(m.content)) for m in out["prompt"].to_messages()])


def llama_index_demo(store: MultiVectorStore, enc: Encoder) -> None:
    """LlamaIndex up to the prompt: filtered hybrid retriever → MaxSim rerank → QA prompt."""
    from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT
    from llama_index.core.schema import QueryBundle
    from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

    from vllm_retrieval.llama_index import VLLMMaxSimRerank, VLLMMultiVectorRetriever

    key, value = LLAMA_FILTER
    retriever = VLLMMultiVectorRetriever(
        store,
        similarity_top_k=5,
        mode="hybrid",
        filters=MetadataFilters(filters=[MetadataFilter(key=key, value=value)]),
    )
    rerank = VLLMMaxSimRerank(3, encoder=enc)
    # With an LLM: RetrieverQueryEngine.from_args(retriever, llm=..., node_postprocessors=[rerank])
    print(f"\n== LlamaIndex: hybrid retriever ({key}={value!r}) → MaxSim rerank → QA prompt")
    query = QueryBundle(LLAMA_QUESTION)
    nodes = rerank.postprocess_nodes(retriever.retrieve(query), query)
    print(f"\nQ: {LLAMA_QUESTION}")
    print("  retrieved context:")
    for rank, node in enumerate(nodes, 1):
        meta = node.node.metadata
        text = node.node.get_content()[:60]
        print(f"  {rank}. {node.node.node_id:<14} MaxSim {node.score or 0:6.3f}  {meta}  {text}...")
    context = "\n\n".join(n.node.get_content() for n in nodes)
    text = DEFAULT_TEXT_QA_PROMPT.format(context_str=context, query_str=LLAMA_QUESTION)
    _show_prompt([("user", text)])


if __name__ == "__main__":
    main()
