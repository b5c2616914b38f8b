"""A RAG chain on real SciFact data: retriever → MaxSim reranker → prompt → fake chat model.

The chain is plain LCEL from ``langchain_core``. The chat model is ``FakeListChatModel`` (no
LLM is reachable here), so the test checks what the model is given: the reranked top
document, which must be a relevant abstract for most claims.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import itemgetter
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from vllm_retrieval import Encoder
from vllm_retrieval.langchain import VLLMMaxSimReranker, VLLMMultiVectorStore
from vllm_retrieval.scoring import MaxSimReranker

ANSWER = "Based on the context, the claim is supported."
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer from the context only.\n\nContext:\n{context}"),
        ("human", "{question}"),
    ]
)
# Every claim of the sample (40) goes through invoke, ainvoke and batch.
# Bars for the packaged all-MiniLM-L6-v2, which is a dense model, not a late-interaction one:
# measured here, MaxSim reranking of the dense top-10 puts a relevant abstract first for
# 30/40 claims (0.75) and among the three documents the model sees for 37/40 (0.925).
# (The dense order alone: 0.80 / 0.95; a ColBERT-trained model is needed for MaxSim to win.)
MIN_TOP1 = 0.7
MIN_HIT3 = 0.85


def _format(docs: list[Document]) -> str:
    return "\n\n".join(f"[{d.id}] {d.page_content}" for d in docs)


@pytest.fixture(scope="module")
def rag_store(encoder: Encoder, scifact_sample: dict[str, Any]) -> Iterator[VLLMMultiVectorStore]:
    corpus: dict[str, str] = scifact_sample["corpus"]
    vs = VLLMMultiVectorStore(encoder=encoder)
    vs.add_texts(list(corpus.values()), [{"source": "scifact"}] * len(corpus), ids=list(corpus))
    yield vs
    vs.store.close()


@pytest.fixture(scope="module")
def reranker(encoder: Encoder) -> VLLMMaxSimReranker:
    # The LRU cache spares re-encoding the same abstracts in the invoke/ainvoke/batch runs.
    return VLLMMaxSimReranker(reranker=MaxSimReranker(encoder=encoder, cache_size=1024), top_n=3)


def _chain(vs: VLLMMultiVectorStore, reranker: VLLMMaxSimReranker) -> Runnable[str, dict[str, Any]]:
    """question → {docs (reranked), question, prompt, answer}."""
    # First stage: the store's plain LangChain retriever (dense); second stage: MaxSim.
    retriever = vs.as_retriever(search_kwargs={"k": 10, "mode": "dense"})

    def rerank(inputs: dict[str, Any]) -> list[Document]:
        return list(reranker.compress_documents(inputs["docs"], inputs["question"]))

    async def arerank(inputs: dict[str, Any]) -> list[Document]:
        return list(await reranker.acompress_documents(inputs["docs"], inputs["question"]))

    prompt = {
        "context": itemgetter("docs") | RunnableLambda(_format),
        "question": itemgetter("question"),
    } | PROMPT
    llm = FakeListChatModel(responses=[ANSWER])
    return (
        {"docs": retriever, "question": RunnablePassthrough()}
        | RunnablePassthrough.assign(docs=RunnableLambda(rerank, afunc=arerank))
        | RunnablePassthrough.assign(prompt=prompt)
        | RunnablePassthrough.assign(answer=itemgetter("prompt") | llm | StrOutputParser())
    )


def _claims(sample: dict[str, Any]) -> list[tuple[str, str, set[str]]]:
    queries: dict[str, str] = sample["queries"]
    qrels: dict[str, set[str]] = sample["qrels"]
    return [(qid, queries[qid], qrels[qid]) for qid in queries]


def _check(result: dict[str, Any], question: str) -> str:
    """The chain's output is consistent; returns the top document's id."""
    docs: list[Document] = result["docs"]
    assert result["question"] == question
    assert result["answer"] == ANSWER
    assert len(docs) == 3  # k=10 dense candidates, reranker top_n=3
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    assert all(d.metadata["source"] == "scifact" for d in docs)
    messages = result["prompt"].to_messages()
    assert messages[-1].content == question
    context = str(messages[0].content)
    # The model sees the reranked documents, best first.
    positions = [context.index(f"[{d.id}] {d.page_content}") for d in docs]
    assert positions == sorted(positions)
    assert docs[0].id is not None
    return docs[0].id


def _check_quality(results: list[dict[str, Any]], claims: list[tuple[str, str, set[str]]]) -> None:
    pairs = list(zip(results, claims, strict=True))
    top1 = sum(r["docs"][0].id in rel for r, (_, _, rel) in pairs) / len(pairs)
    hit3 = sum(any(d.id in rel for d in r["docs"]) for r, (_, _, rel) in pairs) / len(pairs)
    assert top1 >= MIN_TOP1, (top1, [(r["docs"][0].id, sorted(rel)) for r, (_, _, rel) in pairs])
    assert hit3 >= MIN_HIT3, hit3


@pytest.fixture(scope="module")
def invoke_results(
    rag_store: VLLMMultiVectorStore, reranker: VLLMMaxSimReranker, scifact_sample: dict[str, Any]
) -> list[dict[str, Any]]:
    chain = _chain(rag_store, reranker)
    return [chain.invoke(q) for _, q, _ in _claims(scifact_sample)]


def _tops(results: list[dict[str, Any]], claims: list[tuple[str, str, set[str]]]) -> list[str]:
    return [_check(r, q) for r, (_, q, _) in zip(results, claims, strict=True)]


def test_rag_invoke_top_document_is_relevant(
    invoke_results: list[dict[str, Any]], scifact_sample: dict[str, Any]
) -> None:
    claims = _claims(scifact_sample)
    _tops(invoke_results, claims)
    _check_quality(invoke_results, claims)


async def test_rag_ainvoke_matches_invoke(
    rag_store: VLLMMultiVectorStore,
    reranker: VLLMMaxSimReranker,
    scifact_sample: dict[str, Any],
    invoke_results: list[dict[str, Any]],
) -> None:
    claims = _claims(scifact_sample)
    chain = _chain(rag_store, reranker)
    results = [await chain.ainvoke(q) for _, q, _ in claims]
    assert _tops(results, claims) == _tops(invoke_results, claims)
    _check_quality(results, claims)


def test_rag_batch_matches_invoke(
    rag_store: VLLMMultiVectorStore,
    reranker: VLLMMaxSimReranker,
    scifact_sample: dict[str, Any],
    invoke_results: list[dict[str, Any]],
) -> None:
    claims = _claims(scifact_sample)
    chain = _chain(rag_store, reranker)
    results = chain.batch([q for _, q, _ in claims], config={"max_concurrency": 4})
    assert _tops(results, claims) == _tops(invoke_results, claims)
    _check_quality(results, claims)
