"""The token index (centroid postings as a Qdrant sparse vector) on both store backends.

Clustered synthetic documents (topic vocabularies, like benchmarks/search.py, smaller): the
mean-pooled dense vector is a weak candidate generator for MaxSim there, the token index a
strong one. Expectations are computed here with numpy (exact MaxSim, brute-force centroids).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_retrieval import StoreCorruptError
from vllm_retrieval.errors import StoreError
from vllm_retrieval.store import MultiVectorStore, indexing, maintenance
from vllm_retrieval.store.manifest import CENTROIDS
from vllm_retrieval.store.records import point_id
from vllm_retrieval.store.token_index import (
    MIN_DOCS,
    CentroidIndex,
    default_centroids,
    postings,
)

StoreFactory = Callable[..., MultiVectorStore]  # the make_store fixture (conftest.py)

DIM = 32
N_DOCS = 1500
VOCAB, TOPICS, TOPIC_WORDS = 600, 40, 30


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Corpus:
    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.vocab = _unit(rng.standard_normal((VOCAB, DIM)))
        self.topics = rng.integers(0, VOCAB, size=(TOPICS, TOPIC_WORDS))
        self.words: list[np.ndarray] = []
        self.tokens: list[np.ndarray] = []
        for _ in range(N_DOCS):
            words = rng.choice(self.topics[rng.integers(TOPICS)], size=int(rng.integers(20, 41)))
            self.words.append(words)
            self.tokens.append(
                _unit(self.vocab[words] + 0.05 * rng.standard_normal((len(words), DIM)))
            )
        self.dense = _unit(np.stack([t.mean(0) for t in self.tokens]))
        self.ids: list[str | int] = [i if i % 2 else f"d{i}" for i in range(N_DOCS)]
        self.metas = [{"shard": i % 3} for i in range(N_DOCS)]

    def query(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(10_000 + q)
        words = rng.choice(self.words[int(rng.integers(N_DOCS))], size=8)
        toks = _unit(self.vocab[words] + 0.08 * rng.standard_normal((8, DIM)))
        return _unit(toks.mean(0)), toks

    def exact(self, qt: np.ndarray, k: int, keep: Callable[[int], bool] = lambda i: True) -> list:
        scores = [
            (float((qt @ t.T).max(1).sum()), self.ids[i])
            for i, t in enumerate(self.tokens)
            if keep(i)
        ]
        return [i for _, i in sorted(scores, key=lambda x: -x[0])[:k]]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


def _fill(store: MultiVectorStore, corpus: Corpus, n: int = N_DOCS) -> None:
    store.add_encoded(
        [f"text {i}" for i in range(n)],
        corpus.dense[:n],
        corpus.tokens[:n],
        corpus.metas[:n],
        corpus.ids[:n],
    )


def _recall(store: MultiVectorStore, corpus: Corpus, candidates: int, **kw: Any) -> float:
    got = []
    for q in range(20):
        qd, qt = corpus.query(q)
        hits = store.search_encoded(qd, qt, k=10, mode="hybrid", candidates=candidates, **kw)
        got.append(len({h.id for h in hits} & set(corpus.exact(qt, 10))) / 10)
    return float(np.mean(got))


def test_default_centroids() -> None:
    assert default_centroids(0) == 64
    assert default_centroids(10_000) == 128  # 2 sqrt(T) = 200
    assert default_centroids(1_000_000) == 1024  # 2000
    assert default_centroids(10_000_000) == 4096  # 6325
    assert default_centroids(10**12) == 8192


def test_assign_and_probe_match_brute_force(corpus: Corpus) -> None:
    sample = np.concatenate(corpus.tokens[:300])
    index = CentroidIndex.train(sample, 64, seed=1)
    cents = index.centroids
    assert cents.shape == (64, DIM)
    np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, atol=1e-5)
    for toks, (ids, vals) in zip(corpus.tokens[:20], index.assign(corpus.tokens[:20]), strict=True):
        assert ids == sorted(set(np.argmax(toks @ cents.T, axis=1).tolist()))
        assert vals == [1.0] * len(ids)
    _, qt = corpus.query(0)
    ids, vals = index.probe(qt, 3)
    sims = qt @ cents.T
    want: dict[int, float] = {}
    for row in sims:
        for c in np.argsort(-row)[:3]:
            if row[c] > 0:
                want[int(c)] = want.get(int(c), 0.0) + float(row[c])
    assert ids == sorted(want)
    np.testing.assert_allclose(vals, [want[i] for i in ids], rtol=1e-5)
    with pytest.raises(ValueError, match="finite"):
        CentroidIndex(np.full((4, DIM), np.nan, np.float32))


def test_vectorised_postings_equal_per_document_unique() -> None:
    """One sort over (document, centroid) keys gives what ``np.unique`` per document gave
    (empty documents included), and chunked nearest-centroid search is brute force."""
    rng = np.random.default_rng(7)
    for k in (1, 5, 300):
        lengths = rng.integers(0, 40, size=200)
        lengths[:3] = 0
        nearest = rng.integers(0, k, size=int(lengths.sum()))
        want = [
            (np.unique(part).tolist(), [1.0] * np.unique(part).size)
            for part in np.split(nearest, np.cumsum(lengths)[:-1])
        ]
        assert postings(nearest, lengths, k) == want
    assert postings(np.zeros(0, np.int64), [], 4) == []
    cents = _unit(rng.standard_normal((50, DIM)))
    index = CentroidIndex(cents)
    flat = _unit(rng.standard_normal((1000, DIM)))
    np.testing.assert_array_equal(index.nearest(flat, chunk=64), np.argmax(flat @ cents.T, 1))
    docs = np.split(flat, [10, 10, 400, 999])  # an empty document among them
    assert index.assign(docs) == index.assign_flat(flat, [len(d) for d in docs])
    assert index.assign(docs)[1] == ([], [])
    assert index.assign([]) == []


def _postings(store: MultiVectorStore) -> dict[Any, list[int]]:
    """Every stored point's centroid postings, read back from Qdrant."""
    backend: Any = store._backend
    out: dict[Any, list[int]] = {}
    offset: Any = None
    while True:
        if backend.kind == "edge":
            recs, offset = backend.shard.scroll(
                backend.qe.ScrollRequest(offset=offset, limit=500, with_vector=[CENTROIDS])
            )
        else:
            recs, offset = backend.client.scroll(
                backend.collection, limit=500, offset=offset, with_vectors=[CENTROIDS]
            )
        for r in recs:
            sp = (r.vector or {}).get(CENTROIDS)
            out[r.id] = sorted(sp.indices) if sp is not None else []
        if offset is None or not recs:
            return out


