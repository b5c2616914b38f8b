"""LangChain adapters on the real vLLM CPU engine: embeddings, retriever, reranker, store."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore, VectorStoreRetriever

from vllm_retrieval import Encoder
from vllm_retrieval.langchain import (
    VLLMEmbeddings,
    VLLMMaxSimReranker,
    VLLMMultiVectorRetriever,
    VLLMMultiVectorStore,
)
from vllm_retrieval.scoring import MaxSimReranker
from vllm_retrieval.store import MultiVectorStore

REPO = Path(__file__).resolve().parents[1]

TEXTS = [
    "The mitochondrion is the powerhouse of the cell and produces ATP.",
    "Paris is the capital and largest city of France.",
    "Insulin is a hormone that lowers blood glucose levels.",
    "The Python programming language emphasises code readability.",
    "Photosynthesis in plants turns sunlight, water and CO2 into sugar.",
    "Mount Everest is the highest mountain on Earth.",
]
METAS = [
    {"topic": "biology", "year": 2001, "n": 0},
    {"topic": "geography", "year": 2010, "n": 1},
    {"topic": "biology", "year": 2015, "n": 2},
    {"topic": "computing", "year": 2020, "n": 3},
    {"topic": "biology", "year": 2005, "n": 4},
    {"topic": "geography", "year": 2012, "n": 5},
]
IDS = [f"doc-{i}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def core_store(encoder: Encoder) -> Iterator[MultiVectorStore]:
    store = MultiVectorStore(location=":memory:", encoder=encoder)
    store.add_texts(TEXTS, METAS, IDS)
    yield store
    store.close()


@pytest.fixture(scope="module")
def reranker(encoder: Encoder) -> VLLMMaxSimReranker:
    return VLLMMaxSimReranker(encoder=encoder, top_n=3)


def _docs() -> list[Document]:
    return [
        Document(id=i, page_content=t, metadata={**m, "tags": ["x"]})
        for i, t, m in zip(IDS, TEXTS, METAS, strict=True)
    ]


# -- imports --------------------------------------------------------------------------------


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def test_import_does_not_import_llama_index() -> None:
    proc = _run_python(
        """
        import sys
        import vllm_retrieval.langchain as lc
        for name in lc.__all__:
            getattr(lc, name)
        # langchain_classic (ContextualCompressionRetriever) is used by the tests only
        others = ("llama_index", "vllm", "langchain_classic")
        bad = sorted(m for m in sys.modules if m.split(".")[0] in others)
        assert not bad, bad
        assert "langchain_core" in sys.modules
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_missing_langchain_core_names_the_extra() -> None:
    proc = _run_python(
        """
        import sys
        sys.modules["langchain_core"] = None  # as if the package were not installed
        try:
            import vllm_retrieval.langchain
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("no ImportError")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "vllm-retrieval[langchain]" in proc.stdout


def test_unknown_attribute() -> None:
    import vllm_retrieval.langchain as lc

    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = lc.NoSuchThing


# -- VLLMEmbeddings -------------------------------------------------------------------------


def test_embeddings_match_the_core_encoder(encoder: Encoder) -> None:
    emb = VLLMEmbeddings(encoder=encoder)
    assert emb.core_encoder is encoder
    docs = emb.embed_documents(TEXTS[:3])
    assert len(docs) == 3
    assert all(type(x) is float for row in docs for x in row)
    np.testing.assert_allclose(np.array(docs), encoder.embed_documents(TEXTS[:3]), atol=1e-6)
    query = emb.embed_query("energy in cells")
    assert all(type(x) is float for x in query)
    np.testing.assert_allclose(query, encoder.embed_query("energy in cells"), atol=1e-6)
    assert emb.embed_documents([]) == []


async def test_embeddings_async_match_sync(encoder: Encoder) -> None:
    emb = VLLMEmbeddings(encoder=encoder)
    docs = await emb.aembed_documents(TEXTS[:2])
    np.testing.assert_allclose(docs, emb.embed_documents(TEXTS[:2]), atol=1e-6)
    query = await emb.aembed_query("capital of France")
    np.testing.assert_allclose(query, emb.embed_query("capital of France"), atol=1e-6)


def test_embeddings_configured_share_the_engine(encoder: Encoder) -> None:
    emb = VLLMEmbeddings(batch_size=2)
    assert emb.core_encoder is not encoder
    assert emb.core_encoder.batch_size == 2
    assert emb.core_encoder.engine is encoder.engine  # equal settings: one engine
    np.testing.assert_allclose(
        emb.embed_documents(TEXTS[:3]), encoder.embed_documents(TEXTS[:3]), atol=1e-6
    )


def test_embeddings_config_errors(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="either encoder"):
        VLLMEmbeddings(encoder=encoder, batch_size=8)
    with pytest.raises(ValueError, match="extra"):
        VLLMEmbeddings(not_a_field=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        VLLMEmbeddings(batch_size=0)


def test_embeddings_bad_input(encoder: Encoder) -> None:
    emb = VLLMEmbeddings(encoder=encoder)
    with pytest.raises(TypeError):
        emb.embed_documents("not a list")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        emb.embed_query("")


def test_embeddings_power_in_memory_vector_store(encoder: Encoder) -> None:
    store = InMemoryVectorStore(embedding=VLLMEmbeddings(encoder=encoder))
    store.add_texts(TEXTS, METAS, ids=IDS)
    hits = store.similarity_search("Which hormone controls blood sugar?", k=2)
    assert hits[0].id == "doc-2"


# -- VLLMMultiVectorRetriever ---------------------------------------------------------------


def test_retriever_documents_and_scores(core_store: MultiVectorStore) -> None:
    retriever = VLLMMultiVectorRetriever(store=core_store, k=3)
    docs = retriever.invoke("Which hormone controls blood sugar?")
    assert len(docs) == 3
    assert docs[0].id == "doc-2"
    assert docs[0].page_content == TEXTS[2]
    assert {k: v for k, v in docs[0].metadata.items() if k != "relevance_score"} == METAS[2]
    scores = [d.metadata["relevance_score"] for d in docs]
    assert all(type(s) is float for s in scores)
    assert scores == sorted(scores, reverse=True)
    hits = core_store.search("Which hormone controls blood sugar?", k=3)
    assert [d.id for d in docs] == [h.id for h in hits]
    assert scores == pytest.approx([h.score for h in hits])


def test_retriever_invoke_overrides(core_store: MultiVectorStore) -> None:
    retriever = VLLMMultiVectorRetriever(store=core_store, k=4, filter={"topic": "biology"})
    query = "What happens in plant leaves with sunlight?"
    assert len(retriever.invoke(query)) == 3  # only three biology texts
    assert [d.id for d in retriever.invoke(query, k=1)] == ["doc-4"]
    geo = retriever.invoke(query, filter={"topic": "geography"})
    assert {d.id for d in geo} == {"doc-1", "doc-5"}
    recent = retriever.invoke(query, filter={"year": {"$gte": 2012}}, k=10)
    assert {d.metadata["n"] for d in recent} == {2, 3, 5}
    dense = retriever.invoke(query, mode="dense", k=2)
    dense_hits = core_store.search(query, k=2, mode="dense", filter={"topic": "biology"})
    assert [d.id for d in dense] == [h.id for h in dense_hits]
    assert [d.metadata["relevance_score"] for d in dense] == pytest.approx(
        [h.score for h in dense_hits]
    )
    for mode in ("maxsim", "fusion", "hybrid"):
        assert retriever.invoke(query, mode=mode, k=1, candidates=5)[0].id == "doc-4"
    # The constructor values are untouched by per-call overrides.
    assert retriever.k == 4
    assert retriever.filter == {"topic": "biology"}


def test_retriever_rejects_bad_arguments(core_store: MultiVectorStore) -> None:
    retriever = VLLMMultiVectorRetriever(store=core_store)
    with pytest.raises(TypeError, match="top_k"):
        retriever.invoke("cells", top_k=3)
    with pytest.raises(ValueError, match="k must be"):
        retriever.invoke("cells", k=0)
    with pytest.raises(ValueError):
        retriever.invoke("cells", mode="nonsense")
    with pytest.raises(ValueError):
        VLLMMultiVectorRetriever(store=core_store, k=0)
    with pytest.raises(ValueError):
        VLLMMultiVectorRetriever(store=core_store, extra_field=1)  # type: ignore[call-arg]


async def test_retriever_async_matches_sync(core_store: MultiVectorStore) -> None:
    retriever = VLLMMultiVectorRetriever(store=core_store, k=3)
    query = "capital city of France"
    sync = retriever.invoke(query, filter={"topic": {"$ne": "computing"}})
    asyn = await retriever.ainvoke(query, filter={"topic": {"$ne": "computing"}})
    assert [d.id for d in asyn] == [d.id for d in sync]
    assert asyn[0].id == "doc-1"
    assert [d.metadata["relevance_score"] for d in asyn] == pytest.approx(
        [d.metadata["relevance_score"] for d in sync], abs=1e-4
    )
    batch = await retriever.abatch([query, "tallest mountain"])
    assert [b[0].id for b in batch] == ["doc-1", "doc-5"]


# -- VLLMMaxSimReranker ---------------------------------------------------------------------


def test_reranker_is_a_document_compressor(reranker: VLLMMaxSimReranker) -> None:
    assert isinstance(reranker, BaseDocumentCompressor)
    assert isinstance(reranker.core_reranker, MaxSimReranker)


def test_reranker_matches_core_and_never_mutates(
    encoder: Encoder, reranker: VLLMMaxSimReranker
) -> None:
    docs = _docs()
    before = copy.deepcopy(docs)
    metadata_ids = [id(d.metadata) for d in docs]
    query = "Which organelle makes ATP?"
    out = reranker.compress_documents(docs, query)
    assert docs == before  # inputs untouched
    assert [id(d.metadata) for d in docs] == metadata_ids
    assert all("relevance_score" not in d.metadata for d in docs)
    assert len(out) == 3
    assert all(o is not d for o in out for d in docs)
    assert all(o.metadata is not d.metadata for o in out for d in docs)
    core = MaxSimReranker(encoder=encoder).rerank(query, [d.page_content for d in docs], top_n=3)
    assert [o.id for o in out] == [docs[r.index].id for r in core]
    assert [o.metadata["relevance_score"] for o in out] == pytest.approx([r.score for r in core])
    assert out[0].id == "doc-0"
    for o in out:
        src = next(d for d in docs if d.id == o.id)
        assert o.page_content == src.page_content
        assert {k: v for k, v in o.metadata.items() if k != "relevance_score"} == src.metadata
    # Mutating an output does not reach the input.
    out[0].metadata["n"] = 99
    assert docs == before


async def test_reranker_async_matches_sync(reranker: VLLMMaxSimReranker) -> None:
    docs = _docs()
    before = copy.deepcopy(docs)
    sync = reranker.compress_documents(docs, "highest mountain in the world")
    asyn = await reranker.acompress_documents(docs, "highest mountain in the world")
    assert docs == before
    assert [d.id for d in asyn] == [d.id for d in sync]
    assert asyn[0].id == "doc-5"
    assert [d.metadata["relevance_score"] for d in asyn] == pytest.approx(
        [d.metadata["relevance_score"] for d in sync], abs=1e-4
    )


def test_reranker_top_n_and_edge_cases(encoder: Encoder) -> None:
    docs = _docs()
    all_docs = VLLMMaxSimReranker(encoder=encoder, top_n=None).compress_documents(docs, "France")
    assert len(all_docs) == len(docs)
    scores = [d.metadata["relevance_score"] for d in all_docs]
    assert scores == sorted(scores, reverse=True)
    one = VLLMMaxSimReranker(encoder=encoder, top_n=1).compress_documents(docs, "France")
    assert [d.id for d in one] == ["doc-1"]
    assert VLLMMaxSimReranker(encoder=encoder).compress_documents([], "France") == []
    custom = VLLMMaxSimReranker(encoder=encoder, top_n=2, score_key="maxsim")
    assert all("maxsim" in d.metadata for d in custom.compress_documents(docs, "France"))
    with pytest.raises(ValueError):
        VLLMMaxSimReranker(encoder=encoder, top_n=0)
    with pytest.raises(ValueError, match="either"):
        VLLMMaxSimReranker(reranker=MaxSimReranker(encoder=encoder), encoder=Encoder(max_length=64))
    shared = MaxSimReranker(encoder=encoder, cache_size=16)
    assert VLLMMaxSimReranker(reranker=shared).core_reranker is shared


def test_reranker_composes_with_any_retriever_via_lcel(encoder: Encoder) -> None:
    """Base retriever (InMemoryVectorStore + VLLMEmbeddings) → MaxSim reranker, in LCEL.

    The same composition as ``ContextualCompressionRetriever`` (tested below), written with
    langchain_core runnables only.
    """
    base = InMemoryVectorStore(embedding=VLLMEmbeddings(encoder=encoder))
    base.add_documents(_docs())
    retriever = base.as_retriever(search_kwargs={"k": 5})
    reranker = VLLMMaxSimReranker(encoder=encoder, top_n=2)

    def rerank(inputs: dict[str, object]) -> list[Document]:
        return list(reranker.compress_documents(inputs["docs"], inputs["query"]))  # type: ignore[arg-type]

    async def arerank(inputs: dict[str, object]) -> list[Document]:
        docs = await reranker.acompress_documents(inputs["docs"], inputs["query"])  # type: ignore[arg-type]
        return list(docs)

    chain = RunnableParallel(docs=retriever, query=RunnablePassthrough()) | RunnableLambda(
        rerank, afunc=arerank
    )
    out = chain.invoke("Which hormone lowers blood sugar?")
    assert len(out) == 2
    assert out[0].id == "doc-2"
    assert "relevance_score" in out[0].metadata
    batch = chain.batch(["tallest mountain", "capital of France"])
    assert [docs[0].id for docs in batch] == ["doc-5", "doc-1"]


async def test_reranker_lcel_async(encoder: Encoder) -> None:
    base = InMemoryVectorStore(embedding=VLLMEmbeddings(encoder=encoder))
    await base.aadd_documents(_docs())
    reranker = VLLMMaxSimReranker(encoder=encoder, top_n=1)

    async def arerank(inputs: dict[str, object]) -> list[Document]:
        docs = await reranker.acompress_documents(inputs["docs"], inputs["query"])  # type: ignore[arg-type]
        return list(docs)

    chain = RunnableParallel(
        docs=base.as_retriever(search_kwargs={"k": 4}), query=RunnablePassthrough()
    ) | RunnableLambda(arerank)
    out = await chain.ainvoke("programming language readability")
    assert [d.id for d in out] == ["doc-3"]


# -- ContextualCompressionRetriever (langchain_classic) ------------------------------------

CCR_TOP_N = 3
CCR_BASE_K = 8


@pytest.fixture(scope="module")
def scifact_docs(scifact_sample: dict[str, Any]) -> tuple[list[str], list[Document]]:
    """Three SciFact claims, their relevant abstracts and some others, as Documents."""
    queries: dict[str, str] = scifact_sample["queries"]
    qrels: dict[str, set[str]] = scifact_sample["qrels"]
    corpus: dict[str, str] = scifact_sample["corpus"]
    chosen = list(queries)[:3]
    relevant = sorted({d for q in chosen for d in qrels[q]})
    others = [d for d in corpus if d not in relevant][:12]
    docs = [
        Document(id=d, page_content=corpus[d], metadata={"source": "scifact", "tags": ["x"]})
        for d in relevant + others
    ]
    return [queries[q] for q in chosen], docs


@pytest.fixture(scope="module")
def compression_setup(
    encoder: Encoder, scifact_docs: tuple[list[str], list[Document]]
) -> tuple[VectorStoreRetriever, ContextualCompressionRetriever, list[Document]]:
    _, docs = scifact_docs
    store = InMemoryVectorStore(embedding=VLLMEmbeddings(encoder=encoder))
    store.add_documents(docs)
    base = store.as_retriever(search_kwargs={"k": CCR_BASE_K})
    ccr = ContextualCompressionRetriever(
        base_compressor=VLLMMaxSimReranker(encoder=encoder, top_n=CCR_TOP_N),
        base_retriever=base,
    )
    return base, ccr, docs


def _check_reranked(
    out: list[Document], base_docs: list[Document], encoder: Encoder, q: str
) -> None:
    """``out`` is exactly ``base_docs`` reranked by MaxSim (the core reranker), top_n kept."""
    core = MaxSimReranker(encoder=encoder).rerank(
        q, [d.page_content for d in base_docs], top_n=CCR_TOP_N
    )
    assert len(out) == CCR_TOP_N
    assert [o.id for o in out] == [base_docs[r.index].id for r in core]
    scores = [o.metadata["relevance_score"] for o in out]
    assert scores == pytest.approx([r.score for r in core], abs=1e-4)
    assert scores == sorted(scores, reverse=True)
    by_id = {d.id: d for d in base_docs}
    for o in out:
        src = by_id[o.id]
        assert o is not src and o.metadata is not src.metadata
        assert o.page_content == src.page_content
        assert {k: v for k, v in o.metadata.items() if k != "relevance_score"} == src.metadata


def test_reranker_in_contextual_compression_retriever(
    encoder: Encoder,
    scifact_docs: tuple[list[str], list[Document]],
    compression_setup: tuple[VectorStoreRetriever, ContextualCompressionRetriever, list[Document]],
) -> None:
    """LangChain's ContextualCompressionRetriever over a plain InMemoryVectorStore retriever."""
    queries, _ = scifact_docs
    base, ccr, docs = compression_setup
    before = copy.deepcopy(docs)
    for q in queries:
        base_docs = base.invoke(q)
        assert len(base_docs) == CCR_BASE_K
        base_before = copy.deepcopy(base_docs)
        out = ccr.invoke(q)
        _check_reranked(out, base_docs, encoder, q)
        # the base retriever's documents, and the documents it was built from, are untouched
        assert base.invoke(q) == base_before
        assert all("relevance_score" not in d.metadata for d in base.invoke(q))
    assert docs == before


async def test_reranker_in_contextual_compression_retriever_async(
    encoder: Encoder,
    scifact_docs: tuple[list[str], list[Document]],
    compression_setup: tuple[VectorStoreRetriever, ContextualCompressionRetriever, list[Document]],
) -> None:
    queries, _ = scifact_docs
    base, ccr, docs = compression_setup
    before = copy.deepcopy(docs)
    for q in queries:
        base_docs = await base.ainvoke(q)
        base_before = copy.deepcopy(base_docs)
        out = await ccr.ainvoke(q)
        _check_reranked(out, base_docs, encoder, q)
        sync = ccr.invoke(q)
        assert [d.id for d in out] == [d.id for d in sync]
        assert await base.ainvoke(q) == base_before
    assert docs == before


# -- VLLMMultiVectorStore -------------------------------------------------------------------


def test_vectorstore_from_texts_and_search(encoder: Encoder, tmp_path: Path) -> None:
    emb = VLLMEmbeddings(encoder=encoder)
    metas = copy.deepcopy(METAS)
    vs = VLLMMultiVectorStore.from_texts(TEXTS, emb, metas, ids=IDS, path=tmp_path / "s")
    try:
        assert metas == METAS
        assert len(vs) == len(TEXTS)
        assert vs.embeddings is emb
        docs = vs.similarity_search("Which hormone controls blood sugar?", k=2)
        assert docs[0] == Document(id="doc-2", page_content=TEXTS[2], metadata=METAS[2])
        scored = vs.similarity_search_with_score("Which hormone controls blood sugar?", k=2)
        assert [d for d, _ in scored] == docs
        assert scored[0][1] >= scored[1][1]
        filtered = vs.similarity_search("mountains", k=5, filter={"topic": "biology"})
        assert {d.id for d in filtered} == {"doc-0", "doc-2", "doc-4"}
        dense = vs.similarity_search_with_score("capital of France", k=1, mode="dense")
        assert dense[0][0].id == "doc-1"
        assert -1.0 <= dense[0][1] <= 1.0 + 1e-6
        assert vs.get_by_ids(["doc-3", "missing"]) == [
            Document(id="doc-3", page_content=TEXTS[3], metadata=METAS[3])
        ]
        assert vs.delete(filter={"topic": "geography"})
        assert len(vs) == 4
        with pytest.raises(ValueError, match="ids or filter"):
            vs.delete()
        with pytest.raises(TypeError, match="unexpected"):
            vs.similarity_search("x", k=1, top_k=2)
    finally:
        vs.store.close()


def test_vectorstore_retrievers(encoder: Encoder) -> None:
    vs = VLLMMultiVectorStore(encoder=encoder)  # qdrant-client local mode, in memory
    vs.add_documents(_docs())
    retriever = vs.as_retriever(search_kwargs={"k": 2, "filter": {"topic": "geography"}})
    assert isinstance(retriever, VectorStoreRetriever)
    docs = retriever.invoke("tallest peak")
    assert [d.id for d in docs] == ["doc-5", "doc-1"]
    assert VLLMMultiVectorRetriever(store=vs).store is vs.store
    mv = vs.as_multivector_retriever(k=1)
    assert isinstance(mv, VLLMMultiVectorRetriever)
    top = mv.invoke("tallest peak")
    assert top[0].id == "doc-5"
    assert "relevance_score" in top[0].metadata


def test_vectorstore_rejects_other_embeddings(encoder: Encoder) -> None:
    with pytest.raises(TypeError, match="VLLMEmbeddings"):
        VLLMMultiVectorStore.from_texts(TEXTS, DeterministicFakeEmbedding(size=8))
    store = MultiVectorStore(location=":memory:", encoder=encoder)
    with pytest.raises(ValueError, match="store="):
        VLLMMultiVectorStore(store, path="/tmp/elsewhere")
    with pytest.raises(ValueError, match="metadatas"):
        VLLMMultiVectorStore(store).add_texts(["a", "b"], [{}])
    store.close()


async def test_vectorstore_async(encoder: Encoder) -> None:
    vs = await VLLMMultiVectorStore.afrom_texts(TEXTS, VLLMEmbeddings(encoder=encoder), METAS)
    docs = await vs.asimilarity_search("capital of France", k=1)
    assert docs[0].page_content == TEXTS[1]
    scored = await vs.asimilarity_search_with_score("capital of France", k=2)
    assert scored[0][0] == docs[0]
    assert await vs.adelete([docs[0].id or ""])
    assert await vs.aget_by_ids([docs[0].id or ""]) == []
    retriever = vs.as_multivector_retriever(k=2)
    assert len(await retriever.ainvoke("biology")) == 2


def test_one_engine_serves_every_adapter(encoder: Encoder, core_store: MultiVectorStore) -> None:
    adapters = [
        VLLMEmbeddings(encoder=encoder).core_encoder,
        VLLMMaxSimReranker(encoder=encoder).core_reranker.encoder,
        VLLMMultiVectorStore(core_store).store.encoder,
    ]
    assert all(a.engine is encoder.engine for a in adapters)
