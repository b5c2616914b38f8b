"""LlamaIndex adapters without an engine: filters, argument checks, events, no mutation."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import Document, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from vllm_retrieval.llama_index import (
    VLLMMaxSimRerank,
    VLLMMultiVectorRetriever,
    build_store_from_documents,
    index_nodes,
    json_safe_metadata,
    to_store_filter,
)

# -- fakes ----------------------------------------------------------------------------------


@dataclass
class _Result:
    index: int
    score: float


class FakeReranker:
    """Scores a document by the number of query words it contains (ties: input order)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], int | None]] = []

    def _score(self, query: str, documents: list[str], top_n: int | None) -> list[_Result]:
        self.calls.append((query, list(documents), top_n))
        words = set(query.lower().split())
        scores = [float(sum(w in words for w in d.lower().split())) for d in documents]
        order = sorted(range(len(documents)), key=lambda i: (-scores[i], i))
        return [_Result(i, scores[i]) for i in order][:top_n]

    def rerank(
        self, query: str, documents: list[str], *, top_n: int | None = None, **_: Any
    ) -> list[_Result]:
        return self._score(query, documents, top_n)

    async def arerank(
        self, query: str, documents: list[str], *, top_n: int | None = None, **_: Any
    ) -> list[_Result]:
        return self._score(query, documents, top_n)


@dataclass
class _Hit:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]


class FakeStore:
    def __init__(self) -> None:
        self.searches: list[tuple[str, dict[str, Any]]] = []
        self.added: list[tuple[list[str], list[dict[str, Any]], list[str]]] = []

    def search(self, query: str, **kwargs: Any) -> list[_Hit]:
        self.searches.append((query, kwargs))
        return [_Hit("a", 2.0, "alpha text", {"year": 2020}), _Hit("b", 1.0, "beta", {})]

    async def asearch(self, query: str, **kwargs: Any) -> list[_Hit]:
        return self.search(query, **kwargs)

    def add_texts(
        self, texts: list[str], metadatas: list[dict[str, Any]], ids: list[str]
    ) -> list[str]:
        self.added.append((texts, metadatas, ids))
        return ids


def _nodes() -> list[NodeWithScore]:
    texts = ["the cat sat", "a dog barked at the cat", "nothing here", "cat cat dog"]
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=t, metadata={"i": i}), score=0.1 * i)
        for i, t in enumerate(texts)
    ]


# -- filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        (FilterOperator.EQ, "x", {"k": {"$eq": "x"}}),
        (FilterOperator.NE, 3, {"k": {"$ne": 3}}),
        (FilterOperator.GT, 1, {"k": {"$gt": 1}}),
        (FilterOperator.GTE, 1.5, {"k": {"$gte": 1.5}}),
        (FilterOperator.LT, 2, {"k": {"$lt": 2}}),
        (FilterOperator.LTE, 2, {"k": {"$lte": 2}}),
        (FilterOperator.IN, ["a", "b"], {"k": {"$in": ["a", "b"]}}),
        (FilterOperator.NIN, [1, 2], {"k": {"$nin": [1, 2]}}),
        (FilterOperator.IN, "a", {"k": {"$in": ["a"]}}),
    ],
)
def test_each_operator(operator: FilterOperator, value: Any, expected: dict[str, Any]) -> None:
    from vllm_retrieval.store.filters import parse_filter

    got = to_store_filter(
        MetadataFilters(filters=[MetadataFilter(key="k", value=value, operator=operator)])
    )
    assert got == expected
    assert parse_filter(got) is not None  # the store's own parser accepts it


def test_conditions_and_nesting() -> None:
    from vllm_retrieval.store.filters import parse_filter

    a = MetadataFilter(key="a", value=1)
    b = MetadataFilter(key="b", value="x", operator=FilterOperator.NE)
    c = MetadataFilter(key="c", value=[1, 2], operator=FilterOperator.IN)
    nested = MetadataFilters(
        filters=[a, MetadataFilters(filters=[b, c], condition=FilterCondition.OR)],
        condition=FilterCondition.AND,
    )
    expected = {"$and": [{"a": {"$eq": 1}}, {"$or": [{"b": {"$ne": "x"}}, {"c": {"$in": [1, 2]}}]}]}
    assert to_store_filter(nested) == expected
    # NOT: none of the filters match (LlamaIndex's own semantics).
    assert to_store_filter(MetadataFilters(filters=[a, b], condition=FilterCondition.NOT)) == {
        "$not": {"$or": [{"a": {"$eq": 1}}, {"b": {"$ne": "x"}}]}
    }
    assert to_store_filter(MetadataFilters(filters=[a], condition=FilterCondition.NOT)) == {
        "$not": {"a": {"$eq": 1}}
    }
    assert to_store_filter(MetadataFilters(filters=[a], condition=None)) == {"a": {"$eq": 1}}
    for spec in (nested, MetadataFilters(filters=[a, b], condition=FilterCondition.NOT)):
        assert parse_filter(to_store_filter(spec)) is not None


