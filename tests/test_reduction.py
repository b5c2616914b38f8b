"""Token pooling and PCA projection (store/reduction.py), against references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vllm_retrieval import maxsim
from vllm_retrieval.store.reduction import Projection, pool_tokens


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_pool_factor_one_is_the_identity() -> None:
    rng = np.random.default_rng(0)
    docs = [_unit(rng.normal(size=(n, 8))) for n in (1, 5, 9)]
    out = pool_tokens(docs, 1)
    for a, b in zip(docs, out, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pooling_finds_the_clusters_and_keeps_the_protected_row() -> None:
    rng = np.random.default_rng(1)
    centres = _unit(rng.normal(size=(3, 16)))
    cls = _unit(rng.normal(size=(1, 16)))
    # 3 tight groups of 4 near-copies each, shuffled, after the protected [CLS] row.
    rows = np.repeat(centres, 4, axis=0) + 1e-3 * rng.normal(size=(12, 16))
    order = rng.permutation(12)
    doc = np.concatenate([cls, rows[order]]).astype(np.float32)
    before = doc.copy()
    (pooled,) = pool_tokens([doc], 4)  # 12 // 4 = 3 clusters
    np.testing.assert_array_equal(doc, before)  # the input is not modified
    assert pooled.shape == (4, 16)
    np.testing.assert_array_equal(pooled[0], cls[0])
    # Each pooled row is the mean of one group: match them to the group means.
    groups = rows.reshape(3, 4, 16).mean(axis=1)
    dist = np.linalg.norm(pooled[1:, None, :] - groups[None, :, :], axis=-1)
    assert sorted(dist.argmin(axis=1).tolist()) == [0, 1, 2]
    assert dist.min(axis=1).max() < 1e-5


def test_pool_factor_two_halves_the_tokens() -> None:
    rng = np.random.default_rng(2)
    docs = [_unit(rng.normal(size=(n, 8))) for n in (1, 2, 3, 10, 31)]
    out = pool_tokens(docs, 2)
    assert [len(t) for t in out] == [1, 2, 2, 1 + 9 // 2, 1 + 30 // 2]
    assert all(t.dtype == np.float32 for t in out)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_pool_factor(bad: object) -> None:
    with pytest.raises(ValueError, match="pool_factor"):
        pool_tokens([np.ones((3, 4), np.float32)], bad)  # type: ignore[arg-type]


def test_projection_keeps_maxsim_of_vectors_in_its_subspace() -> None:
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(32, 6)))[0].T  # 6 orthonormal rows in 32-d
    docs = [_unit(rng.normal(size=(n, 6)) @ basis) for n in (5, 7, 9)]
    query = _unit(rng.normal(size=(4, 6)) @ basis)
    proj = Projection.fit(np.concatenate(docs), 6)
    assert (proj.dims, proj.source_dim) == (6, 32)
    ref = maxsim(query, docs)
    got = maxsim(proj(query), [proj(d) for d in docs])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert np.allclose(np.linalg.norm(proj(docs[0]), axis=1), 1.0, atol=1e-5)


def test_projection_round_trips_through_its_components() -> None:
    rng = np.random.default_rng(4)
    proj = Projection.fit(rng.normal(size=(500, 16)), 4)
    again = Projection(proj.components.tolist())
    x = rng.normal(size=(3, 16))
    np.testing.assert_array_equal(proj(x), again(x))


def test_projection_errors() -> None:
    x = np.ones((10, 8), np.float32)
    with pytest.raises(ValueError, match="dims"):
        Projection.fit(x, 0)
    with pytest.raises(ValueError, match="dims"):
        Projection.fit(x, 9)
    with pytest.raises(ValueError, match="sample"):
        Projection.fit(np.ones(8), 2)
    with pytest.raises(ValueError, match=r"\[n, 8\]"):
        Projection.fit(x, 2)(np.ones((2, 7)))
    with pytest.raises(ValueError, match="NaN"):
        Projection(np.full((2, 8), np.nan))


# -- pooling in the store: recorded in the manifest, documents only, settings never mixed ------


def _docs(n: int, dim: int, seed: int) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    tokens = [_unit(rng.normal(size=(int(rng.integers(4, 30)), dim))) for _ in range(n)]
    dense = _unit(np.stack([t.mean(0) for t in tokens]))
    return [f"doc {i}" for i in range(n)], dense, tokens


def _maxsim64(q: np.ndarray, d: np.ndarray) -> float:
    q64, d64 = q.astype(np.float64), d.astype(np.float64)
    d64 /= np.linalg.norm(d64, axis=1, keepdims=True)  # the store compares by cosine
    return float((q64 @ d64.T).max(axis=1).sum())


def test_store_pools_documents_not_queries(tmp_path: Path) -> None:
    from vllm_retrieval.store import MultiVectorStore

    texts, dense, tokens = _docs(40, 16, seed=3)
    path = tmp_path / "pooled"
    with MultiVectorStore(path, dim=16, pool_factor=2) as store:
        assert store.pool_factor == 2 and store.describe()["pool_factor"] == 2
        store.add_encoded(texts, dense, tokens, ids=list(range(40)))
    pooled = pool_tokens(tokens, 2)
    rng = np.random.default_rng(9)
    query = _unit(rng.normal(size=(5, 16)))  # 5 query tokens: never pooled
    # Exact MaxSim over the pooled documents (float64) orders the store's results.
    want = sorted(range(40), key=lambda i: -_maxsim64(query, pooled[i]))
    with MultiVectorStore.open(path) as store:  # reopened: the recorded factor
        assert store.pool_factor == 2
        hits = store.search_encoded(query.mean(0), query, k=40, mode="maxsim")
    assert [h.id for h in hits] == want
    np.testing.assert_allclose(
        [h.score for h in hits], [_maxsim64(query, pooled[i]) for i in want], rtol=1e-4
    )
    # Not the unpooled ranking's scores: the documents really were pooled.
    raw = [_maxsim64(query, tokens[i]) for i in want]
    assert not np.allclose([h.score for h in hits], raw, rtol=1e-4)


def test_store_refuses_another_pool_factor(tmp_path: Path) -> None:
    from vllm_retrieval import StoreMismatchError
    from vllm_retrieval.store import MultiVectorStore

    path = tmp_path / "pooled"
    MultiVectorStore(path, dim=8, pool_factor=3).close()
    with pytest.raises(StoreMismatchError, match="pool_factor=3, not 1"):
        MultiVectorStore.open(path, pool_factor=1)
    with MultiVectorStore(path, pool_factor=3) as store:  # the same value is fine
        assert store.pool_factor == 3
    with MultiVectorStore(tmp_path / "plain", dim=8) as store:
        assert store.pool_factor == 1  # default: no pooling
    with pytest.raises(ValueError, match="pool_factor"):
        MultiVectorStore(tmp_path / "bad", dim=8, pool_factor=0)
    assert not (tmp_path / "bad").exists()
