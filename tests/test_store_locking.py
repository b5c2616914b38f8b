"""Many processes, one store: the embedded store's lock, atomic create and crash-safe files,
readers of a shared collection that follow a rebuilt token index, and the server's API key.

The holder of a store is a real second process (``_store_crash_child.py hold``).
"""

from __future__ import annotations

import math
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from vllm_retrieval import StoreCorruptError, StoreError, StoreLockedError
from vllm_retrieval.store import MultiVectorStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _store_crash_child import DIM, Holder, vectors  # noqa: E402

LOCK_FILES = {"vllm_retrieval.lock", "vllm_retrieval.pid"}


def _add(store: MultiVectorStore, n: int = 50, seed: int = 0, prefix: str = "d") -> list[str]:
    dense, tokens = vectors(seed, n)
    ids = [f"{prefix}{i}" for i in range(n)]
    store.add_encoded([f"text {i}" for i in ids], dense, tokens, ids=ids)
    return ids


# -- the lock -----------------------------------------------------------------------------------


def test_a_store_held_by_another_process_is_locked_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with Holder(path) as holder:
        with pytest.raises(StoreLockedError) as info:
            MultiVectorStore.open(path)
        err = info.value
        assert not isinstance(err, StoreCorruptError)
        assert err.path == str(path) and err.pid == holder.pid
        assert str(path) in str(err) and f"pid {holder.pid}" in str(err)
        assert "lock_timeout" in str(err)
        with pytest.raises(StoreLockedError):  # creating is refused alike
            MultiVectorStore(path=path, dim=DIM)
        holder.close_store()  # released on close: this process may open it now
        with MultiVectorStore.open(path) as store:
            assert store.dim == DIM
            assert (path / "vllm_retrieval.pid").read_text().strip() == str(os.getpid())
        assert not (path / "vllm_retrieval.pid").exists()  # the sidecar goes with the lock


def test_the_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with Holder(path) as holder:
        with pytest.raises(StoreLockedError):
            MultiVectorStore.open(path)
        holder.kill()  # SIGKILL: no close, no cleanup; the kernel drops the lock
        assert holder.proc.returncode == -signal.SIGKILL
        with MultiVectorStore.open(path) as store:  # the stale pid file is no obstacle
            assert len(store) == 0


def test_lock_timeout_waits_for_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with Holder(path) as holder:
        with pytest.raises(StoreLockedError, match="waited"):
            MultiVectorStore.open(path, lock_timeout=0.3)
        opened: list[MultiVectorStore] = []
        errors: list[BaseException] = []

        def opener() -> None:
            try:
                opened.append(MultiVectorStore.open(path, lock_timeout=120))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        t = threading.Thread(target=opener)
        t.start()
        time.sleep(0.5)
        assert t.is_alive() and not opened, "the opener did not wait for the holder"
        holder.close_store()
        t.join(120)
        assert not errors, errors
        assert len(opened) == 1
        with opened[0] as store:
            assert store.backend == "edge"


def test_a_second_store_object_in_this_process_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    first = MultiVectorStore(path=path, dim=DIM)
    with pytest.raises(StoreLockedError) as info:
        MultiVectorStore.open(path)
    assert info.value.pid == os.getpid() and "this process" in str(info.value)
    first.close()
    MultiVectorStore.open(path).close()