def test_empty_and_passthrough() -> None:
    assert to_store_filter(None) is None
    assert to_store_filter(MetadataFilters(filters=[])) is None
    assert to_store_filter({"year": 2020}) == {"year": 2020}
    assert to_store_filter(MetadataFilter(key="k", value=1)) == {"k": {"$eq": 1}}
    with pytest.raises(TypeError):
        to_store_filter("year == 2020")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        (FilterOperator.ANY, ["x", "y"], {"tags": {"$in": ["x", "y"]}}),
        (
            FilterOperator.ALL,
            ["x", "y"],
            {"$and": [{"tags": {"$eq": "x"}}, {"tags": {"$eq": "y"}}]},
        ),
        (FilterOperator.ALL, ["x"], {"tags": {"$eq": "x"}}),
        (FilterOperator.CONTAINS, "x", {"tags": {"$eq": "x"}}),
    ],
)
def test_list_operators(operator: FilterOperator, value: Any, expected: dict[str, Any]) -> None:
    from vllm_retrieval.store.filters import parse_filter

    got = to_store_filter(MetadataFilter(key="tags", value=value, operator=operator))
    assert got == expected
    assert parse_filter(got) is not None
    with pytest.raises(ValueError, match="non-empty"):
        to_store_filter(MetadataFilter(key="tags", value=[], operator=FilterOperator.ALL))
    with pytest.raises(ValueError, match="single value"):
        to_store_filter(MetadataFilter(key="tags", value=["x"], operator=FilterOperator.CONTAINS))


@pytest.mark.parametrize(
    "operator",
    [FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE, FilterOperator.IS_EMPTY],
)
def test_unsupported_operator_is_named(operator: FilterOperator) -> None:
    flt = MetadataFilters(
        filters=[
            MetadataFilter(key="ok", value=1),
            MetadataFilter(key="tags", value=["x"], operator=operator),
        ]
    )
    with pytest.raises(ValueError, match=operator.name):
        to_store_filter(flt)
    with pytest.raises(ValueError, match=operator.name):
        VLLMMultiVectorRetriever(FakeStore(), filters=flt)  # type: ignore[arg-type]


# -- retriever ----------------------------------------------------------------------------


def test_retriever_passes_settings_and_builds_nodes() -> None:
    store = FakeStore()
    flt = MetadataFilters(filters=[MetadataFilter(key="year", value=2019, operator=">")])
    retriever = VLLMMultiVectorRetriever(
        store,  # type: ignore[arg-type]
        similarity_top_k=2,
        mode="maxsim",
        candidates=50,
        filters=flt,
    )
    out = retriever.retrieve("what?")
    assert store.searches == [
        ("what?", {"k": 2, "mode": "maxsim", "candidates": 50, "filter": {"year": {"$gt": 2019}}})
    ]
    assert [(n.node.node_id, n.score) for n in out] == [("a", 2.0), ("b", 1.0)]
    assert isinstance(out[0].node, TextNode)
    assert out[0].node.get_content() == "alpha text"
    assert out[0].node.metadata == {"year": 2020}


async def test_retriever_async_and_fusion() -> None:
    store = FakeStore()
    retriever = VLLMMultiVectorRetriever(store, mode="fusion", fusion="dbsf")  # type: ignore[arg-type]
    out = await retriever.aretrieve("q")
    assert [n.node.node_id for n in out] == ["a", "b"]
    # Options left unset are the store's defaults; similarity_top_k is LlamaIndex's 2.
    assert store.searches[0][1] == {"k": 2, "mode": "fusion", "fusion": "dbsf"}
    retriever = VLLMMultiVectorRetriever(store, nprobe=4, candidates=30)  # type: ignore[arg-type]
    retriever.retrieve("q")
    assert store.searches[1][1] == {"k": 2, "candidates": 30, "nprobe": 4}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"similarity_top_k": 0},
        {"similarity_top_k": -3},
        {"mode": "nonsense"},
        {"fusion": "sum"},
        {"candidates": 0},
        {"nprobe": 0},
    ],
)
def test_retriever_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        VLLMMultiVectorRetriever(FakeStore(), **kwargs)  # type: ignore[arg-type]


