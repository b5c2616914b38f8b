"""MultiVectorStore: the same tests on embedded Qdrant Edge and on qdrant-client (local mode).

Most tests use random vectors through ``add_encoded`` (exact expectations computed here with
numpy); the ``test_text_*`` tests use the real packaged model through the session encoder.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_retrieval import Encoder, StoreCorruptError, StoreMismatchError
from vllm_retrieval.store import DuplicateIdError, MultiVectorStore, SearchHit

BACKENDS = ["edge", "client"]
MODES = ["dense", "maxsim", "hybrid", "fusion"]
DIM = 16
N = 120
REPO = Path(__file__).resolve().parents[1]
StoreFactory = Callable[..., MultiVectorStore]  # the make_store fixture (conftest.py)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((_unit(q) @ _unit(d).T).max(axis=1).sum())


def _corpus(seed: int = 0, n: int = N, dim: int = DIM) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, dim)).astype(np.float32)
    tokens = [
        rng.standard_normal((int(rng.integers(3, 12)), dim)).astype(np.float32) for _ in range(n)
    ]
    ids: list[str | int] = [i if i % 3 == 0 else f"doc-{i}" for i in range(n)]
    metas = [
        {
            "year": 1990 + i % 30,
            "lang": ["en", "fr", "de"][i % 3],
            "score": (i % 7) / 2,
            "flag": i % 2 == 0,
            "nested": {"k": i % 4},
        }
        for i in range(n)
    ]
    texts = [f"text number {i}" for i in range(n)]
    return {"ids": ids, "dense": dense, "tokens": tokens, "metas": metas, "texts": texts}


@pytest.fixture(scope="module", params=BACKENDS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MultiVectorStore, dict[str, Any]]]:
    """A filled store per backend shared by the read-only tests (never mutate it)."""
    tmp = tmp_path_factory.mktemp(f"shared_{request.param}")
    data = _corpus()
    if request.param == "edge":
        store = MultiVectorStore(path=tmp / "idx", dim=DIM)
    else:
        store = MultiVectorStore(client_path=tmp / "qc", collection="docs", dim=DIM)
    store.add_encoded(data["texts"], data["dense"], data["tokens"], data["metas"], data["ids"])
    yield store, data
    store.close()


@pytest.fixture
def filled(make_store: StoreFactory) -> tuple[MultiVectorStore, dict[str, Any]]:
    data = _corpus()
    store = make_store(dim=DIM)
    got = store.add_encoded(
        data["texts"], data["dense"], data["tokens"], data["metas"], data["ids"]
    )
    assert got == data["ids"]
    return store, data


def _query(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    toks = rng.standard_normal((5, DIM)).astype(np.float32)
    return toks.mean(0), toks


# -- basic CRUD -----------------------------------------------------------------------------


def test_add_get_len_and_id_types(shared: tuple[MultiVectorStore, dict[str, Any]]) -> None:
    store, data = shared
    assert len(store) == N
    hits = store.get([3, "doc-4", "missing", 999_999, "doc-5"])
    assert [h.id for h in hits] == [3, "doc-4", "doc-5"]
    assert isinstance(hits[0].id, int) and isinstance(hits[1].id, str)
    assert hits[1].text == "text number 4"
    assert hits[1].metadata == data["metas"][4]
    assert all(math.isnan(h.score) for h in hits)
    # int 3 and str "3" are different documents
    assert store.get(["3"]) == []
    toks = store.get_tokens([3, "doc-4"])
    np.testing.assert_allclose(toks[0], _unit(data["tokens"][3]), atol=1e-5)
    np.testing.assert_allclose(toks[1], _unit(data["tokens"][4]), atol=1e-5)
    with pytest.raises(KeyError, match="missing"):
        store.get_tokens(["doc-4", "missing"])


def test_auto_ids_are_unique_strings(make_store: StoreFactory) -> None:
    data = _corpus(n=5)
    store = make_store(dim=DIM)
    ids = store.add_encoded(data["texts"], data["dense"], data["tokens"])
    assert len(set(ids)) == 5 and all(isinstance(i, str) for i in ids)
    assert [h.text for h in store.get(ids)] == data["texts"]
    assert store.get(ids)[0].metadata == {}


def test_upsert_replaces(filled: tuple[MultiVectorStore, dict[str, Any]]) -> None:
    store, _ = filled
    rng = np.random.default_rng(99)
    new_tok = rng.standard_normal((4, DIM)).astype(np.float32)
    store.add_encoded(
        ["replaced"], new_tok.mean(0, keepdims=True), [new_tok], [{"v": 2}], ["doc-4"]
    )
    assert len(store) == N
    (hit,) = store.get(["doc-4"])
    assert hit.text == "replaced" and hit.metadata == {"v": 2}
    np.testing.assert_allclose(store.get_tokens(["doc-4"])[0], _unit(new_tok), atol=1e-5)
    top = store.search_encoded(new_tok.mean(0), new_tok, k=1, mode="maxsim")
    assert top[0].id == "doc-4"
    assert top[0].score == pytest.approx(4.0, abs=1e-4)


def test_delete_by_id_and_by_filter(filled: tuple[MultiVectorStore, dict[str, Any]]) -> None:
    store, data = filled
    assert store.delete([0, "doc-1", "nope", 10**12]) == 2  # unknown ids count 0
    assert len(store) == N - 2
    assert store.get([0, "doc-1"]) == []
    assert store.delete([0]) == 0
    expected = sum(1 for i, m in enumerate(data["metas"]) if m["lang"] == "fr" and i > 1)
    assert store.delete(filter={"lang": "fr"}) == expected
    assert len(store) == N - 2 - expected
    assert all(h.metadata["lang"] != "fr" for h in store.search_encoded(*_query(), k=N))
    with pytest.raises(ValueError):
        store.delete()
    with pytest.raises(ValueError, match=r"\$regex"):
        store.delete(filter={"lang": {"$regex": "f.*"}})
    assert len(store) == N - 2 - expected


# -- scoring --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["maxsim", "hybrid"])
def test_maxsim_scores_are_exact(
    shared: tuple[MultiVectorStore, dict[str, Any]], mode: str
) -> None:
    store, data = shared
    qd, qt = _query()
    hits = store.search_encoded(qd, qt, k=10, mode=mode, candidates=N)
    ref = sorted(
        ((_maxsim(qt, t), i) for t, i in zip(data["tokens"], data["ids"], strict=True)),
        reverse=True,
    )[:10]
    assert [h.id for h in hits] == [i for _, i in ref]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in ref], atol=1e-4)


def test_dense_scores_are_cosine(shared: tuple[MultiVectorStore, dict[str, Any]]) -> None:
    store, data = shared
    qd, qt = _query()
    hits = store.search_encoded(qd, qt, k=5, mode="dense")
    cos = _unit(data["dense"]) @ _unit(qd)
    order = np.argsort(-cos)[:5]
    assert [h.id for h in hits] == [data["ids"][i] for i in order]
    np.testing.assert_allclose([h.score for h in hits], cos[order], atol=1e-5)


def test_hybrid_reranks_only_the_dense_candidates(
    shared: tuple[MultiVectorStore, dict[str, Any]],
) -> None:
    store, data = shared
    qd, qt = _query()
    cos = _unit(data["dense"]) @ _unit(qd)
    pool = set(np.argsort(-cos)[:15].tolist())
    hits = store.search_encoded(qd, qt, k=5, mode="hybrid", candidates=15)
    ref = sorted(((_maxsim(qt, data["tokens"][i]), i) for i in pool), reverse=True)[:5]
    assert [h.id for h in hits] == [data["ids"][i] for _, i in ref]


def test_fusion_rrf_is_reciprocal_rank_fusion(
    shared: tuple[MultiVectorStore, dict[str, Any]],
) -> None:
    store, _ = shared
    qd, qt = _query()
    dense = [h.id for h in store.search_encoded(qd, qt, k=N, mode="dense")]
    maxsim = [h.id for h in store.search_encoded(qd, qt, k=N, mode="maxsim")]
    rrf = {i: 1 / (60 + dense.index(i)) + 1 / (60 + maxsim.index(i)) for i in dense}
    fused = store.search_encoded(
        qd, qt, k=10, mode="fusion", candidates=N, fuse=("dense", "maxsim"), fusion="rrf"
    )
    np.testing.assert_allclose([h.score for h in fused], sorted(rrf.values())[::-1][:10], rtol=1e-5)
    assert all(rrf[h.id] == pytest.approx(h.score, rel=1e-5) for h in fused)


def test_fusion_dbsf_normalised_scores(shared: tuple[MultiVectorStore, dict[str, Any]]) -> None:
    store, _ = shared
    qd, qt = _query()
    fused = store.search_encoded(
        qd, qt, k=N, mode="fusion", candidates=N, fuse=("dense", "maxsim"), fusion="dbsf"
    )
    assert len(fused) == N
    scores = [h.score for h in fused]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[0] <= 2.0  # two lists, each normalised to at most 1


# -- filters --------------------------------------------------------------------------------

FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"lang": "en"}, lambda m: m["lang"] == "en"),
    ({"year": {"$gte": 2010}}, lambda m: m["year"] >= 2010),
    ({"year": {"$gt": 2000, "$lte": 2005}}, lambda m: 2000 < m["year"] <= 2005),
    (
        {"year": {"$lt": 1995}, "lang": {"$ne": "fr"}},
        lambda m: m["year"] < 1995 and m["lang"] != "fr",
    ),
    ({"lang": {"$in": ["fr", "de"]}}, lambda m: m["lang"] in ("fr", "de")),
    ({"lang": {"$nin": ["fr", "de"]}}, lambda m: m["lang"] not in ("fr", "de")),
    ({"year": {"$in": [1990, 1991, 2019]}}, lambda m: m["year"] in (1990, 1991, 2019)),
    ({"score": 1.5}, lambda m: m["score"] == 1.5),
    ({"score": {"$eq": 0.5}}, lambda m: m["score"] == 0.5),
    ({"flag": True}, lambda m: m["flag"] is True),
    ({"nested.k": 3}, lambda m: m["nested"]["k"] == 3),
    (
        {"$or": [{"lang": "de"}, {"year": {"$lt": 1993}}]},
        lambda m: m["lang"] == "de" or m["year"] < 1993,
    ),
    (
        {"$and": [{"lang": "de"}, {"year": {"$gte": 2000}}]},
        lambda m: m["lang"] == "de" and m["year"] >= 2000,
    ),
    ({"$not": {"lang": "en"}}, lambda m: m["lang"] != "en"),
    (
        {"$not": {"$or": [{"lang": "en"}, {"flag": False}]}},
        lambda m: not (m["lang"] == "en" or m["flag"] is False),
    ),
    ({"year": 1850}, lambda m: False),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(FILTERS)))
def test_filters_apply_before_scoring_in_every_mode(
    shared: tuple[MultiVectorStore, dict[str, Any]], mode: str, case: int
) -> None:
    store, data = shared
    flt, pred = FILTERS[case]
    expected = {i for i, m in zip(data["ids"], data["metas"], strict=True) if pred(m)}
    qd, qt = _query()
    # k and candidates cover the store: the result must be exactly the matching set.
    hits = store.search_encoded(qd, qt, k=N + 5, mode=mode, filter=flt, candidates=N)
    assert {h.id for h in hits} == expected
    assert len(hits) == len(expected)
    # With a small k the top results still all match (the filter is not a post-filter).
    small = store.search_encoded(qd, qt, k=3, mode=mode, filter=flt, candidates=10)
    assert len(small) == min(3, len(expected))
    assert {h.id for h in small} <= expected


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"year": {"$regex": "x"}}, r"\$regex"),
        ({"$nor": [{"a": 1}]}, r"\$nor"),
        ({"$and": {"a": 1}}, r"\$and"),
        ({"year": {"$gt": "2010"}}, r"\$gt"),
        ({"lang": {"$in": []}}, r"\$in"),
        ({"lang": {"$in": ["en", 3]}}, r"\$in"),
        ({"lang": [1, 2]}, "lang"),
    ],
)
def test_bad_filters_raise_value_error(
    shared: tuple[MultiVectorStore, dict[str, Any]], flt: dict[str, Any], message: str
) -> None:
    store, _ = shared
    with pytest.raises(ValueError, match=message):
        store.search_encoded(*_query(), k=3, filter=flt)


# -- bad input ------------------------------------------------------------------------------


def test_k_and_mode_validation(shared: tuple[MultiVectorStore, dict[str, Any]]) -> None:
    store, _ = shared
    qd, qt = _query()
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be"):
            store.search_encoded(qd, qt, k=k)
    with pytest.raises(TypeError):
        store.search_encoded(qd, qt, k=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        store.search_encoded(qd, qt, mode="sparse")
    with pytest.raises(ValueError, match="fusion"):
        store.search_encoded(qd, qt, mode="fusion", fusion="max")
    with pytest.raises(StoreMismatchError):
        store.search_encoded(qd[:8], qt, mode="dense")
    for mode in MODES:
        assert len(store.search_encoded(qd, qt, k=10 * N, mode=mode, candidates=N)) == N


def test_bad_writes_leave_the_store_unchanged(
    filled: tuple[MultiVectorStore, dict[str, Any]],
) -> None:
    store, _ = filled
    d = _corpus(seed=5, n=4)
    good = (d["texts"], d["dense"], d["tokens"])
    bad_calls: list[tuple[type[Exception], dict[str, Any]]] = [
        (DuplicateIdError, {"ids": ["x1", "x2", "x1", "x3"]}),
        (ValueError, {"ids": ["x1", "x2"]}),
        (ValueError, {"metadatas": [{}, {}]}),
        (ValueError, {"metadatas": [{}, {}, {"bad": object()}, {}]}),
        (ValueError, {"metadatas": [{}, {}, {"nan": float("nan")}, {}]}),
        (TypeError, {"ids": ["x1", "x2", 3.5, "x4"]}),
        (TypeError, {"ids": ["x1", "x2", True, "x4"]}),
        (ValueError, {"ids": ["x1", "x2", -3, "x4"]}),
        (ValueError, {"ids": ["x1", "x2", "", "x4"]}),
    ]
    for exc, kw in bad_calls:
        kw.setdefault("ids", ["x1", "x2", "x3", "x4"])
        with pytest.raises(exc):
            store.add_encoded(*good, **kw)
    ids = ["x1", "x2", "x3", "x4"]
    with pytest.raises(StoreMismatchError):
        store.add_encoded(d["texts"], d["dense"][:, :8], d["tokens"], ids=ids)
    bad_tokens = list(d["tokens"])
    bad_tokens[3] = bad_tokens[3][:, :8]
    with pytest.raises(StoreMismatchError):
        store.add_encoded(d["texts"], d["dense"], bad_tokens, ids=ids)
    nan_dense = d["dense"].copy()
    nan_dense[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.add_encoded(d["texts"], nan_dense, d["tokens"], ids=ids)
    with pytest.raises(ValueError):
        store.add_encoded(d["texts"], d["dense"], d["tokens"][:3], ids=ids)
    with pytest.raises(ValueError):
        store.add_encoded(d["texts"], d["dense"], [*d["tokens"][:3], np.zeros((0, DIM))], ids=ids)
    with pytest.raises(TypeError):
        store.add_encoded("one text", d["dense"][:1], d["tokens"][:1])
    assert len(store) == N
    assert store.get(ids) == []


def test_batched_ingestion_with_progress(make_store: StoreFactory) -> None:
    data = _corpus(seed=3, n=50)
    store = make_store(dim=DIM, batch_size=7, show_progress=True)
    store.add_encoded(data["texts"], data["dense"], data["tokens"], data["metas"], data["ids"])
    assert len(store) == 50
    assert [h.id for h in store.get(data["ids"])] == data["ids"]


# -- persistence, reopen, mismatch, corruption -------------------------------------------------


def test_reopen_keeps_data_and_checks_settings(make_store: StoreFactory) -> None:
    data = _corpus(n=20)
    store = make_store(dim=DIM, compression="fp16")
    store.add_encoded(data["texts"], data["dense"], data["tokens"], data["metas"], data["ids"])
    store.close()
    with pytest.raises(StoreMismatchError, match="32"):
        make_store(reopen=True, dim=32)
    with pytest.raises(StoreMismatchError, match="compression"):
        make_store(reopen=True, compression="int8")
    again = make_store(reopen=True)
    assert again.dim == DIM and again.compression == "fp16"
    assert len(again) == 20
    assert again.get(["doc-1"])[0].metadata == data["metas"][1]
    # fp16 storage: token vectors come back within half-precision rounding.
    np.testing.assert_allclose(again.get_tokens(["doc-2"])[0], _unit(data["tokens"][2]), atol=2e-3)
    with pytest.raises(StoreMismatchError):
        again.add_encoded(["x"], np.ones((1, 32), np.float32), [np.ones((2, 32), np.float32)])
    assert len(again) == 20


@pytest.mark.parametrize("compression", [None, "fp16", "int8", "binary"])
def test_compression_keeps_maxsim_ranking(
    make_store: StoreFactory, compression: str | None
) -> None:
    data = _corpus(seed=11, n=200, dim=64)
    store = make_store(dim=64, compression=compression)
    store.add_encoded(data["texts"], data["dense"], data["tokens"], ids=data["ids"])
    store.optimize()
    overlap = []
    for s in range(5):
        qt = np.random.default_rng(100 + s).standard_normal((8, 64)).astype(np.float32)
        qd = qt.mean(0)
        hits = store.search_encoded(qd, qt, k=10, mode="maxsim")
        ref = sorted(
            ((_maxsim(qt, t), i) for t, i in zip(data["tokens"], data["ids"], strict=True)),
            reverse=True,
        )[:10]
        overlap.append(len({h.id for h in hits} & {i for _, i in ref}) / 10)
    assert np.mean(overlap) >= 0.9, overlap


def test_open_missing_and_new_store_needs_dim(make_store: StoreFactory) -> None:
    with pytest.raises(FileNotFoundError):
        make_store(reopen=True)
    with pytest.raises(ValueError, match="dim"):
        make_store()


def test_edge_corrupt_and_foreign_directories(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(StoreCorruptError, match="not a vllm-retrieval store"):
        MultiVectorStore(path=foreign, dim=DIM)
    assert sorted(p.name for p in foreign.iterdir()) == ["data.pkl"]  # untouched
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreCorruptError):
        MultiVectorStore(path=a_file, dim=DIM)

    good = tmp_path / "good"
    MultiVectorStore(path=good, dim=DIM).close()
    manifest = good / "vllm_retrieval.json"
    original = manifest.read_text()
    for bad in [
        "{not json",
        "[]",
        json.dumps({"format": "other"}),
        original.replace('"dim": 16', '"dim": -4'),
        original.replace('"schema_version": 3', '"schema_version": 99'),
        original.replace('"schema_version": 3', '"schema_version": 1, "token_vector": "other"'),
        original.replace('"generation": 0', '"generation": -1'),
    ]:
        assert bad != original
        manifest.write_text(bad)
        with pytest.raises(StoreCorruptError):
            MultiVectorStore.open(good)
    # A version-1 manifest (which also recorded the fixed vector names) still opens.
    v1 = json.loads(original)
    v1.update(schema_version=1, dense_vector="dense", token_vector="colbert", distance="cosine")
    manifest.write_text(json.dumps(v1))
    with MultiVectorStore.open(good) as reopened:
        assert reopened.dim == DIM and reopened.manifest.schema_version == 3
    # So does a version-2 one (before the generation number): generation 0.
    v2 = json.loads(original)
    del v2["generation"]
    manifest.write_text(json.dumps(dict(v2, schema_version=2)))
    with MultiVectorStore.open(good) as reopened:
        assert reopened.manifest.schema_version == 3 and reopened.manifest.generation == 0
    manifest.write_text(original)
    # A damaged shard is reported as corrupt, not as a crash of the engine.
    for f in (good / "shard").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(StoreCorruptError):
        MultiVectorStore.open(good)


def test_client_foreign_collection(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    path = tmp_path / "qc"
    client = QdrantClient(path=str(path))
    client.create_collection(
        "docs", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
    )
    client.close()
    with pytest.raises(StoreCorruptError, match="not created by vllm-retrieval"):
        MultiVectorStore(client_path=path, collection="docs", dim=DIM)


def test_persistence_across_a_real_process_restart(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    data = _corpus(seed=21, n=30)
    np.savez(
        tmp_path / "vecs.npz",
        dense=data["dense"],
        **{f"t{i}": t for i, t in enumerate(data["tokens"])},
    )
    backend = make_store.backend  # type: ignore[attr-defined]
    target = (
        f"path={str(tmp_path / 'idx')!r}"
        if backend == "edge"
        else f"client_path={str(tmp_path / 'qdrant_local')!r}, collection='docs'"
    )
    script = textwrap.dedent(f"""
        import json, sys, numpy as np
        from vllm_retrieval.store import MultiVectorStore
        z = np.load({str(tmp_path / "vecs.npz")!r})
        tokens = [z[f"t{{i}}"] for i in range(30)]
        store = MultiVectorStore({target}, dim={DIM})
        ids = [i if i % 2 else f"s{{i}}" for i in range(30)]
        store.add_encoded([f"t{{i}}" for i in range(30)], z["dense"], tokens,
                          [{{"i": i}} for i in range(30)], ids)
        store.delete(["s0"])
        store.close()
        print("done")
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "integrations") + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    store = make_store(reopen=True)
    assert len(store) == 29
    assert store.get(["s0"]) == []
    (hit,) = store.get([5])
    assert isinstance(hit, SearchHit)
    assert (hit.id, hit.text, hit.metadata) == (5, "t5", {"i": 5})
    top = store.search_encoded(data["dense"][7], data["tokens"][7], k=1)
    assert top[0].id == 7


