"""The LangChain vector store, complete, on the real vLLM engine: relevance scores and the
score-threshold retriever, MMR (by query and by vector, sync and async), search by vector,
every store option through ``search_kwargs``, ids across str/int, close(), and the reranker
that scores stored token vectors instead of encoding documents again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from langchain_core.documents import Document

from vllm_retrieval import Encoder
from vllm_retrieval.errors import StoreError
from vllm_retrieval.langchain import (
    VLLMMaxSimReranker,
    VLLMMultiVectorRetriever,
    VLLMMultiVectorStore,
)
from vllm_retrieval.langchain.vectorstores import relevance_score
from vllm_retrieval.store import MultiVectorStore, QueryPlan

if TYPE_CHECKING:
    from conftest import EnginePasses

TEXTS = {
    "mito": "The mitochondrion is the powerhouse of the cell.",
    "mito2": "Mitochondria are the powerhouses of cells.",
    "chloro": "Chloroplasts capture light energy in plant cells.",
    "paris": "Paris is the capital and largest city of France.",
    "everest": "Mount Everest is the highest mountain above sea level.",
    "hnsw": "HNSW graphs find approximate nearest neighbours quickly.",
    "bm25": "BM25 ranks documents by exact term matches.",
    "bread": "Sourdough bread rises because wild yeast ferments the dough.",
}
TOPIC = {"mito": "bio", "mito2": "bio", "chloro": "bio", "paris": "geo", "everest": "geo"}
QUERY = "Which structures in cells make energy?"


@pytest.fixture(scope="module")
def vs(
    encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMMultiVectorStore]:
    store = VLLMMultiVectorStore(encoder=encoder, path=tmp_path_factory.mktemp("lc") / "idx")
    store.add_texts(
        list(TEXTS.values()),
        [{"topic": TOPIC.get(k, "other"), "n": i} for i, k in enumerate(TEXTS)],
        ids=list(TEXTS),
    )
    yield store
    store.close()


def _centroid(tokens: np.ndarray) -> np.ndarray:
    mean = tokens.mean(0)
    return mean / np.linalg.norm(mean)


# -- relevance -----------------------------------------------------------------------------


RELEVANCE_CASES: list[dict[str, Any]] = [
    {},  # the store's default: weighted fusion of MaxSim, BM25 and dense
    {"mode": "dense"},
    {"mode": "maxsim"},
    {"mode": "hybrid"},
    {"mode": "fusion", "fusion": "rrf"},
    {"mode": "fusion", "fusion": "dbsf", "fuse": ["maxsim", "dense"]},
    {"mode": "fusion", "fuse": ["bm25", "dense"], "weights": [1.0, 3.0]},
]


@pytest.mark.parametrize("options", RELEVANCE_CASES)
async def test_relevance_scores_per_mode(
    vs: VLLMMultiVectorStore, encoder: Encoder, options: dict[str, Any]
) -> None:
    raw = {d.id: s for d, s in vs.similarity_search_with_score(QUERY, k=5, **options)}
    rel = vs.similarity_search_with_relevance_scores(QUERY, k=5, **options)
    assert {d.id for d, _ in rel} == set(raw)
    plan = QueryPlan.create(k=5, lexical=None, **options)  # the store has BM25
    q_tokens = len(encoder.embed_query_tokens(QUERY))
    for doc, r in rel:
        assert r == pytest.approx(relevance_score(raw[doc.id], plan, query_tokens=q_tokens))
    assert all(0.0 <= r <= 1.0 for _, r in rel)
    assert [r for _, r in rel] == sorted((r for _, r in rel), reverse=True)
    arel = await vs.asimilarity_search_with_relevance_scores(QUERY, k=5, **options)
    # Fused scores can tie (equal ranks): compare (score, id) pairs, not the order of ties.
    assert sorted((round(r, 4), d.id) for d, r in arel) == sorted(
        (round(r, 4), d.id) for d, r in rel
    )


def test_bm25_scores_have_no_relevance(vs: VLLMMultiVectorStore) -> None:
    assert vs.similarity_search_with_score("exact term matches", k=1, mode="bm25")[0][1] > 0
    with pytest.raises(ValueError, match="no fixed scale"):
        vs.similarity_search_with_relevance_scores("exact term matches", k=1, mode="bm25")


def test_relevance_of_a_dense_match_is_its_cosine(vs: VLLMMultiVectorStore) -> None:
    (doc, rel), *_ = vs.similarity_search_with_relevance_scores(TEXTS["paris"], k=1, mode="dense")
    (_, cos), *_ = vs.similarity_search_with_score(TEXTS["paris"], k=1, mode="dense")
    assert doc.id == "paris" and rel == pytest.approx(cos) and rel > 0.9


async def test_score_threshold_retriever(vs: VLLMMultiVectorStore) -> None:
    rel = vs.similarity_search_with_relevance_scores(QUERY, k=8)
    cut = next(i for i in range(1, len(rel)) if rel[i - 1][1] > rel[i][1])
    threshold = (rel[cut - 1][1] + rel[cut][1]) / 2
    retriever = vs.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"score_threshold": threshold, "k": 8},
    )
    assert [d.id for d in retriever.invoke(QUERY)] == [d.id for d, _ in rel[:cut]]
    assert [d.id for d in await retriever.ainvoke(QUERY)] == [d.id for d, _ in rel[:cut]]
    # Scores that need nothing but themselves also reach LangChain's own relevance hook.
    fn = vs._select_relevance_score_fn()
    raw = vs.similarity_search_with_score(QUERY, k=3)
    assert [fn(s) for _, s in raw] == pytest.approx([r for _, r in rel[:3]], abs=1e-5)


# -- MMR -----------------------------------------------------------------------------------


async def test_mmr_by_query(vs: VLLMMultiVectorStore, encoder: Encoder) -> None:
    query = "mitochondria cell energy"
    plain = [d.id for d in vs.similarity_search(query, k=2, mode="maxsim")]
    assert set(plain) == {"mito", "mito2"}  # near-duplicates
    mmr = vs.max_marginal_relevance_search(query, k=2, fetch_k=6, lambda_mult=0.3, mode="maxsim")
    assert mmr[0].id in {"mito", "mito2"} and len({d.id for d in mmr} & {"mito", "mito2"}) == 1
    retriever = vs.as_retriever(
        search_type="mmr",
        search_kwargs={"k": 2, "fetch_k": 6, "lambda_mult": 0.3, "mode": "maxsim"},
    )
    assert [d.id for d in retriever.invoke(query)] == [d.id for d in mmr]
    amm = await vs.amax_marginal_relevance_search(
        query, k=2, fetch_k=6, lambda_mult=0.3, mode="maxsim"
    )
    assert [d.id for d in amm] == [d.id for d in mmr]
    assert [d.id for d in await retriever.ainvoke(query)] == [d.id for d in mmr]
    # lambda_mult=1 is pure relevance to the query, through the MMR representation (the
    # normalised mean of the token vectors), among the fetch_k best of the mode.
    pure = vs.max_marginal_relevance_search(query, k=3, fetch_k=6, lambda_mult=1.0)
    pool = vs.store.search(query, 6)  # the default mode's candidates
    q = _centroid(encoder.embed_query_tokens(query))
    sims = [float(_centroid(t) @ q) for t in vs.store.get_tokens([h.id for h in pool])]
    assert [d.id for d in pure] == [pool[i].id for i in np.argsort(sims)[::-1][:3]]
    geo = vs.max_marginal_relevance_search(query, k=3, filter={"topic": "geo"})
    assert {d.id for d in geo} == {"paris", "everest"}


async def test_mmr_and_search_by_vector(vs: VLLMMultiVectorStore) -> None:
    vector = vs.embeddings.embed_query("mitochondria cell energy")
    dense = vs.similarity_search("mitochondria cell energy", k=3, mode="dense")
    by_vector = vs.similarity_search_by_vector(vector, k=3)
    assert [d.id for d in by_vector] == [d.id for d in dense]
    assert [d.id for d in await vs.asimilarity_search_by_vector(vector, k=3)] == [
        d.id for d in dense
    ]
    geo = vs.similarity_search_by_vector(vector, k=3, filter={"topic": "geo"})
    assert {d.id for d in geo} == {"paris", "everest"}
    with pytest.raises(ValueError, match="dense"):
        vs.similarity_search_by_vector(vector, k=3, mode="hybrid")
    mmr = vs.max_marginal_relevance_search_by_vector(vector, k=2, fetch_k=6, lambda_mult=0.3)
    assert len({d.id for d in mmr} & {"mito", "mito2"}) == 1
    amm = await vs.amax_marginal_relevance_search_by_vector(vector, k=2, fetch_k=6, lambda_mult=0.3)
    assert [d.id for d in amm] == [d.id for d in mmr]
    pure = vs.max_marginal_relevance_search_by_vector(vector, k=3, fetch_k=6, lambda_mult=1.0)
    pool = vs.store.search_encoded(vector, None, 6, mode="dense")
    sims = [
        float(_centroid(t) @ np.asarray(vector)) for t in vs.store.get_tokens([h.id for h in pool])
    ]
    assert [d.id for d in pure] == [pool[i].id for i in np.argsort(sims)[::-1][:3]]
    with pytest.raises(ValueError, match="fetch_k"):
        vs.max_marginal_relevance_search("q", k=2, fetch_k=0)


# -- options, ids, lifetime ----------------------------------------------------------------


def _ranking(pairs: list[tuple[Any, float]]) -> list[set[Any]]:
    """The ids grouped by equal score, best group first (fused scores can tie)."""
    groups: dict[float, set[Any]] = {}
    for doc_id, score in pairs:
        groups.setdefault(round(score, 4), set()).add(doc_id)
    return [groups[s] for s in sorted(groups, reverse=True)]


def test_every_store_option_through_search_kwargs(vs: VLLMMultiVectorStore) -> None:
    core = vs.store
    for options in (
        {"mode": "dense", "candidates": 3},
        {"mode": "hybrid", "candidates": 2, "nprobe": 3},
        {"mode": "fusion", "fusion": "dbsf", "candidates": 4},
        {"mode": "fusion", "fusion": "rrf", "filter": {"topic": "bio"}},
        {"mode": "maxsim", "filter": {"n": {"$gte": 4}}},
        {"mode": "bm25"},
        {"mode": "fusion", "fuse": ["bm25", "maxsim"], "weights": [0.2, 0.8]},
        {"fusion": "rrf", "candidates": 5},
    ):
        want = [(h.id, h.score) for h in core.search(QUERY, 3, **options)]
        score = dict(want)
        by_kwargs = vs.as_retriever(search_kwargs={"k": 3, **options}).invoke(QUERY)
        assert _ranking([(d.id, score[d.id]) for d in by_kwargs]) == _ranking(want)
        retriever = VLLMMultiVectorRetriever(store=vs, k=3, **options)
        got = [(d.id, d.metadata["relevance_score"]) for d in retriever.invoke(QUERY)]
        assert _ranking(got) == _ranking(want)
    with pytest.raises(TypeError, match="unexpected search arguments"):
        vs.similarity_search(QUERY, k=2, top_k=3)


def test_ids_written_as_ints_are_found_replaced_and_deleted(
    encoder: Encoder, tmp_path: Path
) -> None:
    core = MultiVectorStore(path=tmp_path / "ints", encoder=encoder)
    core.add_texts(["Twelve is a dozen.", "Zero is nothing."], ids=[12, 0])
    vs = VLLMMultiVectorStore(store=core)
    assert [d.page_content for d in vs.get_by_ids(["12", "0", "012"])] == [
        "Twelve is a dozen.",
        "Zero is nothing.",
    ]
    assert vs.add_texts(["Twelve is two sixes."], ids=["12"]) == ["12"]
    assert len(core) == 2 and core.get([12])[0].text == "Twelve is two sixes."
    hit = vs.similarity_search("two sixes", k=1)[0]
    assert hit.id == "12"
    vs.delete([hit.id])  # what search returned, deleted
    assert core.get([12]) == [] and len(core) == 1
    vs.close()
    assert len(core) == 1  # a store passed in stays open


async def test_async_ids_and_close(encoder: Encoder, tmp_path: Path) -> None:
    with VLLMMultiVectorStore(encoder=encoder, path=tmp_path / "own") as vs:
        ids = await vs.aadd_documents([Document(page_content="Async text.", id="a1")])
        assert [d.id for d in await vs.aget_by_ids(ids)] == ["a1"]
        await vs.adelete(["a1"])
        assert await vs.aget_by_ids(["a1"]) == [] and bool(vs)
        core = vs.store
    with pytest.raises(StoreError, match="closed"):
        len(core)  # the store it created is closed with it


# -- the reranker reuses stored vectors ------------------------------------------------------


async def test_reranker_scores_stored_vectors(
    vs: VLLMMultiVectorStore, encoder: Encoder, engine_passes: EnginePasses
) -> None:
    docs = vs.as_retriever(search_kwargs={"k": 6}).invoke(QUERY)
    foreign = [
        Document(page_content="Ribosomes build proteins in cells.", id="f1"),
        Document(page_content="Edited: " + docs[0].page_content, id=docs[0].id),
        Document(page_content="No id at all, about cellular respiration."),
    ]
    candidates = [*docs, *foreign]
    reuse = VLLMMaxSimReranker(store=vs, top_n=None)
    plain = VLLMMaxSimReranker(encoder=encoder, top_n=None)
    engine_passes.clear()
    got = reuse.compress_documents(candidates, QUERY)
    assert engine_passes.sequences == 1 + len(foreign)  # the query and the foreign texts only
    engine_passes.clear()
    agot = await reuse.acompress_documents(candidates, QUERY)
    assert engine_passes.sequences == 1 + len(foreign)
    want = plain.compress_documents(candidates, QUERY)

    def key(ds: Any) -> list[tuple[str | None, str]]:
        return [(d.id, d.page_content) for d in ds]

    assert key(got) == key(want) == key(agot)
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx(
        [d.metadata["relevance_score"] for d in want], abs=1e-4
    )
    # Ids in the metadata instead of Document.id.
    by_meta = [Document(page_content=d.page_content, metadata={"sid": d.id}) for d in docs]
    engine_passes.clear()
    VLLMMaxSimReranker(store=vs.store, id_key="sid").compress_documents(by_meta, QUERY)
    assert engine_passes.sequences == 1
    with pytest.raises(ValueError, match="other settings"):
        VLLMMaxSimReranker(store=vs, encoder=Encoder(max_length=64))
