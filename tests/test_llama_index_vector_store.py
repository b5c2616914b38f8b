"""The LlamaIndex vector store on the real vLLM engine, through LlamaIndex's own entry points:
``VectorStoreIndex`` / ``StorageContext``, ``IngestionPipeline`` with a docstore,
``RetrieverQueryEngine``, in process and reopened from disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import (
    IndexNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from vllm_retrieval import Encoder
from vllm_retrieval.llama_index import (
    VLLMEmbedding,
    VLLMMaxSimRerank,
    VLLMMultiVectorStore,
)
from vllm_retrieval.store import MODES

if TYPE_CHECKING:
    from conftest import EnginePasses

ROWS = [
    ("mito", "The mitochondrion is the powerhouse of the cell.", 2015, "bio", ["cell", "energy"]),
    ("mito2", "Mitochondria are the powerhouses of cells.", 2016, "bio", ["cell", "energy"]),
    ("chloro", "Chloroplasts capture light energy in plant cells.", 2018, "bio", ["plant"]),
    ("paris", "Paris is the capital and largest city of France.", 2001, "geo", ["city"]),
    ("everest", "Mount Everest is the highest mountain above sea level.", 1999, "geo", []),
    ("hnsw", "HNSW graphs find approximate nearest neighbours quickly.", 2020, "cs", ["search"]),
    ("bm25", "BM25 ranks documents by exact term matches.", 2009, "cs", ["search", "text"]),
    ("bread", "Sourdough bread rises because wild yeast ferments the dough.", 2012, "food", []),
]


def _documents() -> list[Document]:
    """Fresh Documents; the metadata is kept out of the embedded text (as a reader would)."""
    return [
        Document(
            id_=did,
            text=text,
            metadata={"year": year, "topic": topic, "tags": tags},
            excluded_embed_metadata_keys=["year", "topic", "tags"],
        )
        for did, text, year, topic, tags in ROWS
    ]


@pytest.fixture
def passes(engine_passes: EnginePasses) -> EnginePasses:
    return engine_passes


@pytest.fixture
def embedding(encoder: Encoder) -> VLLMEmbedding:
    return VLLMEmbedding(encoder=encoder)


@pytest.fixture
def vs(encoder: Encoder, tmp_path: Path) -> Iterator[VLLMMultiVectorStore]:
    store = VLLMMultiVectorStore(path=str(tmp_path / "idx"), encoder=encoder)
    yield store
    store.close()


def _index(vs: VLLMMultiVectorStore, embedding: VLLMEmbedding, **kw: Any) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        _documents(),
        storage_context=StorageContext.from_defaults(vector_store=vs),
        embed_model=embedding,
        **kw,
    )


def _ref_ids(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.ref_doc_id or n.node.node_id for n in nodes]


# -- encode once ---------------------------------------------------------------------------


def test_vector_store_index_encodes_each_node_once(
    vs: VLLMMultiVectorStore, embedding: VLLMEmbedding, encoder: Encoder, passes: EnginePasses
) -> None:
    docs = _documents()
    before = [d.model_dump() for d in docs]
    passes.clear()
    index = VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=vs), embed_model=embedding
    )
    nodes = vs.get_nodes()
    assert len(nodes) == len(ROWS) == len(vs.client)
    assert passes.sequences == len(nodes)  # one forward pass per node: no second encoding
    assert [d.model_dump() for d in docs] == before  # the caller's documents are untouched
    # The handed-over token vectors are exactly the model's for the embedded text.
    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    stored = vs.client.get_tokens([n.node_id for n in nodes])
    for got, want in zip(stored, encoder.embed_documents_tokens(texts), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    passes.clear()
    hits = index.as_retriever(similarity_top_k=2).retrieve("What is the powerhouse of the cell?")
    assert passes.sequences == 1  # the query: dense and token vectors from one pass
    assert _ref_ids(hits)[0] in {"mito", "mito2"}


def test_without_the_hand_off_nodes_are_encoded_twice(
    encoder: Encoder, embedding: VLLMEmbedding, tmp_path: Path, passes: EnginePasses
) -> None:
    vs = VLLMMultiVectorStore(path=str(tmp_path / "off"), encoder=encoder, token_cache_bytes=0)
    passes.clear()
    _index(vs, embedding)
    assert passes.sequences == 2 * len(ROWS)  # what the hand-off saves
    vs.close()


def test_async_insert_encodes_each_node_once(
    vs: VLLMMultiVectorStore, embedding: VLLMEmbedding, passes: EnginePasses
) -> None:
    passes.clear()
    index = _index(vs, embedding, use_async=True)
    assert passes.sequences == len(ROWS) == len(vs.client)

    async def more() -> list[NodeWithScore]:
        node = TextNode(id_="extra", text="Glaciers carve valleys over thousands of years.")
        await index.ainsert_nodes([node])
        return await index.as_retriever(similarity_top_k=1).aretrieve("How are valleys formed?")

    passes.clear()
    hits = asyncio.run(more())
    assert passes.sequences == 2 and hits[0].node.node_id == "extra"


# -- nodes round-trip ----------------------------------------------------------------------


def test_nodes_round_trip_with_type_and_relationships(vs: VLLMMultiVectorStore) -> None:
    doc = Document(id_="src", text=" ".join(r[1] for r in ROWS), metadata={"topic": "mixed"})
    nodes = SentenceSplitter(chunk_size=24, chunk_overlap=0).get_nodes_from_documents([doc])
    assert len(nodes) > 2 and nodes[1].prev_node is not None and nodes[1].next_node is not None
    index_node = IndexNode(id_="pointer", text="A summary of the geography rows.", index_id="geo")
    index_node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="src")
    written = [*nodes, index_node]
    before = [n.model_dump() for n in written]
    assert vs.add(written) == [n.node_id for n in written]
    assert [n.model_dump() for n in written] == before  # not modified
    back = vs.get_nodes([n.node_id for n in reversed(written)])
    assert [type(n) for n in back] == [type(n) for n in reversed(written)]
    for got, want in zip(back, reversed(before), strict=True):
        assert got.model_dump() == {**want, "embedding": None}
    hit = vs.query(VectorStoreQuery(query_str="highest mountain", similarity_top_k=1))
    assert hit.nodes is not None and hit.nodes[0].ref_doc_id == "src"
    assert (
        hit.nodes[0].relationships
        == {n.node_id: n for n in written}[hit.nodes[0].node_id].relationships
    )


# -- queries: modes, options, filters, MMR --------------------------------------------------


@pytest.mark.parametrize("mode", [None, "dense", "bm25", "maxsim", "hybrid", "fusion"])
def test_queries_match_the_core_store(
    vs: VLLMMultiVectorStore, embedding: VLLMEmbedding, mode: str | None
) -> None:
    index = _index(vs, embedding)
    query = "Which structures in cells make energy?"
    options: dict[str, Any] = {} if mode is None else {"mode": mode}
    retriever = index.as_retriever(similarity_top_k=3, vector_store_kwargs=options)
    got = retriever.retrieve(query)
    want = vs.client.search(query, 3, **options)

    def ranking(pairs: list[tuple[str, float]]) -> list[set[str]]:
        groups: dict[float, set[str]] = {}  # fused scores can tie: compare groups of ties
        for node_id, score in pairs:
            groups.setdefault(round(score, 4), set()).add(node_id)
        return [groups[s] for s in sorted(groups, reverse=True)]

    assert ranking([(n.node.node_id, n.score or 0.0) for n in got]) == ranking(
        [(h.metadata["_node_id"], h.score) for h in want]
    )
    for n in got:
        assert n.node.metadata["topic"] in {"bio", "geo", "cs", "food"}


def test_every_store_option_reaches_the_store(
    vs: VLLMMultiVectorStore, embedding: VLLMEmbedding
) -> None:
    index = _index(vs, embedding)
    query = "nearest neighbour search"
    options = {"mode": "hybrid", "candidates": 2, "nprobe": 3}
    got = index.as_retriever(similarity_top_k=2, vector_store_kwargs=options).retrieve(query)
    want = vs.client.search(query, 2, **options)
    assert [n.score for n in got] == pytest.approx([h.score for h in want], abs=1e-5)
    for kw in (
        {"mode": "fusion", "fusion": "rrf"},
        {"mode": "fusion", "fusion": "dbsf"},
        {"mode": "fusion", "fuse": ["bm25", "dense"], "weights": [0.4, 0.6]},
    ):
        got = index.as_retriever(similarity_top_k=3, vector_store_kwargs=kw).retrieve(query)
        assert [n.score for n in got] == pytest.approx(
            [h.score for h in vs.client.search(query, 3, **kw)], abs=1e-5
        )
    # The store's own defaults, set once on the vector store.
    dense = VLLMMultiVectorStore(store=vs.client, mode="dense")
    hits = dense.query(VectorStoreQuery(query_str=query, similarity_top_k=2))
    assert hits.similarities == pytest.approx(
        [h.score for h in vs.client.search(query, 2, mode="dense")], abs=1e-5
    )
    # A dense query can run on a query embedding alone (no forward pass for the query).
    vector = embedding.get_query_embedding(query)
    by_vector = dense.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=2))
    assert by_vector.ids == hits.ids


FILTER_CASES: list[tuple[MetadataFilter | MetadataFilters, set[str]]] = [
    (MetadataFilter(key="topic", value="geo"), {"paris", "everest"}),
    (
        MetadataFilter(key="topic", value="bio", operator=FilterOperator.NE),
        {"paris", "everest", "hnsw", "bm25", "bread"},
    ),
    (MetadataFilter(key="year", value=2016, operator=FilterOperator.GT), {"chloro", "hnsw"}),
    (
        MetadataFilter(key="year", value=2016, operator=FilterOperator.GTE),
        {"mito2", "chloro", "hnsw"},
    ),
    (MetadataFilter(key="year", value=2001, operator=FilterOperator.LT), {"everest"}),
    (MetadataFilter(key="year", value=2001, operator=FilterOperator.LTE), {"everest", "paris"}),
    (
        MetadataFilter(key="topic", value=["cs", "food"], operator=FilterOperator.IN),
        {"hnsw", "bm25", "bread"},
    ),
    (
        MetadataFilter(key="topic", value=["bio", "cs", "food"], operator=FilterOperator.NIN),
        {"paris", "everest"},
    ),
    (
        MetadataFilter(key="tags", value=["text", "city"], operator=FilterOperator.ANY),
        {"bm25", "paris"},
    ),
    (MetadataFilter(key="tags", value=["search", "text"], operator=FilterOperator.ALL), {"bm25"}),
    (
        MetadataFilter(key="tags", value="energy", operator=FilterOperator.CONTAINS),
        {"mito", "mito2"},
    ),
    (
        MetadataFilters(
            filters=[
                MetadataFilter(key="topic", value="bio"),
                MetadataFilters(
                    filters=[
                        MetadataFilter(key="year", value=2016, operator=FilterOperator.GTE),
                        MetadataFilter(key="tags", value="cell", operator=FilterOperator.CONTAINS),
                    ],
                    condition=FilterCondition.NOT,
                ),
            ],
            condition=FilterCondition.AND,
        ),
        set(),  # every bio row is from 2016 on or has a cell tag
    ),
    (
        MetadataFilters(
            filters=[
                MetadataFilter(key="topic", value="food"),
                MetadataFilter(key="year", value=1999),
            ],
            condition=FilterCondition.OR,
        ),
        {"bread", "everest"},
    ),
]


@pytest.mark.parametrize("case", range(len(FILTER_CASES)))
def test_every_filter_operator_in_the_store(
    vs: VLLMMultiVectorStore, embedding: VLLMEmbedding, case: int
) -> None:
    index = _index(vs, embedding)
    spec, expected = FILTER_CASES[case]
    filters = spec if isinstance(spec, MetadataFilters) else MetadataFilters(filters=[spec])
    for mode in ("dense", "hybrid"):
        retriever = index.as_retriever(
            similarity_top_k=len(ROWS), filters=filters, vector_store_kwargs={"mode": mode}
        )
        assert set(_ref_ids(retriever.retrieve("anything at all"))) == expected
    assert {n.ref_doc_id for n in vs.get_nodes(filters=filters)} == expected


def test_unsupported_filters_and_modes_are_refused(
    vs: VLLMMultiVectorStore, embedding: VLLMEmbedding
) -> None:
    index = _index(vs, embedding)
    for op in (FilterOperator.TEXT_MATCH, FilterOperator.IS_EMPTY):
        filters = MetadataFilters(filters=[MetadataFilter(key="topic", value="x", operator=op)])
        with pytest.raises(ValueError, match=op.name):
            index.as_retriever(filters=filters).retrieve("q")
    for mode in ("sparse", "text_search"):
        retriever = index.as_retriever(vector_store_query_mode=mode)
        if "bm25" in MODES:  # the lexical mode of the store, once it exists
            hits = retriever.retrieve("exact term matches")
            assert _ref_ids(hits)[0] == "bm25"
            want = vs.client.search("exact term matches", 2, mode="bm25")
            assert [n.score for n in hits] == pytest.approx([h.score for h in want])
        else:
            with pytest.raises(ValueError, match="lexical mode"):
                retriever.retrieve("exact term matches")


@pytest.mark.skipif("bm25" not in MODES, reason="the store has no lexical mode")
def test_hybrid_mode_and_alpha(vs: VLLMMultiVectorStore, embedding: VLLMEmbedding) -> None:
    index = _index(vs, embedding)
    query = "Which search method matches exact terms?"
    hybrid = index.as_retriever(similarity_top_k=3, vector_store_query_mode="hybrid")
    want = vs.client.search(query, 3, mode="fusion")
    assert [n.score for n in hybrid.retrieve(query)] == pytest.approx([h.score for h in want])
    for alpha in (0.0, 0.4, 1.0):
        retriever = index.as_retriever(
            similarity_top_k=3, vector_store_query_mode="hybrid", alpha=alpha
        )
        weights = [alpha * 5 / 7, 1 - alpha, alpha * 2 / 7]
        want = vs.client.search(
            query, 3, mode="fusion", fuse=["maxsim", "bm25", "dense"], weights=weights
        )
        got = retriever.retrieve(query)
        assert [n.score for n in got] == pytest.approx([h.score for h in want], abs=1e-5)
    lexical = index.as_retriever(similarity_top_k=1, vector_store_query_mode="hybrid", alpha=0.0)
    assert _ref_ids(lexical.retrieve(query)) == ["bm25"]


def test_mmr_trades_relevance_for_diversity(
    vs: VLLMMultiVectorStore, embedding: VLLMEmbedding, encoder: Encoder
) -> None:
    index = _index(vs, embedding)
    query = "mitochondria cell energy"
    maxsim = {"mode": "maxsim"}
    plain = index.as_retriever(similarity_top_k=2, vector_store_kwargs=maxsim).retrieve(query)
    assert set(_ref_ids(plain)) == {"mito", "mito2"}  # two near-duplicates
    mmr = index.as_retriever(
        similarity_top_k=2,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 0.3, **maxsim},
    ).retrieve(query)
    assert (
        _ref_ids(mmr)[0] in {"mito", "mito2"} and len(set(_ref_ids(mmr)) & {"mito", "mito2"}) == 1
    )
    # mmr_threshold=1 is pure relevance: the candidates nearest the query (normalised mean
    # of the token vectors, the MMR representation), computed here from the core store.
    relevance = index.as_retriever(
        similarity_top_k=3,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 1.0, "mmr_prefetch_k": 6},
    ).retrieve(query)
    pool = vs.client.search(query, 6)  # the default mode's candidates

    def centroid(t: np.ndarray) -> np.ndarray:
        return t.mean(0) / np.linalg.norm(t.mean(0))

    q = centroid(encoder.embed_query_tokens(query))
    sims = [float(centroid(t) @ q) for t in vs.client.get_tokens([h.id for h in pool])]
    order = np.argsort(sims)[::-1][:3]
    assert [n.node.node_id for n in relevance] == [pool[i].metadata["_node_id"] for i in order]
    # Scores are the store's scores of the picked nodes.
    by_id = {h.metadata["_node_id"]: h.score for h in pool}
    assert [n.score for n in relevance] == pytest.approx([by_id[n.node.node_id] for n in relevance])


# -- deleting and reading ------------------------------------------------------------------


def test_delete_get_and_clear(vs: VLLMMultiVectorStore, embedding: VLLMEmbedding) -> None:
    index = _index(vs, embedding)
    by_ref = {n.ref_doc_id: n.node_id for n in vs.get_nodes()}
    index.delete_ref_doc("paris")
    assert "paris" not in {n.ref_doc_id for n in vs.get_nodes()}
    ids = [by_ref["bread"], by_ref["mito"], "not-there"]
    assert [n.ref_doc_id for n in vs.get_nodes(ids)] == ["bread", "mito"]
    vs.delete_nodes([by_ref["bread"], "not-there"])
    geo_or_bio = MetadataFilters(
        filters=[MetadataFilter(key="topic", value=["geo", "bio"], operator=FilterOperator.IN)]
    )
    # ids and filters: the intersection only.
    vs.delete_nodes([by_ref["mito"], by_ref["hnsw"]], filters=geo_or_bio)
    left = {n.ref_doc_id for n in vs.get_nodes()}
    assert left == {"mito2", "chloro", "everest", "hnsw", "bm25"}
    asyncio.run(vs.adelete_nodes(filters=geo_or_bio))
    assert {n.ref_doc_id for n in asyncio.run(vs.aget_nodes())} == {"hnsw", "bm25"}
    asyncio.run(vs.adelete("bm25"))
    assert [n.ref_doc_id for n in vs.get_nodes()] == ["hnsw"]
    with pytest.raises(ValueError, match="needs node_ids or filters"):
        vs.delete_nodes()
    asyncio.run(vs.aclear())
    assert len(vs.client) == 0 and vs.get_nodes() == []


def test_ids_written_through_the_core_as_ints(encoder: Encoder, tmp_path: Path) -> None:
    vs = VLLMMultiVectorStore(path=str(tmp_path / "ints"), encoder=encoder)
    vs.client.add_texts(["Twelve is a dozen.", "Zero is nothing."], ids=[12, 0])
    assert [(n.node_id, n.get_content()) for n in vs.get_nodes(["12", "0"])] == [
        ("12", "Twelve is a dozen."),
        ("0", "Zero is nothing."),
    ]
    # Writing node "12" replaces the document stored under the int 12.
    vs.add([TextNode(id_="12", text="Twelve is a dozen, twice six.")])
    assert len(vs.client) == 2 and vs.get_nodes(["12"])[0].get_content().endswith("six.")
    vs.delete_nodes(["12", "0"])
    assert len(vs.client) == 0
    vs.close()


# -- pipelines, query engines, reopening --------------------------------------------------


def test_ingestion_pipeline_with_docstore_writes_only_changes(
    encoder: Encoder, embedding: VLLMEmbedding, tmp_path: Path, passes: EnginePasses
) -> None:
    path, cache = str(tmp_path / "idx"), str(tmp_path / "pipeline")
    vs = VLLMMultiVectorStore(path=path, encoder=encoder)

    def pipeline(store: VLLMMultiVectorStore) -> IngestionPipeline:
        return IngestionPipeline(
            transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0), embedding],
            vector_store=store,
            docstore=SimpleDocumentStore(),
        )

    first = pipeline(vs)
    passes.clear()
    nodes = first.run(documents=_documents())
    assert len(nodes) == len(ROWS) == len(vs.client) and passes.sequences == len(ROWS)
    passes.clear()
    assert first.run(documents=_documents()) == [] and passes.sequences == 0
    first.persist(cache)
    vs.close()

    # Reopened from disk: unchanged documents write nothing; a changed one replaces its nodes.
    vs = VLLMMultiVectorStore(path=path, encoder=encoder)
    again = pipeline(vs)
    again.load(cache)
    docs = _documents()
    docs[3] = Document(id_="paris", text="Paris sits on the Seine.", metadata=docs[3].metadata)
    passes.clear()
    written = again.run(documents=docs)
    assert [n.ref_doc_id for n in written] == ["paris"] and passes.sequences == 1
    stored = {n.ref_doc_id: n.get_content() for n in vs.get_nodes()}
    assert len(stored) == len(ROWS) == len(vs.client)
    assert stored["paris"] == "Paris sits on the Seine."
    vs.close()


def test_query_engine_in_process_and_reopened(
    encoder: Encoder, embedding: VLLMEmbedding, tmp_path: Path, passes: EnginePasses
) -> None:
    path = str(tmp_path / "idx")
    vs = VLLMMultiVectorStore(path=path, encoder=encoder)
    _index(vs, embedding)
    question = "How does bread rise?"

    def answer(store: VLLMMultiVectorStore) -> list[tuple[str, float]]:
        index = VectorStoreIndex.from_vector_store(store, embed_model=embedding)
        engine = RetrieverQueryEngine.from_args(
            index.as_retriever(similarity_top_k=4),
            llm=MockLLM(max_tokens=8),
            node_postprocessors=[VLLMMaxSimRerank(store=store, top_n=2)],
        )
        response = engine.query(question)
        return [(n.node.ref_doc_id or "", float(n.score or 0)) for n in response.source_nodes]

    passes.clear()
    live = answer(vs)
    # The query is encoded by the store and by the reranker; the nodes are not encoded again.
    assert passes.sequences == 2
    assert live[0][0] == "bread" and len(live) == 2
    vs.close()
    reopened = VLLMMultiVectorStore(path=path)  # recorded settings: same model, same engine
    assert answer(reopened) == [(ref, pytest.approx(score, abs=1e-5)) for ref, score in live]
    reopened.close()


def test_rerank_scores_stored_vectors_and_encodes_only_foreign_nodes(
    vs: VLLMMultiVectorStore, embedding: VLLMEmbedding, encoder: Encoder, passes: EnginePasses
) -> None:
    index = _index(vs, embedding)
    question = "Which organelle makes energy?"
    candidates = index.as_retriever(similarity_top_k=5).retrieve(question)
    foreign = [
        NodeWithScore(node=TextNode(id_="f1", text="Ribosomes build proteins in cells."), score=0),
        NodeWithScore(node=TextNode(id_=candidates[0].node.node_id, text="Edited text."), score=0),
    ]
    nodes = [*candidates, *foreign]
    reuse = VLLMMaxSimRerank(store=vs, top_n=None)
    plain = VLLMMaxSimRerank(encoder=encoder, top_n=None)
    passes.clear()
    got = reuse.postprocess_nodes(nodes, QueryBundle(question))
    assert passes.sequences == 1 + len(foreign)  # the query and the foreign (or edited) nodes
    want = plain.postprocess_nodes(nodes, QueryBundle(question))
    assert [n.node.node_id for n in got] == [n.node.node_id for n in want]
    assert [n.score for n in got] == pytest.approx([n.score for n in want], abs=1e-4)
    other = Encoder(max_length=64)
    with pytest.raises(ValueError, match="other settings"):
        VLLMMaxSimRerank(store=vs, encoder=other)