# -- with the real model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_encoded(encoder: Encoder, scifact_sample: dict[str, Any]) -> dict[str, Any]:
    corpus: dict[str, str] = scifact_sample["corpus"]  # type: ignore[assignment]
    dense, tokens = encoder.encode_documents(list(corpus.values()))
    return {"ids": list(corpus), "texts": list(corpus.values()), "dense": dense, "tokens": tokens}


def test_text_add_search_and_async(
    make_store: StoreFactory,
    encoder: Encoder,
    scifact_sample: dict[str, Any],
    sample_encoded: dict[str, Any],
) -> None:
    store = make_store(encoder=encoder)
    assert store.dim == 384
    enc = sample_encoded
    # add_texts on a few documents: same vectors as the batch encoding.
    few = store.add_texts(enc["texts"][:6], [{"n": i} for i in range(6)], enc["ids"][:6])
    assert few == enc["ids"][:6]
    for got, ref in zip(store.get_tokens(few), enc["tokens"][:6], strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-4)
    store.add_encoded(
        enc["texts"][6:],
        enc["dense"][6:],
        enc["tokens"][6:],
        [{"n": i} for i in range(6, len(enc["ids"]))],
        enc["ids"][6:],
    )
    assert len(store) == len(enc["ids"])
    queries: dict[str, str] = scifact_sample["queries"]  # type: ignore[assignment]
    qrels: dict[str, set[str]] = scifact_sample["qrels"]  # type: ignore[assignment]
    qids = list(queries)[:20]
    q_dense, q_tokens = encoder.encode_queries([queries[q] for q in qids])
    for mode in MODES:
        found = sum(
            bool(
                {
                    h.id
                    for h in store.search_encoded(
                        q_dense[i], q_tokens[i], k=10, mode=mode, text=queries[qid]
                    )
                }
                & qrels[qid]
            )
            for i, qid in enumerate(qids)
        )
        assert found / len(qids) >= 0.7, (mode, found)
        # The text path encodes the query the same way (batching may flip near-ties).
        by_text = store.search(queries[qids[0]], k=5, mode=mode)
        by_vec = store.search_encoded(
            q_dense[0], q_tokens[0], k=5, mode=mode, text=queries[qids[0]]
        )
        np.testing.assert_allclose([h.score for h in by_text], [h.score for h in by_vec], rtol=2e-3)
        assert len({h.id for h in by_text} & {h.id for h in by_vec}) >= 4
    flt = {"n": {"$lt": 50}}
    for mode in MODES:
        hits = store.search(next(iter(queries.values())), k=5, mode=mode, filter=flt)
        assert hits and all(h.metadata["n"] < 50 for h in hits)