def test_index_nodes_keeps_ids_and_json_safe_metadata() -> None:
    store = FakeStore()
    docs = [
        Document(text="first", id_="d1", metadata={"year": 2020, "obj": object(), "tags": ["a"]}),
        TextNode(text="second", id_="n2", metadata={"score": float("nan"), "ok": {"x": 1}}),
    ]
    before = copy.deepcopy([d.metadata for d in docs if "obj" not in d.metadata])
    ids = index_nodes(store, docs)  # type: ignore[arg-type]
    assert ids == ["d1", "n2"]
    texts, metadatas, stored_ids = store.added[0]
    assert texts == ["first", "second"]
    assert stored_ids == ["d1", "n2"]
    assert metadatas == [{"year": 2020, "tags": ["a"]}, {"ok": {"x": 1}}]
    assert [d.metadata for d in docs if "obj" not in d.metadata] == before  # not mutated
    assert build_store_from_documents(docs, store=store) is store  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        build_store_from_documents(docs, store=store, path="/tmp/x")  # type: ignore[arg-type]
    retriever = VLLMMultiVectorRetriever.from_documents(
        docs,
        store=store,  # type: ignore[arg-type]
        similarity_top_k=1,
    )
    assert retriever.store is store and retriever.similarity_top_k == 1
    assert len(store.added) == 3
    with pytest.raises(ValueError, match="unique"):
        index_nodes(store, [TextNode(text="a", id_="x"), TextNode(text="b", id_="x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no text"):
        index_nodes(store, [TextNode(text="", id_="empty")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        index_nodes(store, ["plain string"])  # type: ignore[arg-type, list-item]


def test_json_safe_metadata() -> None:
    assert json_safe_metadata(
        {"a": 1, "b": None, "c": [1, "x", 2.5], "d": (1, 2), "e": {1: "x"}, "f": float("inf")}
    ) == {"a": 1, "b": None, "c": [1, "x", 2.5], "d": [1, 2]}


# -- rerank node ----------------------------------------------------------------------------


def _rerank(**kwargs: Any) -> tuple[VLLMMaxSimRerank, FakeReranker]:
    fake = FakeReranker()
    return VLLMMaxSimRerank(reranker=fake, model="fake", **kwargs), fake  # type: ignore[arg-type]


def test_rerank_orders_and_copies() -> None:
    rerank, fake = _rerank(top_n=2, keep_retrieval_score=True)
    nodes = _nodes()
    snapshot = [n.model_dump() for n in nodes]
    out = rerank.postprocess_nodes(nodes, query_str="cat dog")
    assert [n.node.node_id for n in out] == ["n3", "n1"]
    assert [n.score for n in out] == [3.0, 2.0]
    assert out[1].node.metadata == {"i": 1, "retrieval_score": pytest.approx(0.1)}
    # The incoming nodes are untouched; the results are copies.
    assert [n.model_dump() for n in nodes] == snapshot
    assert all(o is not n and o.node is not n.node for o in out for n in nodes)
    assert "retrieval_score" not in nodes[1].node.metadata
    # The reranked text is the content as LlamaIndex embeds it (metadata not excluded).
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    assert fake.calls == [("cat dog", texts, 2)]
    assert texts[0] == "i: 0\n\nthe cat sat"


def test_rerank_without_keep_score_and_all_nodes() -> None:
    rerank, _ = _rerank(top_n=None)
    nodes = _nodes()
    out = rerank.postprocess_nodes(nodes, QueryBundle("cat"))
    assert len(out) == 4
    assert [n.node.node_id for n in out] == ["n3", "n0", "n1", "n2"]
    assert all("retrieval_score" not in n.node.metadata for n in out)
    rerank, _ = _rerank(top_n=10)
    assert len(rerank.postprocess_nodes(nodes, QueryBundle("cat"))) == 4


async def test_rerank_async_matches_sync() -> None:
    rerank, _ = _rerank(top_n=3)
    nodes = _nodes()
    snapshot = [n.model_dump() for n in nodes]
    sync = rerank.postprocess_nodes(nodes, QueryBundle("dog cat"))
    asy = await rerank.apostprocess_nodes(nodes, QueryBundle("dog cat"))
    assert [(n.node.node_id, n.score) for n in asy] == [(n.node.node_id, n.score) for n in sync]
    assert [n.model_dump() for n in nodes] == snapshot


async def test_rerank_bad_input() -> None:
    rerank, fake = _rerank()
    with pytest.raises(ValueError, match="query bundle"):
        rerank.postprocess_nodes(_nodes())
    with pytest.raises(ValueError, match="query bundle"):
        await rerank.apostprocess_nodes(_nodes())
    assert rerank.postprocess_nodes([], QueryBundle("q")) == []
    assert await rerank.apostprocess_nodes([], QueryBundle("q")) == []
    assert fake.calls == []
    for bad in (0, -1):
        with pytest.raises(ValueError, match="top_n"):
            VLLMMaxSimRerank(top_n=bad, reranker=FakeReranker())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        VLLMMaxSimRerank(top_n=True, reranker=FakeReranker())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        VLLMMaxSimRerank(reranker=FakeReranker(), encoder=object())  # type: ignore[arg-type]


class _Collector(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "_Collector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def collector() -> Iterator[_Collector]:
    handler = _Collector()
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        yield handler
    finally:
        root.event_handlers.remove(handler)


@pytest.mark.parametrize("use_async", [False, True])
async def test_rerank_events(collector: _Collector, use_async: bool) -> None:
    debug = LlamaDebugHandler()
    fake = FakeReranker()
    rerank = VLLMMaxSimRerank(
        top_n=2,
        reranker=fake,  # type: ignore[arg-type]
        model="fake",
        callback_manager=CallbackManager([debug]),
    )
    nodes = _nodes()
    if use_async:
        out = await rerank.apostprocess_nodes(nodes, QueryBundle("cat"))
    else:
        out = rerank.postprocess_nodes(nodes, QueryBundle("cat"))
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    start, end = pairs[0]
    assert start.payload is not None and end.payload is not None
    assert start.payload["query_str"] == "cat"
    assert start.payload["model_name"] == "fake"
    assert start.payload["top_k"] == 2
    assert end.payload["nodes"] == out
    starts = [e for e in collector.events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in collector.events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == 1 and len(ends) == 1
    assert starts[0].model_name == "fake" and starts[0].top_n == 2
    assert ends[0].nodes == out


def test_class_names() -> None:
    rerank, _ = _rerank()
    assert rerank.class_name() == "VLLMMaxSimRerank"
    assert rerank.to_dict()["top_n"] == 5


# -- imports ----------------------------------------------------------------------------------


def test_import_does_not_pull_langchain_or_vllm() -> None:
    code = (
        "import sys\n"
        "import vllm_retrieval.llama_index\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'langchain', 'vllm', 'torch'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_missing_extra_names_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_index.core'] = None\n"
        "try:\n"
        "    import vllm_retrieval.llama_index\n"
        "except ImportError as exc:\n"
        "    assert 'llamaindex' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- embedding configuration (no engine is started) -----------------------------------------


def test_embedding_configuration_and_round_trip() -> None:
    from vllm_retrieval import DEFAULT_MODEL
    from vllm_retrieval.llama_index import VLLMEmbedding

    emb = VLLMEmbedding(query_instruction="q: ", max_length=128, embed_batch_size=16, api_key="k")
    assert emb.model_name == DEFAULT_MODEL
    assert emb.class_name() == "VLLMEmbedding"
    enc = emb.encoder
    assert (enc.query_prefix, enc.document_prefix, enc.max_length, enc.batch_size) == (
        "q: ",
        None,
        128,
        16,
    )
    data = emb.to_dict()
    assert data["class_name"] == "VLLMEmbedding"
    assert "api_key" not in data  # secrets stay out of serialised configs
    again = VLLMEmbedding.from_dict(data)
    assert again.encoder.model_path == enc.model_path
    skip = {"model", "api_key"}
    assert again.encoder.model_dump(exclude=skip) == enc.model_dump(exclude=skip)
    # An encoder passed in is used as it is, and its settings show in the fields.
    same = VLLMEmbedding(encoder=enc)
    assert same.encoder is enc and same.query_instruction == "q: " and same.max_length == 128
    with pytest.raises(ValueError, match="disagree"):
        VLLMEmbedding(model_name="a", model="b")
    with pytest.raises(TypeError):
        VLLMEmbedding(encoder="not an encoder")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        VLLMEmbedding(embed_batch_size=0)