def test_build_posts_every_document(
    make_store: StoreFactory, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages read while the previous page is assigned (small pages: many in flight): every
    document carries exactly its tokens' nearest centroids, and the phases are timed."""
    store = make_store(dim=DIM, batch_size=37)
    _fill(store, corpus, n=1100)
    timings: dict[str, float] = {}

    def timed(*a: Any, **kw: Any) -> Any:
        return indexing.build_postings(*a, timings=timings, **kw)

    monkeypatch.setattr(maintenance, "build_postings", timed)
    settings = store.build_token_index(centroids=64, sample_tokens=3000)
    assert settings.indexed_tokens == sum(t.shape[0] for t in corpus.tokens[:1100])
    assert settings.trained_tokens == 3000  # capped to the sample asked for
    assert {"list ids", "sample read", "k-means", "read all", "assign", "write postings"} <= set(
        timings
    )
    cents = store._backend.load_centroids()
    got = _postings(store)
    assert len(got) == 1100
    want = {
        str(point_id(doc_id)): sorted(set(np.argmax(toks @ cents.T, axis=1).tolist()))
        for doc_id, toks in zip(corpus.ids[:1100], corpus.tokens[:1100], strict=True)
    }
    assert {str(k): v for k, v in got.items()} == want


def test_token_index_lifts_hybrid_recall(make_store: StoreFactory, corpus: Corpus) -> None:
    store = make_store(dim=DIM)
    _fill(store, corpus)
    assert store.token_index is None
    before = _recall(store, corpus, candidates=30)
    settings = store.build_token_index(centroids=256, nprobe=2)
    assert store.token_index == settings
    assert settings.centroids == 256 and settings.nprobe == 2
    assert settings.indexed_tokens == sum(t.shape[0] for t in corpus.tokens)
    after = _recall(store, corpus, candidates=30)
    assert before < 0.8, before  # the mean-pooled dense prefetch misses MaxSim's best
    assert after >= 0.95, (before, after)
    # Scores are still exact MaxSim of the returned documents.
    qd, qt = corpus.query(3)
    by_id = dict(zip(corpus.ids, corpus.tokens, strict=True))
    for h in store.search_encoded(qd, qt, k=10, mode="hybrid", candidates=30):
        assert h.score == pytest.approx(float((qt @ by_id[h.id].T).max(1).sum()), abs=1e-4)
    # More probes per query token never hurt recall here.
    assert _recall(store, corpus, candidates=30, nprobe=4) >= after - 0.02
    with pytest.raises(ValueError, match="nprobe"):
        store.search_encoded(qd, qt, mode="hybrid", nprobe=0)
    with pytest.raises(TypeError, match="nprobe"):
        store.search_encoded(qd, qt, mode="hybrid", nprobe=1.5)  # type: ignore[arg-type]


def test_documents_added_later_join_the_index(make_store: StoreFactory, corpus: Corpus) -> None:
    store = make_store(dim=DIM)
    _fill(store, corpus, n=1200)
    store.build_token_index(centroids=128)
    qd, qt = corpus.query(5)
    # A document made of the query's own tokens, with a dense vector pointing away from the
    # query: only its centroid postings (computed when it is written) can find it.
    store.add_encoded(["needle"], -qd[None, :], [qt.copy()], ids=["needle"])
    hits = store.search_encoded(qd, qt, k=3, mode="hybrid", candidates=20)
    assert hits[0].id == "needle"
    assert hits[0].score == pytest.approx(float((qt @ qt.T).max(1).sum()), abs=1e-4)
    # Upsert replaces its postings: re-written with other tokens (and a dense vector unrelated
    # to either query), the needle is found by a query of its new tokens, through postings
    # computed at this write only.
    rng = np.random.default_rng(3)
    new_tokens = _unit(rng.standard_normal((8, DIM)))
    away = _unit(np.linalg.svd(np.stack([qd, _unit(new_tokens.mean(0))]))[2][-1])
    store.add_encoded(["needle"], away[None, :], [new_tokens], ids=["needle"])
    hits = store.search_encoded(new_tokens.mean(0), new_tokens, k=3, mode="hybrid", candidates=20)
    assert hits[0].id == "needle"
    assert "needle" not in {h.id for h in store.search_encoded(qd, qt, k=10, candidates=20)}


def test_filters_apply_with_the_token_index(make_store: StoreFactory, corpus: Corpus) -> None:
    store = make_store(dim=DIM)
    _fill(store, corpus)

    def filtered_recall() -> float:
        got = []
        for q in range(10):
            qd, qt = corpus.query(q)
            hits = store.search_encoded(
                qd, qt, k=5, mode="hybrid", candidates=20, filter={"shard": 1}
            )
            assert hits and all(h.metadata["shard"] == 1 for h in hits)
            want = corpus.exact(qt, 5, keep=lambda i: i % 3 == 1)
            got.append(len({h.id for h in hits} & set(want)) / 5)
        return float(np.mean(got))

    before = filtered_recall()
    store.build_token_index(centroids=256)
    # The postings prefetch is filtered too: its 20 candidates all match the filter.
    after = filtered_recall()
    assert before < 0.8 and after >= 0.9, (before, after)


def test_token_index_survives_reopen_and_detects_damage(
    make_store: StoreFactory, corpus: Corpus, tmp_path: Path
) -> None:
    store = make_store(dim=DIM)
    _fill(store, corpus, n=1100)
    settings = store.build_token_index(centroids=128)
    qd, qt = corpus.query(1)
    before = [(h.id, h.score) for h in store.search_encoded(qd, qt, k=10, candidates=20)]
    store.close()
    again = make_store(reopen=True)
    assert again.token_index == settings
    after = [(h.id, h.score) for h in again.search_encoded(qd, qt, k=10, candidates=20)]
    assert [i for i, _ in after] == [i for i, _ in before]
    np.testing.assert_allclose([s for _, s in after], [s for _, s in before], atol=1e-5)
    again.close()
    # Damaged centroids: a typed error at open, nothing rewritten.
    if make_store.backend == "edge":  # type: ignore[attr-defined]
        path = tmp_path / "idx" / "token_index.npy"
        np.save(path, np.zeros((128, DIM), np.float32))
        with pytest.raises(StoreCorruptError, match="token index"):
            make_store(reopen=True)
        for damage in (b"\x80\x04K\x01.", b""):  # a pickle (never loaded), an empty file
            path.write_bytes(damage)
            with pytest.raises(StoreCorruptError, match="drop_token_index"):
                make_store(reopen=True)
    else:
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(tmp_path / "qdrant_local"))
        client.delete_collection("docs__token_index")
        client.close()
        with pytest.raises(StoreCorruptError, match="drop_token_index"):
            make_store(reopen=True)
    # The escape hatch: forget the index, search on the dense prefetch, rebuild.
    fixed = make_store(reopen=True, drop_token_index=True)
    assert fixed.token_index is None and len(fixed) == 1100
    assert fixed.search_encoded(qd, qt, k=3, candidates=20)
    assert fixed.build_token_index(centroids=64).centroids == 64
    fixed.close()
    assert make_store(reopen=True).token_index is not None


