"""Adapter plumbing without an engine: ids across str/int, stored-vector reuse, the encode-once
hand-off, LlamaIndex query-mode mapping and option parity with the core store.

Stores here are real (embedded Qdrant Edge and qdrant-client local mode) but hold vectors
written with ``add_encoded``, so no model runs.
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from vllm_retrieval import EncodedText, Encoder
from vllm_retrieval.langchain.retrievers import SEARCH_OPTIONS, VLLMMultiVectorRetriever
from vllm_retrieval.langchain.vectorstores import relevance_score
from vllm_retrieval.llama_index import VLLMMultiVectorStore, hit_to_node, node_record
from vllm_retrieval.llama_index import vector_store as li_vector_store
from vllm_retrieval.llama_index.handoff import Handoff, vector_key
from vllm_retrieval.store import MultiVectorStore, QueryPlan, SearchHit
from vllm_retrieval.store import ids as core_ids

DIM = 8
RNG = np.random.default_rng(7)


def _unit(n: int) -> np.ndarray:
    x = RNG.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=["edge", "client"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MultiVectorStore]:
    target: dict[str, Any] = (
        {"path": tmp_path / "idx"}
        if request.param == "edge"
        else {"client_path": tmp_path / "c", "collection": "d"}
    )
    st = MultiVectorStore(dim=DIM, **target)
    st.add_encoded(
        ["int twelve", "str twelve", "letters", "zero"],
        _unit(4),
        [_unit(3), _unit(2), _unit(4), _unit(2)],
        [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}],
        [12, "12", "k", 0],
    )
    yield st
    st.close()


@pytest.mark.parametrize("mod", [core_ids], ids=["store"])
def test_ids_resolve_across_str_and_int(store: MultiVectorStore, mod: Any) -> None:
    store.delete(["12"])  # now only the int 12 is stored under "12"
    assert mod.resolve_ids(store, ["12", "k", "0", "012", "missing", 12]) == [
        12,
        "k",
        0,
        None,
        None,
        12,
    ]
    assert mod.ids_for_write(store, ["12", "k", "new", "7"]) == [12, "k", "new", "7"]
    hits = mod.lookup(store, ["12", "k"])
    assert [(h.id, h.text) for h in hits] == [(12, "int twelve"), ("k", "letters")]
    with pytest.raises(TypeError):
        mod.resolve_ids(store, [1.5])


@pytest.mark.parametrize("mod", [core_ids], ids=["store"])
def test_an_id_naming_two_documents_is_refused(store: MultiVectorStore, mod: Any) -> None:
    with pytest.raises(ValueError, match="names two documents"):
        mod.resolve_ids(store, ["12"])
    with pytest.raises(ValueError, match="names two documents"):
        mod.ids_for_write(store, ["12"])
    assert mod.lookup(store, ["12", "k"], ambiguous="skip")[0] is None


@pytest.mark.parametrize("mod", [core_ids], ids=["store"])
def test_stored_tokens_only_for_the_stored_text(store: MultiVectorStore, mod: Any) -> None:
    want = store.get_tokens(["k", 0])
    got = mod.stored_tokens(
        store,
        ["k", "0", "k", None, "missing", "12"],
        ["letters", "zero", "letters, edited", "letters", "x", "str twelve"],
    )
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # Edited text, no id, unknown id, ambiguous id: encode instead.
    assert got[2:] == [None, None, None, None]


def test_langchain_vectorstore_ids_on_a_store_written_with_int_ids(
    store: MultiVectorStore,
) -> None:
    from vllm_retrieval.langchain import VLLMMultiVectorStore as LCStore

    vs = LCStore(store=store)
    with pytest.raises(ValueError, match="names two documents"):
        vs.get_by_ids(["12"])
    with pytest.raises(ValueError, match="names two documents"):
        vs.delete(["12", "k"])
    assert len(store) == 4  # nothing deleted
    store.delete(["12"])
    assert [(d.id, d.page_content) for d in vs.get_by_ids(["12", "0", "missing"])] == [
        ("12", "int twelve"),
        ("0", "zero"),
    ]
    vs.delete(["12", "missing"])
    assert vs.get_by_ids(["12"]) == [] and len(store) == 2
    vs.close()  # the store was passed in: it stays open
    assert len(store) == 2


def test_relevance_score_per_plan() -> None:
    def plan(**kw: Any) -> QueryPlan:
        return QueryPlan.create(lexical=None, **kw)  # a store with BM25, a text query

    assert relevance_score(0.8, plan(mode="dense")) == pytest.approx(0.8)
    assert relevance_score(-0.2, plan(mode="dense")) == 0.0
    assert relevance_score(6.0, plan(mode="maxsim"), query_tokens=8) == pytest.approx(0.75)
    assert relevance_score(8.0001, plan(mode="hybrid"), query_tokens=8) == 1.0
    # The default: DBSF of MaxSim, BM25 and dense (each list normalised to about [0, 1]).
    assert relevance_score(0.9, plan()) == pytest.approx(0.3)
    two = {"mode": "fusion", "fuse": ["dense", "maxsim"]}
    assert relevance_score(1.0, plan(**two, fusion="weighted")) == pytest.approx(0.5)
    assert relevance_score(2 / 60, plan(**two, fusion="rrf")) == pytest.approx(1.0)
    assert relevance_score(1 / 60, plan(**two, fusion="rrf")) == pytest.approx(0.5)
    assert relevance_score(1.5, plan(**two, fusion="dbsf")) == pytest.approx(0.75)
    weighted = plan(**two, fusion="weighted", weights=[3.0, 1.0])
    assert relevance_score(3.0, weighted) == pytest.approx(0.75)
    # One fused list is that list; without BM25 the default fusion is MaxSim alone.
    assert relevance_score(0.7, plan(mode="fusion", fuse=["dense"])) == pytest.approx(0.7)
    no_bm25 = QueryPlan.create(lexical="no BM25")
    assert relevance_score(4.0, no_bm25, query_tokens=8) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="token count"):
        relevance_score(3.0, plan(mode="hybrid"))
    with pytest.raises(ValueError, match="no fixed scale"):
        relevance_score(3.0, plan(mode="bm25"))


def test_every_store_option_is_reachable_from_both_retrievers() -> None:
    from vllm_retrieval.llama_index import VLLMMultiVectorRetriever as LIRetriever

    core = [
        name
        for name, p in inspect.signature(MultiVectorStore.search).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert sorted(SEARCH_OPTIONS) == sorted(core)
    assert set(core) <= set(VLLMMultiVectorRetriever.model_fields)
    li_args = set(inspect.signature(LIRetriever.__init__).parameters)
    assert set(core) - {"filter"} <= li_args and "filters" in li_args
    assert sorted(li_vector_store.STORE_OPTIONS) == sorted(core)


# -- the encode-once hand-off ------------------------------------------------------------------


def _encoded(n: int, tokens: int = 4) -> list[EncodedText]:
    return [EncodedText(_unit(1)[0], _unit(tokens), list(range(tokens))) for _ in range(n)]


def test_handoff_keeps_only_what_a_live_store_wants() -> None:
    enc, other = Encoder(), Encoder(max_length=64)
    assert vector_key(enc) == vector_key(Encoder(batch_size=3))  # batching: same vectors
    assert vector_key(enc) != vector_key(other)
    handoff = Handoff()
    handoff.offer(enc, ["a"], _encoded(1))
    assert handoff.info()["entries"] == 0  # nobody subscribed: nothing kept
    sub = handoff.subscribe(enc, max_bytes=1 << 20)
    assert handoff.wants(enc) and not handoff.wants(other)
    handoff.offer(other, ["a"], _encoded(1))
    items = _encoded(2)
    handoff.offer(enc, ["a", "b"], items)
    assert handoff.info()["entries"] == 2
    got = handoff.take(enc, ["b", "b", "zzz"])
    assert list(got) == ["b"] and got["b"] is items[1]
    assert handoff.take(enc, ["b"]) == {}  # taken once
    handoff.unsubscribe(sub)
    assert handoff.info() == {
        "entries": 0,
        "bytes": 0,
        "limit": 0,
        "evicted": 0,
        "subscribers": 0,
    }
    sub = handoff.subscribe(enc, max_bytes=1 << 20)
    handoff.offer(enc, ["c"], _encoded(1))
    del sub
    gc.collect()  # a store that is garbage collected stops the hand-off
    handoff.offer(enc, ["d"], _encoded(1))
    assert handoff.info()["subscribers"] == 0 and handoff.take(enc, ["c", "d"]) == {}


def test_handoff_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    enc = Encoder()
    handoff = Handoff()
    items = _encoded(10)
    size = items[0].tokens.nbytes + items[0].dense.nbytes
    sub = handoff.subscribe(enc, max_bytes=3 * size)
    handoff.offer(enc, [f"t{i}" for i in range(10)], items)
    info = handoff.info()
    assert info["entries"] == 3 and info["bytes"] == 3 * size and info["evicted"] == 7
    assert list(handoff.take(enc, [f"t{i}" for i in range(10)])) == ["t7", "t8", "t9"]
    assert "encoded again" in caplog.text
    handoff.unsubscribe(sub)


# -- LlamaIndex: node records and query modes ---------------------------------------------------


def test_node_record_round_trip_keeps_type_and_relationships() -> None:
    node = TextNode(
        id_="n1",
        text="body text",
        metadata={"year": 2020, "secret": "x"},
        excluded_embed_metadata_keys=["secret"],
        relationships={
            NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc-1"),
            NodeRelationship.NEXT: RelatedNodeInfo(node_id="n2"),
        },
    )
    before = node.model_dump()
    text, metadata = node_record(node)
    assert text == "year: 2020\n\nbody text"  # what LlamaIndex embeds
    assert metadata["year"] == 2020 and metadata["ref_doc_id"] == "doc-1"
    assert metadata["_node_id"] == "n1"
    assert node.model_dump() == before  # not modified
    back = hit_to_node(SearchHit(id="n1", score=1.0, text=text, metadata=metadata))
    assert back.model_dump() == {**before, "embedding": None}
    foreign = hit_to_node(SearchHit(id=5, score=1.0, text="plain", metadata={"a": 1}))
    assert foreign.node_id == "5" and foreign.get_content(metadata_mode="embed") == "plain"
    with pytest.raises(ValueError, match="no text"):
        node_record(TextNode(id_="e", text=""))


class _SearchSpy:
    """Stands in for the core store: records what the vector store asks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def search(self, query: str, k: int, **options: Any) -> list[SearchHit]:
        self.calls.append((query, {"k": k, **options}))
        return []