@pytest.mark.parametrize("bad", [-1, math.nan, "1", True, None])
def test_bad_lock_timeout(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        MultiVectorStore(path=tmp_path / "idx", dim=DIM, lock_timeout=bad)
    assert not (tmp_path / "idx").exists()


def test_stores_are_context_managers_and_close_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with MultiVectorStore(path=path, dim=DIM) as store:
        _add(store, 5)
        assert not store.closed
    assert store.closed
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        len(store)
    with Holder(path) as holder:  # the context exit released the lock: another process opens
        holder.close_store()

    store = MultiVectorStore.open(path)

    def boom() -> None:
        raise OSError("disk gone")

    store._backend.flush = boom
    with pytest.raises(OSError, match="disk gone"):
        store.close()
    assert store.closed
    store.close()
    MultiVectorStore.open(path).close()  # the lock went even though the flush failed


def test_qdrant_client_folder_in_use_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "qc"
    with MultiVectorStore(client_path=path, collection="docs", dim=DIM):
        with pytest.raises(StoreLockedError) as info:
            MultiVectorStore(client_path=path, collection="docs", dim=DIM)
        assert info.value.path == str(path)
    MultiVectorStore(client_path=path, collection="docs", dim=DIM).close()


# -- atomic create and crash-safe files -----------------------------------------------------------


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_create_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    import qdrant_edge

    real = qdrant_edge.EdgeShard

    class Failing:
        @staticmethod
        def create(where: str, config: Any) -> Any:
            real.create(where, config)  # the shard exists, then the create fails
            raise RuntimeError("no space left on device")

        load = real.load

    monkeypatch.setattr(qdrant_edge, "EdgeShard", Failing)
    path = tmp_path / "a" / "b" / "idx"
    if existing:
        path.mkdir(parents=True)
    with pytest.raises(StoreCorruptError, match="no space left"):
        MultiVectorStore(path=path, dim=DIM)
    if existing:
        assert path.is_dir() and list(path.iterdir()) == []
    else:
        assert not (tmp_path / "a").exists()
    monkeypatch.setattr(qdrant_edge, "EdgeShard", real)
    with MultiVectorStore(path=path, dim=DIM) as store:
        _add(store, 5)
        assert len(store) == 5


_KILL_IN_CREATE = """
import os, signal, sys
import qdrant_edge
from vllm_retrieval.store import MultiVectorStore
real = qdrant_edge.EdgeShard
class KilledAfterCreate:
    load = real.load
    @staticmethod
    def create(where, config):
        real.create(where, config).close()
        os.kill(os.getpid(), signal.SIGKILL)
qdrant_edge.EdgeShard = KilledAfterCreate
MultiVectorStore(path=sys.argv[1], dim=8)
"""


def test_a_create_killed_before_its_commit_point_leaves_no_store(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "integrations") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_IN_CREATE, str(path)], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert (path / "shard").is_dir()  # the kill came after the shard was made
    with pytest.raises(FileNotFoundError):
        MultiVectorStore.open(path)  # never committed: no store, and the leftovers went
    assert list(path.iterdir()) == []
    with MultiVectorStore(path=path, dim=DIM) as store:  # created again from scratch
        assert store.dim == DIM
        _add(store, 3)
    with MultiVectorStore.open(path) as store:
        assert len(store) == 3

    # A shard folder without the creation marker is not a leftover of ours: refused, untouched.
    foreign = tmp_path / "foreign"
    (foreign / "shard").mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreCorruptError, match="not a vllm-retrieval store"):
        MultiVectorStore(path=foreign, dim=DIM)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt", "shard"]


def test_a_failed_rename_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "idx"
    store = MultiVectorStore(path=path, dim=DIM)
    _add(store, 60)
    store.build_token_index(centroids=8)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        store._backend.save_manifest(store.manifest.model_copy(update={"generation": 99}))
    with pytest.raises(OSError, match="rename failed"):
        store._backend.save_centroids(np.ones((4, DIM), dtype=np.float32))
    monkeypatch.setattr(os, "replace", real_replace)
    after = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    assert after == before  # no temporary file, and the old manifest and centroids intact
    store.close()


def test_centroids_and_manifest_sync_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MultiVectorStore(path=tmp_path / "idx", dim=DIM)
    synced: list[bool] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store._backend.save_centroids(np.ones((4, DIM), dtype=np.float32))
    assert synced == [False, True]  # the file, then its directory
    synced.clear()
    store._backend.save_manifest(store.manifest)
    assert synced == [False, True]
    monkeypatch.setattr(os, "fsync", real_fsync)
    store.close()


def test_temporaries_of_a_killed_writer_are_removed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    MultiVectorStore(path=path, dim=DIM).close()
    stale = [path / ".vllm_retrieval.json.k2j3h4.tmp", path / ".token_index.npy.x8y9.tmp"]
    for p in stale:
        p.write_bytes(b"half written")
    (path / "user_notes.tmp").write_text("not ours")
    with MultiVectorStore.open(path):
        assert not any(p.exists() for p in stale)
        assert (path / "user_notes.tmp").exists()


# -- readers of a shared collection follow a rebuilt token index --------------------------------