async def test_text_async_paths(
    make_store: StoreFactory,
    encoder: Encoder,
    scifact_sample: dict[str, Any],
) -> None:
    store = make_store(encoder=encoder)
    corpus: dict[str, str] = scifact_sample["corpus"]  # type: ignore[assignment]
    ids = list(corpus)[:8]
    got = await store.aadd_texts([corpus[i] for i in ids], ids=ids)
    assert got == ids and len(store) == 8
    hits = await store.asearch(corpus[ids[3]][:200], k=3)
    assert hits[0].id == ids[3]


def test_text_reopen_restores_encoder_and_refuses_another(
    make_store: StoreFactory, encoder: Encoder, sample_encoded: dict[str, Any]
) -> None:
    enc = sample_encoded
    store = make_store(encoder=encoder)
    store.add_encoded(enc["texts"][:20], enc["dense"][:20], enc["tokens"][:20], ids=enc["ids"][:20])
    store.close()
    other = Encoder(max_length=64)  # other settings; no engine is started to build it
    with pytest.raises(StoreMismatchError, match="max_length"):
        make_store(reopen=True, encoder=other)
    again = make_store(reopen=True)  # no encoder: rebuilt from the recorded settings
    assert again.encoder.max_length == encoder.max_length
    assert again.encoder.model_profile.describe() == encoder.model_profile.describe()
    hits = again.search(enc["texts"][4][:300], k=1)
    assert hits[0].id == enc["ids"][4]