@pytest.fixture
def spy_store() -> Iterator[tuple[VLLMMultiVectorStore, _SearchSpy]]:
    vs = VLLMMultiVectorStore(store=MultiVectorStore(location=":memory:", dim=DIM))
    spy = _SearchSpy()
    vs._store = spy  # type: ignore[assignment]  # plumbing only: see what reaches the store
    yield vs, spy
    vs.close()


def test_query_modes_map_to_the_store(
    spy_store: tuple[VLLMMultiVectorStore, _SearchSpy], monkeypatch: pytest.MonkeyPatch
) -> None:
    vs, spy = spy_store
    vs.query(VectorStoreQuery(query_str="q", similarity_top_k=3))
    vs.query(
        VectorStoreQuery(query_str="q", similarity_top_k=3, doc_ids=["d"], node_ids=["n"]),
        candidates=50,
        nprobe=4,
        fusion="dbsf",
        mode="fusion",
    )
    assert spy.calls == [
        ("q", {"k": 3}),
        (
            "q",
            {
                "k": 3,
                "mode": "fusion",
                "candidates": 50,
                "fusion": "dbsf",
                "nprobe": 4,
                "filter": {"$and": [{"ref_doc_id": {"$in": ["d"]}}, {"_node_id": {"$in": ["n"]}}]},
            },
        ),
    ]
    lexical = (
        VectorStoreQueryMode.SPARSE,
        VectorStoreQueryMode.TEXT_SEARCH,
        VectorStoreQueryMode.HYBRID,
    )
    monkeypatch.setattr(li_vector_store, "MODES", ("dense", "maxsim", "hybrid", "fusion"))
    for mode in lexical:
        with pytest.raises(ValueError, match="lexical mode"):
            vs.query(VectorStoreQuery(query_str="q", mode=mode))
    # With a "bm25" mode in the store, the lexical query modes run on it.
    monkeypatch.setattr(li_vector_store, "MODES", ("dense", "bm25", "maxsim", "hybrid", "fusion"))
    spy.calls.clear()
    for mode in lexical:
        vs.query(VectorStoreQuery(query_str="q", mode=mode, similarity_top_k=2, hybrid_top_k=5))
    assert [c[1] for c in spy.calls] == [
        {"k": 2, "mode": "bm25"},
        {"k": 2, "mode": "bm25"},
        {"k": 5, "mode": "fusion"},
    ]
    # alpha weighs the vector lists (MaxSim and dense, 5 : 2) against BM25.
    spy.calls.clear()
    vs.query(VectorStoreQuery(query_str="q", mode=VectorStoreQueryMode.HYBRID, alpha=0.7))
    options = spy.calls[0][1]
    assert (options["mode"], options["fusion"], options["fuse"]) == (
        "fusion",
        "weighted",
        ["maxsim", "bm25", "dense"],
    )
    assert options["weights"] == pytest.approx([0.5, 0.3, 0.2])  # the store's defaults
    with pytest.raises(ValueError, match="not both"):
        vs.query(
            VectorStoreQuery(query_str="q", mode=VectorStoreQueryMode.HYBRID, alpha=0.5),
            weights=[1, 1, 1],
        )
    with pytest.raises(ValueError, match="alpha"):
        vs.query(VectorStoreQuery(query_str="q", mode=VectorStoreQueryMode.HYBRID, alpha=1.5))
    for mode in (VectorStoreQueryMode.SVM, VectorStoreQueryMode.SEMANTIC_HYBRID):
        with pytest.raises(ValueError, match="not supported"):
            vs.query(VectorStoreQuery(query_str="q", mode=mode))
    with pytest.raises(TypeError, match="unexpected query arguments"):
        vs.query(VectorStoreQuery(query_str="q"), top_k=3)
    with pytest.raises(ValueError, match="query_str"):
        vs.query(VectorStoreQuery(query_embedding=[0.1] * DIM))  # hybrid needs the text
    with pytest.raises(ValueError, match="query_str"):
        vs.query(VectorStoreQuery())


def test_vector_store_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        VLLMMultiVectorStore(location=":memory:", dim=DIM, mode="nonsense")
    with pytest.raises(ValueError, match="fusion"):
        VLLMMultiVectorStore(location=":memory:", dim=DIM, fusion="sum")
    with pytest.raises(TypeError, match="VLLMEmbedding"):
        VLLMMultiVectorStore(location=":memory:", dim=DIM, embed_model=object())
    core = MultiVectorStore(location=":memory:", dim=DIM)
    with pytest.raises(ValueError, match="store= was given"):
        VLLMMultiVectorStore(store=core, path="/tmp/x")
    with pytest.raises(TypeError, match="unknown"):
        VLLMMultiVectorStore(location=":memory:", dim=DIM, unknown=1)
    assert VLLMMultiVectorStore.model_config.get("extra") == "forbid"
    vs = VLLMMultiVectorStore(store=core)
    assert vs.client is core and vs.class_name() == "VLLMMultiVectorStore"
    assert vs.stores_text and not vs.is_embedding_query and bool(vs)
    vs.close()
    assert len(core) == 0  # a store passed in stays open
    core.close()
