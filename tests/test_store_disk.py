"""Disk footprint of the embedded store (Qdrant Edge): no lingering copies of the token
vectors after index builds, a bounded WAL, and nothing lost to the compaction on reopen.

The figures themselves are a benchmark (``benchmarks/disk.py``); these bounds are generous.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_retrieval import Encoder
from vllm_retrieval.errors import StoreError
from vllm_retrieval.store import MultiVectorStore, files
from vllm_retrieval.store.backends import edge

MIB = 1 << 20
MODES = ["maxsim", "hybrid", "dense", "fusion"]


def _allocated(p: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in p.rglob("*") if f.is_file())


def _footprint(path: Path) -> dict[str, int]:
    """Allocated bytes: the shard's segments, its WAL, and the whole store."""
    (shard,) = (d for d in path.iterdir() if d.is_dir() and d.name.startswith("shard"))
    wal = _allocated(shard / "wal")
    return {"segments": _allocated(shard) - wal, "wal": wal, "total": _allocated(path)}


def _check(path: Path, raw: int, when: str) -> None:
    fp = _footprint(path)
    # One copy of the token vectors (plus dense vectors, HNSW, payload, sparse vectors and
    # the last, partly filled chunk of each storage); before the fix, an index build left
    # every replaced segment on disk: 4x and more.
    assert fp["segments"] <= 1.25 * raw + 64 * MIB, (when, fp, raw)
    assert fp["wal"] <= 128 * MIB, (when, fp)  # bounded whatever was written
    assert fp["total"] <= 2.5 * raw, (when, fp, raw)


def _results(store: MultiVectorStore, queries: list[str], qd: Any, qt: Any) -> list[Any]:
    return [
        [
            (h.id, h.score)
            for h in store.search_encoded(qd[i], qt[i], k=10, mode=mode, text=queries[i])
        ]
        for mode in MODES
        for i in range(len(queries))
    ]


def test_index_builds_leave_one_copy_and_reopen_keeps_results(
    encoder: Encoder, scifact_sample: dict[str, Any], tmp_path: Path
) -> None:
    corpus: dict[str, str] = scifact_sample["corpus"]  # type: ignore[assignment]
    texts, ids = list(corpus.values()), list(corpus)
    dense, tokens = encoder.encode_documents(texts)
    raw = sum(t.shape[0] for t in tokens) * encoder.dimension * 4
    assert raw > 40 * MIB  # large enough for the ratios to mean something
    queries = list(scifact_sample["queries"].values())[:8]  # type: ignore[attr-defined]
    qd, qt = encoder.encode_queries(queries)

    path = tmp_path / "s"
    store = MultiVectorStore(path, encoder=encoder, batch_size=64)
    store.add_encoded(texts, dense, tokens, ids=ids)
    _check(path, raw, "after add")
    store.optimize()  # BM25 for every document, then the optimisers
    _check(path, raw, "after optimize")
    # On the optimised store every point is copied whole to change its postings: the
    # optimisation after the build compacts the copies away.
    store.build_token_index(centroids=64)
    _check(path, raw, "after build_token_index")
    store.build_bm25()
    _check(path, raw, "after build_bm25")
    before = _results(store, queries, qd, qt)
    store.close()
    _check(path, raw, "after close")

    again = MultiVectorStore.open(path, encoder=encoder)
    try:
        assert len(again) == len(ids)
        after = _results(again, queries, qd, qt)
        for b, a in zip(before, after, strict=True):
            assert [i for i, _ in a] == [i for i, _ in b]
            np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-6)
        np.testing.assert_allclose(again.get_tokens(ids[:3]), tokens[:3], atol=1e-5)
        _check(path, raw, "after reopen")
    finally:
        again.close()


class _Counting:
    """Stands in for the Edge shard: counts the points of each write and the flushes."""

    def __init__(self, shard: Any) -> None:
        self.shard = shard
        self.flushes = 0
        self.converted = 0  # points converted for Edge so far
        self.writes: list[int] = []  # ``converted`` at each write

    def update(self, op: Any) -> None:
        self.writes.append(self.converted)
        self.shard.update(op)

    def flush(self) -> None:
        self.flushes += 1
        self.shard.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.shard, name)