def test_add_texts_overlaps_batches_and_keeps_those_written_before_an_error(
    encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch k+1 is encoded while batch k is written; an encoder failure on batch 3 leaves
    batches 1 and 2 stored (durable) and nothing of batch 3, and the error reaches the caller."""
    from vllm_retrieval import EngineError

    texts = [f"document number {i} about late interaction" for i in range(10)]
    calls: list[list[str]] = []
    real = Encoder.encode_documents

    def flaky(self: Encoder, batch: Any) -> Any:
        calls.append(list(batch))
        if len(calls) == 3:
            raise EngineError("the engine failed on batch 3 (test)")
        return real(self, batch)

    monkeypatch.setattr(Encoder, "encode_documents", flaky)
    with MultiVectorStore(tmp_path / "s", encoder=encoder, batch_size=2) as store:
        with pytest.raises(EngineError, match="batch 3"):
            store.add_texts(texts, ids=list(range(10)))
        assert calls == [texts[0:2], texts[2:4], texts[4:6]]  # never beyond the failure
        assert len(store) == 4
        assert sorted(h.id for h in store.get(list(range(10)))) == [0, 1, 2, 3]
    monkeypatch.undo()
    with MultiVectorStore.open(tmp_path / "s", encoder=encoder) as store:  # durable, usable
        store.add_texts(texts[4:], ids=list(range(4, 10)))
        assert len(store) == 10