def test_interrupted_rebuild_falls_back_to_dense(
    make_store: StoreFactory, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(dim=DIM)
    _fill(store, corpus, n=1100)
    store.build_token_index(centroids=128)
    calls = {"n": 0}
    real = store._backend.set_sparse

    def failing(pids: list[Any], sparse: list[Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash while re-assigning postings")
        real(pids, sparse)

    monkeypatch.setattr(store._backend, "set_sparse", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        store.build_token_index(centroids=64)
    assert store.token_index is None  # recorded nowhere: hybrid uses the dense prefetch
    qd, qt = corpus.query(2)
    dense_only = store.search_encoded(qd, qt, k=5, candidates=15)
    cos = corpus.dense[:1100] @ qd
    pool = {corpus.ids[i] for i in np.argsort(-cos)[:15]}
    assert {h.id for h in dense_only} <= pool
    store.close()
    again = make_store(reopen=True)
    assert again.token_index is None
    monkeypatch.undo()
    assert again.build_token_index(centroids=64).centroids == 64
    assert again.token_index is not None


def test_optimize_builds_the_index_once_the_store_is_large(
    make_store: StoreFactory, corpus: Corpus
) -> None:
    store = make_store(dim=DIM)
    _fill(store, corpus, n=MIN_DOCS - 1)
    store.optimize()
    assert store.token_index is None
    _fill(store, corpus, n=MIN_DOCS)
    store.optimize()
    settings = store.token_index
    assert settings is not None
    assert settings.centroids == default_centroids(settings.indexed_tokens)
    store.optimize()  # already built: kept as it is
    assert store.token_index == settings


def test_bad_token_index_calls(make_store: StoreFactory, corpus: Corpus) -> None:
    store = make_store(dim=DIM)
    with pytest.raises(StoreError, match="empty"):
        store.build_token_index()
    _fill(store, corpus, n=50)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="centroids"):
            store.build_token_index(centroids=bad)
    for wrong in (True, 2.5, "64"):
        with pytest.raises(TypeError, match="centroids"):
            store.build_token_index(centroids=wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nprobe"):
        store.build_token_index(nprobe=0)
    with pytest.raises(ValueError, match="sample_tokens"):
        store.build_token_index(sample_tokens=0)
    assert store.token_index is None and len(store) == 50
    with pytest.raises(ValueError, match="sample"):
        CentroidIndex.train(np.zeros((0, DIM), np.float32), 8)
    # numpy integers are ints
    assert store.build_token_index(centroids=np.int64(16), nprobe=np.int64(1)).centroids == 16


def test_older_schema_cannot_build(tmp_path: Path, corpus: Corpus) -> None:
    store = MultiVectorStore(path=tmp_path / "idx", dim=DIM)
    store.close()
    manifest = tmp_path / "idx" / "vllm_retrieval.json"
    raw = json.loads(manifest.read_text())
    raw.pop("sparse_vector")
    manifest.write_text(json.dumps(raw))
    old = MultiVectorStore.open(tmp_path / "idx")
    _fill(old, corpus, n=20)
    with pytest.raises(StoreError, match="re-create"):
        old.build_token_index()
    old.optimize()  # no index, no error
    assert old.token_index is None
    old.close()


def test_client_refuses_to_replace_a_foreign_collection(tmp_path: Path, corpus: Corpus) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "qdrant_local"))
    client.create_collection(
        "docs__token_index", vectors_config=models.VectorParams(size=4, distance="Cosine")
    )
    client.upsert("docs__token_index", points=[models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    client.close()
    store = MultiVectorStore(client_path=tmp_path / "qdrant_local", collection="docs", dim=DIM)
    _fill(store, corpus, n=200)
    with pytest.raises(StoreError, match="not this store's token index"):
        store.build_token_index(centroids=32)
    assert store.token_index is None
    store.close()
    client = QdrantClient(path=str(tmp_path / "qdrant_local"))
    assert client.count("docs__token_index").count == 1  # untouched
    client.close()


def test_fusion_fuses_the_reranked_pool(make_store: StoreFactory, corpus: Corpus) -> None:
    """With a token index, fusion's MaxSim list is hybrid's (pool reranked), not exhaustive."""
    store = make_store(dim=DIM)
    _fill(store, corpus)
    store.build_token_index(centroids=256)
    c, differs = 8, 0
    for q in range(6):
        qd, qt = corpus.query(q)
        dense = [h.id for h in store.search_encoded(qd, qt, k=c, mode="dense", candidates=c)]
        pool = [h.id for h in store.search_encoded(qd, qt, k=c, candidates=c, nprobe=1)]
        differs += pool != corpus.exact(qt, c)
        rrf: dict[Any, float] = {}
        for ranked in (dense, pool):
            for rank, i in enumerate(ranked):
                rrf[i] = rrf.get(i, 0.0) + 1 / (60 + rank)
        fused = store.search_encoded(
            qd,
            qt,
            k=c,
            mode="fusion",
            candidates=c,
            nprobe=1,
            fuse=("dense", "maxsim"),
            fusion="rrf",
        )
        np.testing.assert_allclose(
            [h.score for h in fused], sorted(rrf.values(), reverse=True)[:c], rtol=1e-5
        )
        assert all(rrf[h.id] == pytest.approx(h.score, rel=1e-5) for h in fused)
    assert differs  # the pool's MaxSim list is not the exhaustive one: the check can fail
