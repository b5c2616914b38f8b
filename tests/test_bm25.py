"""The lexical leg: BM25 in Qdrant (Edge's ``Bm25``, sparse vectors with the IDF modifier).

References: the ``bm25s`` library on the same terms, and BM25 written out here with numpy.
Most tests use real SciFact texts with random dense/token vectors (BM25 reads only the text);
the last one runs every mode on the real packaged model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_retrieval import Encoder, StoreError, StoreMismatchError
from vllm_retrieval.store import MODES, Bm25Settings, MultiVectorStore
from vllm_retrieval.store.lexical import Bm25Encoder, bm25_settings
from vllm_retrieval.store.plan import QueryPlan, weighted_fusion

StoreFactory = Callable[..., MultiVectorStore]  # the make_store fixture (conftest.py)
DIM = 8


@pytest.fixture(scope="module")
def texts(scifact_sample: dict[str, Any]) -> dict[str, Any]:
    corpus: dict[str, str] = scifact_sample["corpus"]
    ids = list(corpus)[:120]
    rng = np.random.default_rng(0)
    return {
        "ids": ids,
        "texts": [corpus[i] for i in ids],
        "queries": list(scifact_sample["queries"].values())[:15],
        "dense": rng.standard_normal((len(ids), DIM)).astype(np.float32),
        "tokens": [rng.standard_normal((4, DIM)).astype(np.float32) for _ in ids],
    }


def _fill(store: MultiVectorStore, t: dict[str, Any], n: int | None = None) -> None:
    n = n or len(t["ids"])
    store.add_encoded(t["texts"][:n], t["dense"][:n], t["tokens"][:n], ids=t["ids"][:n])


def _bm25(store: MultiVectorStore, query: str, k: int = 200) -> list[tuple[Any, float]]:
    hits = store.search_encoded(k=k, mode="bm25", text=query)
    return [(h.id, h.score) for h in hits]


def _reference(
    texts: list[str], ids: list[Any], query: str, s: Bm25Settings | None
) -> dict[Any, float]:
    """BM25 written out: Lucene's IDF over the given documents, the settings' k, b, avg_len."""
    assert s is not None
    enc = Bm25Encoder(s)
    docs = [enc.terms(t) for t in texts]
    n = len(docs)
    out: dict[Any, float] = {}
    for term in enc.terms(query):
        df = sum(term in d for d in docs)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for doc_id, d in zip(ids, docs, strict=True):
            tf = d.get(term, 0)
            if tf:
                norm = s.k * (1 - s.b + s.b * sum(d.values()) / s.avg_len)
                out[doc_id] = out.get(doc_id, 0.0) + idf * tf * (s.k + 1) / (tf + norm)
    return out


def _check_scores(got: list[tuple[Any, float]], ref: dict[Any, float]) -> None:
    assert {i for i, _ in got} == set(ref)
    for doc_id, score in got:
        assert score == pytest.approx(ref[doc_id], rel=1e-4), doc_id


def test_bm25_ranks_as_the_bm25s_library(make_store: StoreFactory, texts: dict[str, Any]) -> None:
    """Same terms, same k and b, average length measured by build_bm25: the same ranking."""
    import bm25s
    from scipy.stats import spearmanr

    store = make_store(dim=DIM)
    _fill(store, texts)
    settings = store.build_bm25()
    enc = Bm25Encoder(settings)
    docs = [enc.terms(t) for t in texts["texts"]]
    assert settings.measured_docs == len(docs)
    assert settings.avg_len == pytest.approx(np.mean([sum(d.values()) for d in docs]))
    lib = bm25s.BM25(k1=settings.k, b=settings.b, method="lucene")
    lib.index(
        [[str(t) for t, tf in d.items() for _ in range(tf)] for d in docs], show_progress=False
    )
    for query in texts["queries"]:
        ref = lib.get_scores([str(t) for t in enc.terms(query)])
        got = dict(_bm25(store, query))
        matched = [i for i, s in enumerate(ref) if s > 0]
        assert {texts["ids"][i] for i in matched} == set(got)
        ours = [got[texts["ids"][i]] for i in matched]
        assert spearmanr(ours, ref[matched]).statistic > 0.999
        # Lucene's BM25 leaves out the constant (k + 1) of the term weight
        np.testing.assert_allclose(ours, (settings.k + 1) * ref[matched], rtol=1e-4)


def test_idf_follows_deletes_and_adds(make_store: StoreFactory, texts: dict[str, Any]) -> None:
    store = make_store(dim=DIM)
    _fill(store, texts, 100)
    settings = store.build_bm25()
    query = texts["queries"][0]
    _check_scores(
        _bm25(store, query), _reference(texts["texts"][:100], texts["ids"][:100], query, settings)
    )
    # delete the documents that match the query best: IDF changes for its terms
    gone = [i for i, _ in _bm25(store, query, k=10)]
    assert store.delete(gone) == 10
    store.optimize()  # Qdrant counts deleted points in IDF until it vacuums them
    keep = [i for i, doc_id in enumerate(texts["ids"][:100]) if doc_id not in gone]
    ref = _reference(
        [texts["texts"][i] for i in keep], [texts["ids"][i] for i in keep], query, store.bm25
    )
    _check_scores(_bm25(store, query), ref)
    # documents added later get their vector in the same write and count at once
    store.add_encoded(
        texts["texts"][100:], texts["dense"][100:], texts["tokens"][100:], ids=texts["ids"][100:]
    )
    keep += list(range(100, len(texts["ids"])))
    ref = _reference(
        [texts["texts"][i] for i in keep], [texts["ids"][i] for i in keep], query, store.bm25
    )
    _check_scores(_bm25(store, query), ref)


def test_bm25_survives_reopen(make_store: StoreFactory, texts: dict[str, Any]) -> None:
    store = make_store(dim=DIM, bm25={"k": 1.5, "b": 0.5})
    _fill(store, texts)
    store.optimize()  # measures avg_len (never measured on a new store)
    settings = store.bm25
    assert (
        settings is not None and settings.k == 1.5 and settings.measured_docs == len(texts["ids"])
    )
    before = [_bm25(store, q, 10) for q in texts["queries"][:5]]
    store.close()
    again = make_store(reopen=True)
    assert again.bm25 == settings
    assert again.describe()["bm25"] == settings.model_dump()
    assert [_bm25(again, q, 10) for q in texts["queries"][:5]] == before
    again.close()
    with pytest.raises(StoreMismatchError, match="build_bm25"):
        make_store(reopen=True, bm25={"k": 2.0})
    third = make_store(reopen=True, bm25={"k": 1.5, "b": 0.5})  # the same settings: fine
    assert third.build_bm25(k=2.0).k == 2.0  # changing them is a rebuild
    assert third.bm25 is not None and third.bm25.b == 0.5


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"language": "klingon"}, "unknown BM25 language 'klingon'"),
        ({"k": 0}, "k"),
        ({"k": -1.0}, "k"),
        ({"b": 1.5}, "b"),
        ({"b": -0.1}, "b"),
        ({"avg_len": 0}, "avg_len"),
        ({"stemmer": "porter"}, "stemmer"),
        ({"tokenizer": "word"}, "tokenizer"),
    ],
)
def test_bad_bm25_settings_are_clear_errors(
    tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        MultiVectorStore(path=tmp_path / "idx", dim=DIM, bm25=bad)
    assert "bad BM25 settings" in str(err.value)
    assert not (tmp_path / "idx").exists()  # nothing was created
    with pytest.raises(ValueError, match=message):
        bm25_settings(bad)


def test_backends_agree(tmp_path: Path, texts: dict[str, Any]) -> None:
    edge = MultiVectorStore(path=tmp_path / "edge", dim=DIM)
    client = MultiVectorStore(client_path=tmp_path / "client", collection="docs", dim=DIM)
    try:
        for store in (edge, client):
            _fill(store, texts)
            store.optimize()
        assert edge.bm25 == client.bm25
        for query in texts["queries"]:
            a, b = dict(_bm25(edge, query)), dict(_bm25(client, query))
            assert set(a) == set(b)
            for doc_id in a:
                assert a[doc_id] == pytest.approx(b[doc_id], rel=1e-4)
            variants: list[dict[str, Any]] = [
                {},
                {"fusion": "rrf", "fuse": ["bm25", "dense"], "weights": [2, 1]},
            ]
            for kw in variants:
                qd, qt = texts["dense"][0], texts["tokens"][0]
                ea = edge.search_encoded(qd, qt, k=5, text=query, mode="fusion", **kw)
                cl = client.search_encoded(qd, qt, k=5, text=query, mode="fusion", **kw)
                np.testing.assert_allclose([h.score for h in ea], [h.score for h in cl], rtol=1e-4)
    finally:
        edge.close()
        client.close()


def _old_store(monkeypatch: pytest.MonkeyPatch, factory: StoreFactory, t: dict[str, Any]) -> None:
    """A store as vllm-retrieval wrote it before BM25: no BM25 vector in the schema."""
    from vllm_retrieval.store.backends import client, edge

    for module in (edge, client):
        real = module.new_manifest

        def old(*args: Any, _real: Any = real, **kw: Any) -> Any:
            return _real(*args, **kw).model_copy(update={"bm25_vector": None, "bm25": None})

        monkeypatch.setattr(module, "new_manifest", old)
    store = factory(dim=DIM)
    _fill(store, t)
    store.close()
    monkeypatch.undo()


def test_old_store_opens_and_build_bm25_adds_it(
    make_store: StoreFactory, texts: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _old_store(monkeypatch, make_store, texts)
    store = make_store(reopen=True)
    assert store.bm25 is None and store.manifest.bm25_vector is None
    qd, qt = texts["dense"][3], texts["tokens"][3]
    query = texts["queries"][0]
    with pytest.raises(StoreError, match=r"build_bm25\(\)"):
        store.search_encoded(qd, qt, mode="bm25", text=query)
    with pytest.raises(StoreError, match=r"build_bm25\(\)"):
        store.search_encoded(qd, qt, mode="fusion", fuse=["bm25", "dense"], text=query)
    # the default search is hybrid's, as before
    default = store.search_encoded(qd, qt, k=5, text=query)
    hybrid = store.search_encoded(qd, qt, k=5, mode="hybrid")
    assert [h.id for h in default] == [h.id for h in hybrid]
    np.testing.assert_allclose([h.score for h in default], [h.score for h in hybrid], rtol=1e-6)
    settings = store.build_bm25()
    assert store.manifest.bm25_vector == "bm25" and len(store) == len(texts["ids"])
    _check_scores(_bm25(store, query), _reference(texts["texts"], texts["ids"], query, settings))
    assert store.get_tokens([texts["ids"][5]])[0] == pytest.approx(
        texts["tokens"][5] / np.linalg.norm(texts["tokens"][5], axis=1, keepdims=True), abs=1e-5
    )
    if make_store.backend == "edge":  # type: ignore[attr-defined]
        assert store.manifest.shard == "shard.1"
        assert sorted(p.name for p in (tmp_path / "idx").iterdir() if "shard" in p.name) == [
            "shard.1"
        ]
    store.close()
    again = make_store(reopen=True)
    assert again.bm25 == settings
    _check_scores(_bm25(again, query), _reference(texts["texts"], texts["ids"], query, settings))


def test_interrupted_bm25_build_is_safe(
    make_store: StoreFactory, texts: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _old_store(monkeypatch, make_store, texts)
    store = make_store(reopen=True)
    store.batch_size = 32
    backend = store._backend
    real = backend.set_sparse
    calls = {"n": 0}

    def crash(*args: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        real(*args, **kw)

    monkeypatch.setattr(backend, "set_sparse", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        store.build_bm25()
    monkeypatch.undo()
    assert store.bm25 is None  # not recorded: half the documents have no vector
    store.close()
    if make_store.backend == "edge":  # type: ignore[attr-defined]
        # a copy that never became the store's shard is removed on the next open
        raw = json.loads((tmp_path / "idx" / "vllm_retrieval.json").read_text())
        stale = tmp_path / "idx" / "shard.7"
        stale.mkdir()
        assert raw["shard"] == "shard.1"
    again = make_store(reopen=True)
    assert again.bm25 is None
    if make_store.backend == "edge":  # type: ignore[attr-defined]
        assert not stale.exists()
    with pytest.raises(StoreError, match="build_bm25"):
        again.search_encoded(mode="bm25", text=texts["queries"][0])
    again.optimize()  # builds BM25 for a store without it
    query = texts["queries"][1]
    _check_scores(_bm25(again, query), _reference(texts["texts"], texts["ids"], query, again.bm25))


@pytest.mark.parametrize("kw", [{"mode": "bm25"}, {}, {"mode": "hybrid"}])
def test_filters_apply_before_bm25(
    make_store: StoreFactory, texts: dict[str, Any], kw: dict[str, Any]
) -> None:
    store = make_store(dim=DIM)
    n = len(texts["ids"])
    metas = [{"half": i % 2} for i in range(n)]
    store.add_encoded(texts["texts"], texts["dense"], texts["tokens"], metas, texts["ids"])
    store.optimize()
    query = texts["queries"][2]
    even = [texts["ids"][i] for i in range(0, n, 2)]
    ref = _reference(texts["texts"][0::2], even, query, store.bm25)  # IDF: the whole store
    qd, qt = texts["dense"][1], texts["tokens"][1]
    hits = store.search_encoded(qd, qt, k=5, text=query, filter={"half": 0}, **kw)
    assert len(hits) == 5 and {h.id for h in hits} <= set(even)
    if kw.get("mode") == "bm25":  # the filtered top 5, scored with the collection's IDF
        whole = _reference(texts["texts"], texts["ids"], query, store.bm25)
        best = sorted(ref, key=lambda i: -whole[i])[:5]
        assert [h.id for h in hits] == best


def test_query_without_terms_and_without_text(tmp_path: Path, texts: dict[str, Any]) -> None:
    with MultiVectorStore(path=tmp_path / "idx", dim=DIM) as store:
        _fill(store, texts, 20)
        store.add_encoded(
            ["", "the of and"], texts["dense"][:2], texts["tokens"][:2], ids=["e1", "e2"]
        )
        assert store.search_encoded(mode="bm25", text="the and of") == []
        qd, qt = texts["dense"][0], texts["tokens"][0]
        assert len(store.search_encoded(qd, qt, k=5, text="the and of")) == 5
        with pytest.raises(StoreError, match="text="):
            store.search_encoded(qd, qt, mode="bm25")
        with pytest.raises(TypeError):
            store.search_encoded(qd, qt, text=3)  # type: ignore[arg-type]


def test_weighted_fusion_is_min_max_normalised() -> None:
    a = [("x", 10.0), ("y", 6.0), ("z", 2.0)]
    b = [("y", 3.0), ("w", 1.0)]
    fused = dict(weighted_fusion([a, b], [0.25, 0.75], 10))
    assert fused == pytest.approx({"x": 0.25, "y": 0.25 * 0.5 + 0.75, "z": 0.0, "w": 0.0})
    assert weighted_fusion([[("only", 5.0)]], [1.0], 3) == [("only", 1.0)]
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"weights": [1.0]}, ValueError),
        ({"weights": [1.0, -1.0, 0.0]}, ValueError),
        ({"weights": [0, 0, 0]}, ValueError),
        ({"weights": "1 1 1"}, TypeError),
        ({"fuse": ["dense", "dense"]}, ValueError),
        ({"fuse": ["sparse"]}, ValueError),
        ({"fuse": []}, ValueError),
        ({"fusion": "dbsf", "weights": [1, 1, 1]}, ValueError),
        ({"fusion": "max"}, ValueError),
    ]
    for bad, err in cases:
        with pytest.raises(err):
            QueryPlan.create("fusion", lexical=None, **bad)


def test_every_mode_finds_relevant_abstracts(
    make_store: StoreFactory, encoder: Encoder, scifact_sample: dict[str, Any]
) -> None:
    """The real model on 200 SciFact abstracts: every mode and fusion finds the evidence."""
    store = make_store(encoder=encoder)
    corpus: dict[str, str] = scifact_sample["corpus"]
    store.add_texts(list(corpus.values()), ids=list(corpus))
    store.optimize()
    queries: dict[str, str] = scifact_sample["queries"]
    qrels: dict[str, set[str]] = scifact_sample["qrels"]
    kws: list[dict[str, Any]] = [{"mode": m} for m in MODES] + [
        {"mode": "fusion", "fusion": f, "fuse": ["maxsim", "bm25"]} for f in ("rrf", "dbsf")
    ]
    for kw in kws:
        found = sum(
            bool({h.id for h in store.search(q, k=10, **kw)} & qrels[qid])
            for qid, q in list(queries.items())[:20]
        )
        assert found >= 14, (kw, found)
    hits = store.search(queries[next(iter(queries))], k=10)  # the default: DBSF of 3 lists
    assert all(0.0 <= h.score <= 3.0 + 1e-6 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
