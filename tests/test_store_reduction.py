"""Dimension reduction inside the store (``reduce_to``): PCA fitted at optimize() on the
stored vectors, documents and queries projected, recorded, reopened, never mixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_retrieval import StoreCorruptError, StoreError, StoreMismatchError
from vllm_retrieval.store import MultiVectorStore
from vllm_retrieval.store.reduction import Projection

DIM, DIMS = 48, 12


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


BASIS = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, DIMS)))[0].T


def _query(seed: int) -> np.ndarray:
    """Four query tokens in the documents' subspace."""
    return _unit(np.random.default_rng(seed).normal(size=(4, DIMS)) @ BASIS)


def _docs(n: int, seed: int, start: int = 0) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """Token vectors near a DIMS-dimensional subspace (what PCA should find), plus noise."""
    rng = np.random.default_rng(seed)
    basis = BASIS
    tokens = []
    for _ in range(n):
        t = int(rng.integers(3, 12))
        tokens.append(_unit(rng.normal(size=(t, DIMS)) @ basis + 0.05 * rng.normal(size=(t, DIM))))
    dense = _unit(np.stack([t.mean(0) for t in tokens]))
    return [f"doc {i}" for i in range(start, start + n)], dense, tokens


def _maxsim64(q: np.ndarray, d: np.ndarray) -> float:
    q64, d64 = q.astype(np.float64), d.astype(np.float64)
    d64 /= np.linalg.norm(d64, axis=1, keepdims=True)
    return float((q64 @ d64.T).max(axis=1).sum())


def _components(path: Path) -> tuple[Projection, Projection]:
    with np.load(path / "projection.npz") as npz:
        return Projection(npz["tokens"]), Projection(npz["dense"])


def test_reduce_round_trip_reopen_and_query_side(tmp_path: Path) -> None:
    path = tmp_path / "reduced"
    texts, dense, tokens = _docs(60, seed=1)
    before = [t.copy() for t in tokens]
    q = _query(7)
    with MultiVectorStore(path, dim=DIM, reduce_to=DIMS) as store:
        store.add_encoded(texts, dense, tokens, ids=list(range(60)))
        # Not fitted yet: full-width vectors, full-width scores.
        assert store.get_tokens([0])[0].shape[1] == DIM
        assert store.describe()["reduction"]["sha256"] is None
        store.optimize()  # below 1,000 documents optimize() does not fit it
        assert store.manifest.reduction is not None and store.manifest.reduction.sha256 is None
        settings = store.reduce_dimensions()
        assert settings.dims == DIMS and settings.sha256 is not None
        assert settings.fitted_docs == 60
        assert settings.fitted_tokens == sum(t.shape[0] for t in tokens)
        assert store.reduce_dimensions() == settings  # fitted once: never refits
        assert store.dim == DIM and store.manifest.stored_dim == DIMS
        ptok, pdense = _components(path)
        want = [ptok(t) for t in tokens]
        for got, w in zip(store.get_tokens(list(range(60))), want, strict=True):
            assert got.shape == w.shape
            np.testing.assert_allclose(got, w, atol=1e-5)
        # PCA found the subspace the vectors live near: dot products survive.
        for i in range(5):
            assert abs(_maxsim64(ptok(q), want[i]) - _maxsim64(q, tokens[i])) < 0.15
        hits = store.search_encoded(q.mean(0), q, k=60, mode="maxsim")
        ref = sorted(range(60), key=lambda i: -_maxsim64(ptok(q), want[i]))
        assert [h.id for h in hits] == ref  # the query was projected as the documents were
        np.testing.assert_allclose(
            [h.score for h in hits], [_maxsim64(ptok(q), want[i]) for i in ref], rtol=1e-4
        )
        dense_hits = store.search_encoded(dense[5], None, k=1, mode="dense")
        assert dense_hits[0].id == 5
        np.testing.assert_allclose(
            store.project_query(dense[5], "dense"), pdense(dense[5][None])[0], atol=1e-6
        )
    for t, b in zip(tokens, before, strict=True):
        np.testing.assert_array_equal(t, b)  # the caller's arrays are never modified
    # Reopened without saying: the recorded projections; new documents are projected too.
    t2, d2, k2 = _docs(5, seed=2, start=60)
    with MultiVectorStore.open(path) as store:
        assert store.manifest.reduction == settings
        store.add_encoded(t2, d2, k2, ids=list(range(60, 65)))
        np.testing.assert_allclose(store.get_tokens([62])[0], ptok(k2[2]), atol=1e-5)
        again = store.search_encoded(q.mean(0), q, k=65, mode="maxsim")
        assert [h.id for h in again if h.id < 60] == ref
        with pytest.raises(StoreMismatchError, match="query tokens must be"):
            store.search_encoded(None, ptok(q), k=3, mode="maxsim")  # give full-width queries
    with MultiVectorStore(path, reduce_to=DIMS) as store:  # the same value is fine
        assert len(store) == 65