@pytest.fixture
def one_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every ``QdrantClient`` made by a store talks to the same (in-memory) Qdrant, as
    processes do with a server; yields the keyword arguments each client was made with."""
    import qdrant_client

    server = qdrant_client.QdrantClient(location=":memory:")
    made: list[dict[str, Any]] = []

    class SameServer:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(server, name)

        def close(self) -> None:
            """Closing one client leaves the server up."""

    monkeypatch.setattr(qdrant_client, "QdrantClient", SameServer)
    yield made
    server.close()


def test_readers_follow_a_token_index_rebuilt_by_another_process(
    one_server: list[dict[str, Any]],
) -> None:
    writer = MultiVectorStore(location=":memory:", collection="docs", dim=DIM)
    _add(writer, 80)
    reader = MultiVectorStore(location=":memory:", collection="docs", sync_interval=0)
    lazy = MultiVectorStore(location=":memory:", collection="docs", sync_interval=1e9)
    assert reader.manifest.generation == writer.manifest.generation == 0
    dense, tokens = vectors(0, 80)

    first = writer.build_token_index(centroids=8, seed=1)
    assert writer.manifest.generation >= 1
    assert reader.token_index is None  # not read yet
    hits = reader.search_encoded(dense[3], tokens[3], k=5, mode="hybrid")
    assert reader.token_index == first and reader.manifest.generation == writer.manifest.generation
    assert reader._token_index is not None
    assert np.array_equal(reader._token_index.centroids, writer._token_index.centroids)
    same = writer.search_encoded(dense[3], tokens[3], k=5, mode="hybrid")
    assert [h.id for h in hits] == [h.id for h in same]
    assert [h.score for h in hits] == pytest.approx([h.score for h in same], rel=1e-6)

    gen = writer.manifest.generation
    second = writer.build_token_index(centroids=16, seed=2)  # rebuilt: other centroids
    assert writer.manifest.generation > gen and second != first
    reader.search_encoded(dense[4], tokens[4], k=5, mode="hybrid")
    assert reader.token_index == second
    assert reader._token_index is not None and reader._token_index.k == 16

    # Within sync_interval a search does not re-read the manifest; a write always does.
    lazy.search_encoded(dense[5], tokens[5], k=5, mode="hybrid")
    assert lazy.token_index is None
    _add(lazy, 2, seed=9, prefix="late")
    assert lazy.token_index == second and lazy.manifest.generation == writer.manifest.generation
    for s in (writer, reader, lazy):
        s.close()


def test_drop_token_index_drops_only_the_index_found_on_opening(
    one_server: list[dict[str, Any]],
) -> None:
    writer = MultiVectorStore(location=":memory:", collection="docs", dim=DIM)
    _add(writer, 60)
    writer.build_token_index(centroids=8)
    dropper = MultiVectorStore(location=":memory:", collection="docs", drop_token_index=True)
    assert dropper.token_index is None  # dropped, as asked
    rebuilt = writer.build_token_index(centroids=8, seed=3)
    _add(dropper, 2, seed=7, prefix="new")  # follows the new index; does not drop it again
    dense, tokens = vectors(0, 60)
    dropper.search_encoded(dense[0], tokens[0], k=3, mode="hybrid")
    assert dropper.token_index == rebuilt
    with MultiVectorStore(location=":memory:", collection="docs") as third:
        assert third.token_index == rebuilt
    writer.close()
    dropper.close()


def test_bad_sync_interval(one_server: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="sync_interval"):
        MultiVectorStore(location=":memory:", collection="docs", dim=DIM, sync_interval=-1)


# -- the server's API key ------------------------------------------------------------------------


def test_api_key_from_the_environment_and_as_a_secret(
    one_server: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QDRANT_API_KEY", "env-key-5150")
    with MultiVectorStore(url="https://qdrant.example", collection="docs", dim=DIM) as store:
        assert one_server[-1]["api_key"] == "env-key-5150"
        assert "env-key-5150" not in repr(store) and "env-key-5150" not in str(store.describe())
    secret = SecretStr("given-key-8086")
    MultiVectorStore(url="https://qdrant.example", collection="docs", api_key=secret).close()
    assert one_server[-1]["api_key"] == "given-key-8086"  # given beats the environment
    MultiVectorStore(url="https://qdrant.example", collection="docs", api_key="plain-1").close()
    assert one_server[-1]["api_key"] == "plain-1"
    monkeypatch.delenv("QDRANT_API_KEY")
    MultiVectorStore(url="https://qdrant.example", collection="docs").close()
    assert one_server[-1]["api_key"] is None


def test_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_API_KEY", "sk-env-31337")
    with pytest.raises(Exception) as info:  # nothing listens on port 9
        MultiVectorStore(
            url="https://127.0.0.1:9",
            collection="docs",
            dim=DIM,
            client_kwargs={"timeout": 2, "check_compatibility": False},
        )
    text = "".join(traceback.format_exception(info.value))
    assert "sk-env-31337" not in text
    from vllm_retrieval.store.backends.client import api_key_secret

    secret = api_key_secret(None)  # the environment's key, as a secret
    assert secret is not None and secret.get_secret_value() == "sk-env-31337"
    assert "sk-env-31337" not in f"{secret} {secret!r}"
