"""LlamaIndex adapters on the real vLLM engine and a small real corpus (SciFact claims)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import Document, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from vllm_retrieval import Encoder
from vllm_retrieval.llama_index import (
    VLLMEmbedding,
    VLLMMaxSimRerank,
    VLLMMultiVectorRetriever,
    aindex_nodes,
    build_store_from_documents,
)
from vllm_retrieval.store import MultiVectorStore

# all-MiniLM-L6-v2 is not a ColBERT model: over the 40 sample claims, MaxSim on its token
# vectors ranks a relevant abstract first for 30 (dense cosine: 32). The engine tests use claims
# 13-24 of the sample, for which both put a relevant abstract first, and allow one miss.
CLAIMS = slice(12, 24)
N_CLAIMS = CLAIMS.stop - CLAIMS.start


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(scifact_sample: dict[str, Any]) -> dict[str, Any]:
    return scifact_sample


@pytest.fixture(scope="module")
def documents(sample: dict[str, Any]) -> list[Document]:
    """The corpus as Documents with metadata the filters can use (kept out of the text)."""
    relevant = {d for ds in sample["qrels"].values() for d in ds}
    docs = []
    for n, (did, text) in enumerate(sample["corpus"].items()):
        meta = {
            "doc_id": did,
            "n": n,
            "bucket": n % 4,
            "group": "relevant" if did in relevant else "other",
        }
        docs.append(
            Document(
                id_=did,
                text=text,
                metadata=meta,
                excluded_embed_metadata_keys=list(meta),
                excluded_llm_metadata_keys=list(meta),
            )
        )
    return docs


@pytest.fixture(scope="module")
def store(encoder: Encoder, documents: list[Document]) -> Iterator[MultiVectorStore]:
    st = build_store_from_documents(documents, encoder=encoder)
    yield st
    st.close()


@pytest.fixture(scope="module")
def rerank(encoder: Encoder) -> VLLMMaxSimRerank:
    # The LRU cache keeps abstracts reranked by several tests from being encoded again.
    return VLLMMaxSimRerank(encoder=encoder, top_n=3, keep_retrieval_score=True, cache_size=512)


@pytest.fixture(scope="module")
def embedding(encoder: Encoder) -> VLLMEmbedding:
    return VLLMEmbedding(encoder=encoder)


@pytest.fixture(scope="module")
def vector_index(documents: list[Document], embedding: VLLMEmbedding) -> VectorStoreIndex:
    return VectorStoreIndex(documents, embed_model=embedding)


@pytest.fixture(scope="module")
def claims(sample: dict[str, Any]) -> list[tuple[str, str, set[str]]]:
    """(claim id, claim, relevant doc ids) for claims 13-24 of the sample."""
    qs = list(sample["queries"].items())[CLAIMS]
    return [(q, text, set(sample["qrels"][q])) for q, text in qs]


@pytest.fixture
def settings_guard() -> Iterator[None]:
    """Restore the global LlamaIndex Settings after a test changes them."""
    saved = (Settings._llm, Settings._embed_model)
    try:
        yield
    finally:
        Settings._llm, Settings._embed_model = saved


def _top_ids(responses: list[Any]) -> list[str]:
    return [r.source_nodes[0].node.node_id for r in responses]


def _hits(claims: list[tuple[str, str, set[str]]], top: list[str]) -> int:
    return sum(t in rel for (_, _, rel), t in zip(claims, top, strict=True))


# -- embeddings -------------------------------------------------------------------------------


def test_embedding_matches_core(embedding: VLLMEmbedding, encoder: Encoder) -> None:
    texts = ["Statins lower cholesterol.", "The cat sat on the mat.", "Aspirin and platelets."]
    got = np.array(embedding.get_text_embedding_batch(texts))
    np.testing.assert_allclose(got, encoder.embed_documents(texts), rtol=0, atol=1e-5)
    one = np.array(embedding.get_text_embedding(texts[0]))
    np.testing.assert_allclose(one, got[0], atol=1e-5)
    query = np.array(embedding.get_query_embedding("what lowers cholesterol?"))
    np.testing.assert_allclose(query, encoder.embed_query("what lowers cholesterol?"), atol=1e-5)
    assert got.shape == (3, encoder.dimension)
    assert embedding.class_name() == "VLLMEmbedding"
    assert embedding.embed_batch_size == encoder.batch_size
    assert embedding.encoder is encoder


def test_embedding_instructions_share_the_engine(encoder: Encoder) -> None:
    emb = VLLMEmbedding(encoder=encoder, query_instruction="query: ", text_instruction="passage: ")
    assert emb.encoder is not encoder
    assert emb.encoder.engine is encoder.engine  # same model + engine settings: one engine
    assert emb.query_instruction == "query: " and emb.text_instruction == "passage: "
    q = np.array(emb.get_query_embedding("heart disease"))
    np.testing.assert_allclose(q, encoder.embed_query("query: heart disease"), atol=1e-5)
    t = np.array(emb.get_text_embedding("heart disease"))
    np.testing.assert_allclose(t, encoder.embed_documents(["passage: heart disease"])[0], atol=1e-5)
    assert not np.allclose(q, t)
    with pytest.raises(ValueError, match="differs"):
        VLLMEmbedding(encoder=encoder, model_name="/some/other/model")


async def test_embedding_async_matches_and_does_not_block(
    embedding: VLLMEmbedding, encoder: Encoder
) -> None:
    texts = [f"Claim number {i} about protein folding and gene expression." for i in range(48)]
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        got = await embedding.aget_text_embedding_batch(texts)
    finally:
        done.set()
        await task
    assert ticks > 1  # the event loop kept running while the engine worked
    np.testing.assert_allclose(np.array(got), encoder.embed_documents(texts), atol=1e-5)
    q = await embedding.aget_query_embedding("protein folding")
    np.testing.assert_allclose(np.array(q), encoder.embed_query("protein folding"), atol=1e-5)
    one = await embedding.aget_text_embedding(texts[0])
    np.testing.assert_allclose(np.array(one), got[0], atol=1e-5)


def test_settings_embed_model(
    settings_guard: None, embedding: VLLMEmbedding, documents: list[Document]
) -> None:
    Settings.embed_model = embedding
    Settings.llm = MockLLM()
    index = VectorStoreIndex(documents[:12])
    retriever = index.as_retriever(similarity_top_k=1)
    top = retriever.retrieve(documents[5].text[:300])
    assert top[0].node.node_id == documents[5].node_id


# -- retriever ------------------------------------------------------------------------------


def test_store_keeps_ids_and_metadata(store: MultiVectorStore, documents: list[Document]) -> None:
    assert len(store) == len(documents)
    got = store.get([documents[3].node_id])
    assert got[0].id == documents[3].node_id
    assert got[0].metadata == documents[3].metadata
    assert got[0].text == documents[3].text


@pytest.mark.parametrize("mode", ["hybrid", "dense", "maxsim", "fusion"])
def test_retriever_modes(
    store: MultiVectorStore, claims: list[tuple[str, str, set[str]]], mode: str
) -> None:
    _, claim, relevant = claims[0]
    retriever = VLLMMultiVectorRetriever(store, similarity_top_k=5, mode=mode)  # type: ignore[arg-type]
    nodes = retriever.retrieve(claim)
    assert len(nodes) == 5
    assert all(isinstance(n.node, TextNode) and n.score is not None for n in nodes)
    scores = [n.score for n in nodes]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert relevant & {n.node.node_id for n in nodes}
    meta = nodes[0].node.metadata
    assert meta["doc_id"] == nodes[0].node.node_id and set(meta) == {
        "doc_id",
        "n",
        "bucket",
        "group",
    }


_FILTERS: list[tuple[str, MetadataFilters, Callable[[dict[str, Any]], bool]]] = [
    ("eq", MetadataFilters(filters=[MetadataFilter(key="group", value="relevant")]),
     lambda m: m["group"] == "relevant"),
    ("ne", MetadataFilters(filters=[MetadataFilter(key="bucket", value=0, operator="!=")]),
     lambda m: m["bucket"] != 0),
    ("range", MetadataFilters(filters=[
        MetadataFilter(key="n", value=20, operator=FilterOperator.GTE),
        MetadataFilter(key="n", value=60, operator=FilterOperator.LT),
    ]), lambda m: 20 <= m["n"] < 60),
    ("gt-lte", MetadataFilters(filters=[
        MetadataFilter(key="n", value=100, operator=FilterOperator.GT),
        MetadataFilter(key="n", value=110, operator=FilterOperator.LTE),
    ]), lambda m: 100 < m["n"] <= 110),
    ("in", MetadataFilters(filters=[
        MetadataFilter(key="bucket", value=[1, 3], operator=FilterOperator.IN)
    ]), lambda m: m["bucket"] in (1, 3)),
    ("nin", MetadataFilters(filters=[
        MetadataFilter(key="group", value=["relevant"], operator=FilterOperator.NIN)
    ]), lambda m: m["group"] != "relevant"),
    ("or", MetadataFilters(filters=[
        MetadataFilter(key="n", value=5, operator=FilterOperator.LT),
        MetadataFilter(key="n", value=195, operator=FilterOperator.GTE),
    ], condition=FilterCondition.OR), lambda m: m["n"] < 5 or m["n"] >= 195),
    ("not", MetadataFilters(filters=[
        MetadataFilter(key="bucket", value=2),
        MetadataFilter(key="group", value="relevant"),
    ], condition=FilterCondition.NOT), lambda m: m["bucket"] != 2 and m["group"] != "relevant"),
    ("nested", MetadataFilters(filters=[
        MetadataFilter(key="group", value="other"),
        MetadataFilters(filters=[
            MetadataFilter(key="bucket", value=1),
            MetadataFilter(key="n", value=150, operator=FilterOperator.GT),
        ], condition=FilterCondition.OR),
    ]), lambda m: m["group"] == "other" and (m["bucket"] == 1 or m["n"] > 150)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "filters", "predicate"), _FILTERS, ids=[f[0] for f in _FILTERS])
def test_retriever_filters(
    store: MultiVectorStore,
    documents: list[Document],
    claims: list[tuple[str, str, set[str]]],
    name: str,
    filters: MetadataFilters,
    predicate: Callable[[dict[str, Any]], bool],
) -> None:
    expected = {d.node_id for d in documents if predicate(d.metadata)}
    assert 0 < len(expected) < len(documents), name
    # Asking for every document returns exactly the matching ones.
    retriever = VLLMMultiVectorRetriever(
        store, similarity_top_k=len(documents), mode="dense", filters=filters
    )
    assert {n.node.node_id for n in retriever.retrieve(claims[1][1])} == expected
    # The default (hybrid) search applies the filter too.
    hybrid = VLLMMultiVectorRetriever(store, similarity_top_k=5, filters=filters)
    got = hybrid.retrieve(claims[1][1])
    assert got and all(predicate(n.node.metadata) for n in got)


async def test_retriever_async_matches_sync(
    store: MultiVectorStore, claims: list[tuple[str, str, set[str]]]
) -> None:
    flt = MetadataFilters(filters=[MetadataFilter(key="bucket", value=[0, 1], operator="in")])
    retriever = VLLMMultiVectorRetriever(store, similarity_top_k=4, filters=flt)
    sync = retriever.retrieve(claims[2][1])
    asy = await retriever.aretrieve(claims[2][1])
    assert [n.node.node_id for n in asy] == [n.node.node_id for n in sync]
    np.testing.assert_allclose([n.score for n in asy], [n.score for n in sync], rtol=1e-5)


async def test_aindex_nodes(encoder: Encoder, documents: list[Document]) -> None:
    st = MultiVectorStore(location=":memory:", encoder=encoder)
    try:
        ids = await aindex_nodes(st, documents[:3])
        assert ids == [d.node_id for d in documents[:3]]
        assert [h.id for h in st.get(ids)] == ids
    finally:
        st.close()


# -- rerank node ----------------------------------------------------------------------------


def test_rerank_matches_core_reranker(
    store: MultiVectorStore, encoder: Encoder, claims: list[tuple[str, str, set[str]]]
) -> None:
    from vllm_retrieval.scoring import MaxSimReranker

    core = MaxSimReranker(encoder=encoder)
    node = VLLMMaxSimRerank(encoder=encoder, top_n=None)
    retriever = VLLMMultiVectorRetriever(store, similarity_top_k=15, mode="dense")
    for _, claim, _ in claims[:3]:
        nodes = retriever.retrieve(claim)
        texts = [n.node.get_content() for n in nodes]
        expected = core.rerank(claim, texts)
        out = node.postprocess_nodes(nodes, QueryBundle(claim))
        assert [n.node.node_id for n in out] == [nodes[r.index].node.node_id for r in expected]
        np.testing.assert_allclose(
            [n.score for n in out], [r.score for r in expected], rtol=1e-5, atol=1e-5
        )


def test_rerank_never_mutates_and_keeps_score(
    store: MultiVectorStore, rerank: VLLMMaxSimRerank, claims: list[tuple[str, str, set[str]]]
) -> None:
    claim = claims[0][1]
    nodes = VLLMMultiVectorRetriever(store, similarity_top_k=8, mode="dense").retrieve(claim)
    snapshot = [n.model_dump() for n in nodes]
    out = rerank.postprocess_nodes(nodes, QueryBundle(claim))
    assert [n.model_dump() for n in nodes] == snapshot
    assert len(out) == 3
    before = {n.node.node_id: n.score for n in nodes}
    for n in out:
        assert n.node.metadata["retrieval_score"] == before[n.node.node_id]
        assert all(n.node is not m.node for m in nodes)


async def test_rerank_bad_input_real(rerank: VLLMMaxSimRerank) -> None:
    nodes = [NodeWithScore(node=TextNode(text="statins", id_="x"), score=1.0)]
    with pytest.raises(ValueError, match="query bundle"):
        rerank.postprocess_nodes(nodes)
    with pytest.raises(ValueError, match="query bundle"):
        await rerank.apostprocess_nodes(nodes)
    assert rerank.postprocess_nodes([], QueryBundle("statins")) == []
    assert await rerank.apostprocess_nodes([], query_str="statins") == []
    for bad in (0, -2):
        with pytest.raises(ValueError, match="top_n"):
            VLLMMaxSimRerank(reranker=rerank.reranker, top_n=bad)


# -- query engines with MockLLM -------------------------------------------------------------


def test_retriever_query_engine(
    store: MultiVectorStore, rerank: VLLMMaxSimRerank, claims: list[tuple[str, str, set[str]]]
) -> None:
    retriever = VLLMMultiVectorRetriever(store, similarity_top_k=20, mode="dense")
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(max_tokens=8), node_postprocessors=[rerank]
    )
    responses = [engine.query(claim) for _, claim, _ in claims]
    for r in responses:
        assert isinstance(r.response, str) and r.response
        assert len(r.source_nodes) == 3
        assert "retrieval_score" in r.source_nodes[0].node.metadata
    assert _hits(claims, _top_ids(responses)) >= N_CLAIMS - 1


async def test_retriever_query_engine_async(
    store: MultiVectorStore, rerank: VLLMMaxSimRerank, claims: list[tuple[str, str, set[str]]]
) -> None:
    retriever = VLLMMultiVectorRetriever(store, similarity_top_k=20, mode="dense")
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(max_tokens=8), node_postprocessors=[rerank]
    )
    responses = [await engine.aquery(claim) for _, claim, _ in claims]
    assert all(len(r.source_nodes) == 3 and r.response for r in responses)
    assert _hits(claims, _top_ids(responses)) >= N_CLAIMS - 1
    sync = engine.query(claims[0][1])
    assert [n.node.node_id for n in sync.source_nodes] == [
        n.node.node_id for n in responses[0].source_nodes
    ]


def test_vector_store_index_query_engine(
    vector_index: VectorStoreIndex,
    rerank: VLLMMaxSimRerank,
    claims: list[tuple[str, str, set[str]]],
) -> None:
    engine = vector_index.as_query_engine(
        similarity_top_k=20, node_postprocessors=[rerank], llm=MockLLM(max_tokens=8)
    )
    responses = [engine.query(claim) for _, claim, _ in claims]
    assert all(len(r.source_nodes) == 3 and r.response for r in responses)
    assert _hits(claims, _top_ids(responses)) >= N_CLAIMS - 1


async def test_vector_store_index_query_engine_async(
    vector_index: VectorStoreIndex,
    rerank: VLLMMaxSimRerank,
    claims: list[tuple[str, str, set[str]]],
) -> None:
    engine = vector_index.as_query_engine(
        similarity_top_k=20, node_postprocessors=[rerank], llm=MockLLM(max_tokens=8)
    )
    responses = [await engine.aquery(claim) for _, claim, _ in claims]
    assert all(len(r.source_nodes) == 3 and r.response for r in responses)
    assert _hits(claims, _top_ids(responses)) >= N_CLAIMS - 1