def test_refuses_to_mix_settings(tmp_path: Path) -> None:
    path = tmp_path / "r"
    MultiVectorStore(path, dim=DIM, reduce_to=DIMS).close()
    with pytest.raises(StoreMismatchError, match="reduced to 12 dims, not reduce_to=8"):
        MultiVectorStore.open(path, reduce_to=8)
    MultiVectorStore(tmp_path / "plain", dim=DIM).close()
    with pytest.raises(StoreMismatchError, match="full-width vectors, not reduce_to=12"):
        MultiVectorStore.open(tmp_path / "plain", reduce_to=DIMS)
    with (
        MultiVectorStore.open(tmp_path / "plain") as store,
        pytest.raises(StoreError, match="without reduce_to"),
    ):
        store.reduce_dimensions()
    for bad in (0, -3, True, 2.0, "12"):
        with pytest.raises(ValueError, match="reduce_to must be an int"):
            MultiVectorStore(tmp_path / "bad", dim=DIM, reduce_to=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="below the vectors' width 48"):
        MultiVectorStore(tmp_path / "bad", dim=DIM, reduce_to=DIM)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(StoreError, match="needs the embedded store"):
        MultiVectorStore(location=":memory:", dim=DIM, reduce_to=DIMS)
    texts, dense, tokens = _docs(DIMS - 1, seed=3)
    with MultiVectorStore(tmp_path / "few", dim=DIM, reduce_to=DIMS) as store:
        store.add_encoded(texts, dense, tokens)
        with pytest.raises(StoreError, match="at least 12 stored documents"):
            store.reduce_dimensions()
        assert store.manifest.stored_dim == DIM  # still full width, still usable
        assert len(store.search_encoded(dense[0], tokens[0], k=3, mode="maxsim")) == 3


def test_damaged_projections_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "r"
    texts, dense, tokens = _docs(30, seed=4)
    with MultiVectorStore(path, dim=DIM, reduce_to=DIMS) as store:
        store.add_encoded(texts, dense, tokens)
        store.reduce_dimensions()
    ptok, pdense = _components(path)
    np.savez(path / "projection.npz", tokens=ptok.components * 2, dense=pdense.components)
    with pytest.raises(StoreCorruptError, match=r"projections .* do not match the manifest"):
        MultiVectorStore.open(path)
    (path / "projection.npz").write_bytes(b"not numpy")
    with pytest.raises(StoreCorruptError, match="unreadable"):
        MultiVectorStore.open(path)


def test_a_failed_rewrite_leaves_the_full_width_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm_retrieval.store import dimensions

    path = tmp_path / "r"
    texts, dense, tokens = _docs(300, seed=5)  # several pages of the copy
    q = _query(8)
    calls = {"n": 0}

    class Boom(Projection):
        def __call__(self, vectors: Any) -> Any:
            calls["n"] += 1
            if calls["n"] > 2:  # the third page of the copy
                raise RuntimeError("killed mid-copy")
            return super().__call__(vectors)

    def fit(*args: Any, **kwargs: Any) -> Any:
        proj, n_tok, n_docs = real_fit(*args, **kwargs)
        return dimensions.Projections(Boom(proj.tokens.components), proj.dense), n_tok, n_docs

    real_fit = dimensions.fit_projections
    monkeypatch.setattr(dimensions, "fit_projections", fit)
    with MultiVectorStore(path, dim=DIM, reduce_to=DIMS) as store:
        store.add_encoded(texts, dense, tokens, ids=list(range(300)))
        want = [h.id for h in store.search_encoded(q.mean(0), q, k=10, mode="maxsim")]
        with pytest.raises(RuntimeError, match="killed mid-copy"):
            store.reduce_dimensions()
        assert store.manifest.stored_dim == DIM
        assert [h.id for h in store.search_encoded(q.mean(0), q, k=10, mode="maxsim")] == want
    assert sorted(p.name for p in path.iterdir() if p.name.startswith("shard")) == ["shard"]
    monkeypatch.undo()
    with MultiVectorStore.open(path) as store:  # and the fit can run again
        assert store.reduce_dimensions().sha256 is not None
        assert store.get_tokens([0])[0].shape[1] == DIMS


def test_optimize_fits_then_builds_the_token_index_on_reduced_vectors(tmp_path: Path) -> None:
    texts, dense, tokens = _docs(1000, seed=6)
    q = _query(9)
    with MultiVectorStore(tmp_path / "r", dim=DIM, reduce_to=DIMS) as store:
        store.add_encoded(texts, dense, tokens, ids=list(range(1000)))
        store.build_token_index(64)  # full-width centroids first
        store.optimize()  # 1,000 documents: fits, and trains the token index again
        assert store.manifest.stored_dim == DIMS
        index = store.manifest.token_index
        assert index is not None and store._token_index is not None
        assert store._token_index.centroids.shape[1] == DIMS
        exact = [h.id for h in store.search_encoded(q.mean(0), q, k=5, mode="maxsim")]
        hybrid = [h.id for h in store.search_encoded(q.mean(0), q, k=5, mode="hybrid")]
        assert len(set(exact) & set(hybrid)) >= 4
    with MultiVectorStore.open(tmp_path / "r") as store:  # index and projections reload
        assert store._token_index is not None and store._projections is not None


