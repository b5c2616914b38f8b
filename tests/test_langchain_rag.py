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
from vllm_retrieval.core.reranker import MaxSimReranker
from vllm_retrieval.langchain import VLLMMaxSimReranker, VLLMMultiVectorStore

ANSWER = "Based on the context, the claim is supported."
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer from the context only.\n\nContext:\n{context}"),
        ("human", "{question}"),
    ]
)
# Claims checked one by one through invoke / ainvoke / batch.
N_CLAIMS = 12
# Share of these claims whose reranked top document must be relevant (qrels). The dense
# baseline (all-MiniLM-L6-v2) scores nDCG@10 ≈ 0.65 on SciFact; MaxSim over its token vectors
# is in the same range, so a large majority of top-1 hits (not all) is the right bar.
MIN_TOP1 = 0.6


def _format(docs: list[Document]) -> str:
    return "\n\n".join(f"[{d.id}] {d.page_content}" for d in docs)


@pytest.fixture(scope="module")
def rag_store(encoder: Encoder, scifact_sample: dict[str, Any]) -> Iterator[VLLMMultiVectorStore]:
    corpus: dict[str, str] = scifact_sample["corpus"]
    vs = VLLMMultiVectorStore(encoder=encoder)
    vs.add_texts(list(corpus.values()), [{"source": "scifact"}] * len(corpus), ids=list(corpus))
    yield vs
    vs.store.close()


def _chain(vs: VLLMMultiVectorStore, encoder: Encoder) -> Runnable[str, dict[str, Any]]:
    """question → {docs (reranked), question, prompt, answer}."""
    # First stage: the store's plain LangChain retriever (dense); second stage: MaxSim.
    retriever = vs.as_retriever(search_kwargs={"k": 10, "mode": "dense"})
    reranker = VLLMMaxSimReranker(reranker=MaxSimReranker(encoder=encoder, cache_size=512), top_n=3)

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
    return [(qid, queries[qid], qrels[qid]) for qid in list(queries)[:N_CLAIMS]]


def _check(result: dict[str, Any], question: str) -> str:
    """The chain's output is consistent; returns the top document's id."""
    docs: list[Document] = result["docs"]
    assert result["question"] == question
    assert result["answer"] == ANSWER
    assert 1 <= len(docs) <= 3
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


def _top1_rate(tops: list[str], claims: list[tuple[str, str, set[str]]]) -> float:
    return sum(top in rel for top, (_, _, rel) in zip(tops, claims, strict=True)) / len(claims)


@pytest.fixture(scope="module")
def invoke_tops(
    rag_store: VLLMMultiVectorStore, encoder: Encoder, scifact_sample: dict[str, Any]
) -> list[str]:
    chain = _chain(rag_store, encoder)
    return [_check(chain.invoke(q), q) for _, q, _ in _claims(scifact_sample)]


def test_rag_invoke_top_document_is_relevant(
    invoke_tops: list[str], scifact_sample: dict[str, Any]
) -> None:
    claims = _claims(scifact_sample)
    assert _top1_rate(invoke_tops, claims) >= MIN_TOP1, list(
        zip(invoke_tops, [sorted(r) for _, _, r in claims], strict=True)
    )


async def test_rag_ainvoke_matches_invoke(
    rag_store: VLLMMultiVectorStore,
    encoder: Encoder,
    scifact_sample: dict[str, Any],
    invoke_tops: list[str],
) -> None:
    chain = _chain(rag_store, encoder)
    tops = [_check(await chain.ainvoke(q), q) for _, q, _ in _claims(scifact_sample)]
    assert tops == invoke_tops
    assert _top1_rate(tops, _claims(scifact_sample)) >= MIN_TOP1


def test_rag_batch_matches_invoke(
    rag_store: VLLMMultiVectorStore,
    encoder: Encoder,
    scifact_sample: dict[str, Any],
    invoke_tops: list[str],
) -> None:
    chain = _chain(rag_store, encoder)
    questions = [q for _, q, _ in _claims(scifact_sample)]
    results = chain.batch(questions, config={"max_concurrency": 4})
    tops = [_check(r, q) for r, q in zip(results, questions, strict=True)]
    assert tops == invoke_tops


def test_rag_reranking_is_at_least_as_good_as_dense(
    rag_store: VLLMMultiVectorStore, scifact_sample: dict[str, Any], invoke_tops: list[str]
) -> None:
    """MaxSim reranking of the dense top-10 does not lose top-1 hits overall on these claims."""
    claims = _claims(scifact_sample)
    dense_tops = [rag_store.similarity_search(q, k=1, mode="dense")[0].id for _, q, _ in claims]
    assert _top1_rate(invoke_tops, claims) >= _top1_rate(
        [t or "" for t in dense_tops], claims
    ) - 1 / len(claims)