def test_writes_are_split_and_flushed_as_they_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each WAL entry holds at most about ``OP_VALUES`` floats (a larger document is an entry
    of its own), and a flush truncates the WAL once ``FLUSH_BYTES`` went into it."""
    dim = 8
    monkeypatch.setattr(edge, "OP_VALUES", 10 * dim)  # ten vectors, dense ones included
    monkeypatch.setattr(edge, "FLUSH_BYTES", 40 * dim * 4)  # forty vectors
    # vectors per document (tokens + 1 dense): 5 5 | 20 | 2 2 2 2 2 | 2 2 4
    lens = [4, 4, 19, 1, 1, 1, 1, 1, 1, 1, 3]
    rng = np.random.default_rng(0)
    tokens = [rng.standard_normal((n, dim)).astype(np.float32) for n in lens]
    dense = rng.standard_normal((len(lens), dim)).astype(np.float32)
    ids = list(range(len(lens)))
    with MultiVectorStore(tmp_path / "s", dim=dim) as store:
        backend = store._backend
        assert isinstance(backend, edge.EdgeBackend)
        counting = _Counting(backend.shard)
        backend.shard = counting
        real = edge.EdgeBackend._vectors

        def spy(self: Any, p: Any) -> Any:
            counting.converted += 1
            return real(self, p)

        monkeypatch.setattr(edge.EdgeBackend, "_vectors", spy)
        store.add_encoded([f"t{i}" for i in ids], dense, tokens, ids=ids)
        assert np.diff([0, *counting.writes]).tolist() == [2, 1, 5, 3]
        assert counting.flushes == 1  # 40 vectors after the third entry
        assert len(store) == len(ids)
        assert store.search_encoded(dense[2], tokens[2], k=1, mode="maxsim")[0].id == 2


class _NoRoom:
    """The shard, except that its optimiser refuses as Edge does when the disk lacks room."""

    def __init__(self, shard: Any) -> None:
        self.shard = shard

    def optimize(self) -> None:
        raise Exception(  # Edge's own type and wording
            "Service runtime error: Not enough space available for optimization, "
            "needed: 29.34 GiB, available: 23.40 GiB"
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.shard, name)


def test_an_optimisation_edge_refuses_is_a_store_error_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """Edge checks free disk space before it rewrites segments and raises a bare Exception:
    the store turns that into a ``StoreError`` naming the cause and the remedy, and the store
    stays as it was (same documents, same results; a later optimisation succeeds)."""
    dim, n = 16, 40
    rng = np.random.default_rng(3)
    tokens = [
        rng.standard_normal((int(rng.integers(3, 9)), dim)).astype(np.float32) for _ in range(n)
    ]
    dense = rng.standard_normal((n, dim)).astype(np.float32)
    path = tmp_path / "s"
    with MultiVectorStore(path, dim=dim) as store:
        store.add_encoded([f"doc {i}" for i in range(n)], dense, tokens, ids=list(range(n)))
        before = [
            [(h.id, h.score) for h in store.search_encoded(dense[i], tokens[i], k=5, mode="maxsim")]
            for i in range(0, n, 7)
        ]
        backend = store._backend
        assert isinstance(backend, edge.EdgeBackend)
        real = backend.shard
        backend.shard = _NoRoom(real)
        with pytest.raises(
            StoreError,
            match=r"Not enough space.*intact and searchable.*free some and run store\.optimize",
        ):
            store.optimize()
        assert len(store) == n
        after = [
            [(h.id, h.score) for h in store.search_encoded(dense[i], tokens[i], k=5, mode="maxsim")]
            for i in range(0, n, 7)
        ]
        assert after == before
        backend.shard = real
        store.optimize()  # room again: it runs
    with MultiVectorStore.open(path) as store:
        assert len(store) == n
        assert [h.text for h in store.get([0, n - 1])] == ["doc 0", f"doc {n - 1}"]


def test_a_write_without_disk_room_is_a_store_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk Edge's memory-mapped files cannot grow and the process dies of SIGBUS
    (seen on a full tmpfs, on reopening too): writes check the free space first. Here the
    reserve is set above what the disk has: the write is refused with a ``StoreError``, the
    store keeps what it had (and a dimension-reduction copy leaves the old shard in use);
    with room again the same write succeeds."""
    dim, n = 16, 30
    rng = np.random.default_rng(5)
    lens = rng.integers(3, 9, size=2 * n)
    tokens = [rng.standard_normal((int(t), dim)).astype(np.float32) for t in lens]
    dense = rng.standard_normal((2 * n, dim)).astype(np.float32)
    texts = [f"doc {i}" for i in range(2 * n)]
    path = tmp_path / "s"
    with MultiVectorStore(path, dim=dim, reduce_to=4) as store:
        store.add_encoded(texts[:n], dense[:n], tokens[:n], ids=list(range(n)))
        before = store.search_encoded(dense[0], tokens[0], k=5, mode="maxsim")
        free = shutil.disk_usage(path).free
        monkeypatch.setattr(files, "RESERVE_BYTES", free + (1 << 30))
        with pytest.raises(StoreError, match=r"not enough free disk space .* MiB free"):
            store.add_encoded(texts[n:], dense[n:], tokens[n:], ids=list(range(n, 2 * n)))
        with pytest.raises(StoreError, match="not enough free disk space"):
            store.reduce_dimensions()
        assert len(store) == n
        assert store.manifest.reduction is not None and not store.manifest.reduction.fitted
        assert store.search_encoded(dense[0], tokens[0], k=5, mode="maxsim") == before
        monkeypatch.setattr(files, "RESERVE_BYTES", 0)
        store.add_encoded(texts[n:], dense[n:], tokens[n:], ids=list(range(n, 2 * n)))
        assert len(store) == 2 * n
    with MultiVectorStore.open(path) as store:
        assert [h.text for h in store.get([0, 2 * n - 1])] == ["doc 0", f"doc {2 * n - 1}"]