def test_real_encoder_reduced_store_searches_and_reranks(encoder: Any, tmp_path: Path) -> None:
    """The packaged model end to end: texts in, reduced at 64 dims, queries projected; the
    reranker does not reuse reduced vectors (it encodes), so its scores stay the encoder's."""
    from langchain_core.documents import Document

    from vllm_retrieval import maxsim
    from vllm_retrieval.langchain import VLLMMaxSimReranker

    topics = ["the heart pumps blood", "rivers flow to the sea", "stars burn hydrogen"]
    texts = [f"{topics[i % 3]} ({i}): note number {i} on this subject" for i in range(90)]
    with MultiVectorStore(tmp_path / "r", encoder=encoder, reduce_to=64) as store:
        ids = store.add_texts(texts)
        store.reduce_dimensions()
        assert store.get_tokens([ids[0]])[0].shape[1] == 64
        query = "how does blood move through the body?"
        hits = store.search(query, k=5, mode="maxsim")
        _, q_tok = encoder.encode_queries([query])
        pq = store.project_query(q_tok[0])
        ref = np.asarray(maxsim(pq, store.get_tokens(ids)), dtype=np.float64)
        want = [ids[i] for i in np.argsort(-ref, kind="stable")[:5]]
        assert [h.id for h in hits] == want
        np.testing.assert_allclose([h.score for h in hits], np.sort(ref)[::-1][:5], rtol=1e-3)
        assert all("heart" in h.text for h in hits)
        docs = [Document(page_content=texts[i], id=str(ids[i])) for i in (0, 1, 2)]
        with VLLMMaxSimReranker(encoder=encoder, top_n=3, store=store) as reranker:
            reused = reranker.compress_documents(docs, query)
        with VLLMMaxSimReranker(encoder=encoder, top_n=3) as plain:
            encoded = plain.compress_documents(docs, query)
        assert [d.page_content for d in reused] == [d.page_content for d in encoded]
        np.testing.assert_allclose(
            [d.metadata["relevance_score"] for d in reused],
            [d.metadata["relevance_score"] for d in encoded],
            rtol=1e-5,
        )


def test_matryoshka_dims_reads_the_config(tmp_path: Path) -> None:
    import json

    from vllm_retrieval.encoding import matryoshka_dims

    cases = [
        ({"matryoshka_dimensions": [768, 256, 64]}, (768, 256, 64)),
        ({"is_matryoshka": True}, ()),
        ({"matryoshka_dimensions": ["64"]}, None),  # malformed: not declared
        ({"hidden_size": 384}, None),
    ]
    for i, (config, want) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "config.json").write_text(json.dumps(config))
        assert matryoshka_dims(str(tmp_path / str(i))) == want
    assert matryoshka_dims(str(tmp_path / "missing")) is None  # e.g. a remote model name


def test_matryoshka_truncation_for_a_model_that_declares_it(
    encoder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model declaring 64 (the packaged one does not: the declaration is patched in; the
    truncation itself runs on its real vectors): first 64 coordinates, re-normalised, from
    the first write on, queries alike, on a server too; no PCA, nothing fitted."""
    from vllm_retrieval import encoding

    monkeypatch.setattr(encoding, "matryoshka_dims", lambda path: (128, 64))
    texts = ["the heart pumps blood", "rivers flow to the sea", "stars burn hydrogen"]
    _, full = encoder.encode_documents(texts)
    first = [_unit(t[:, :64]) for t in full]
    for where in ({"path": tmp_path / "m"}, {"location": ":memory:"}):
        with MultiVectorStore(**where, encoder=encoder, reduce_to=64) as store:  # type: ignore[arg-type]
            r = store.reduction
            assert r is not None and r.method == "matryoshka" and r.fitted
            ids = store.add_texts(texts)
            for got, want in zip(store.get_tokens(ids), first, strict=True):
                np.testing.assert_allclose(got, want, atol=1e-5)
            assert store.reduce_dimensions() == r  # nothing to fit
            hits = store.search("what moves blood?", k=3, mode="maxsim")
            _, q = encoder.encode_queries(["what moves blood?"])
            ref = [_maxsim64(_unit(q[0][:, :64]), f) for f in first]
            assert [h.id for h in hits] == [ids[i] for i in np.argsort(ref)[::-1]]
            np.testing.assert_allclose([h.score for h in hits], sorted(ref)[::-1], rtol=1e-4)
    with MultiVectorStore.open(tmp_path / "m") as store:  # reopened: the recorded method
        assert store.manifest.reduction == r
    monkeypatch.setattr(encoding, "matryoshka_dims", lambda path: (128,))  # 64 not declared
    with pytest.raises(StoreError, match="embedded store"):
        MultiVectorStore(location=":memory:", encoder=encoder, reduce_to=64)
