"""Durability: a child ingesting documents is SIGKILLed at random moments, over and over.

After every kill the store is reopened in this process: every document whose ``add_encoded``
call had returned (the child prints the ids, flushed, only after the call returns) must be
present, with its text and metadata, and be found by a search for its own vectors.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from vllm_retrieval.store import MultiVectorStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _store_crash_child import DIM, vectors  # noqa: E402

CYCLES = 10


def _run_child(path: Path, cycle: int, seed: int, kill_after: float) -> list[str]:
    env = dict(os.environ)
    src = str(HERE.parent / "integrations")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_store_crash_child.py"), str(path), str(cycle), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                ready.set()
            lines.append(line)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert ready.wait(60), f"child never got ready: {proc.stderr.read() if proc.stderr else ''}"
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    t.join(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    acked: list[str] = []
    for line in lines:
        # A line cut by the kill has no newline: the add had returned, but count it only if
        # complete (a partial line could carry a truncated id).
        if line.startswith("ACK ") and line.endswith("\n"):
            acked.extend(line.split()[1:])
    return acked


def test_sigkill_during_ingestion_loses_no_acknowledged_document(tmp_path: Path) -> None:
    path = tmp_path / "crash_store"
    MultiVectorStore(path=path, dim=DIM).close()
    rng = random.Random(1234)
    all_acked: list[str] = []
    for cycle in range(CYCLES):
        acked = _run_child(path, cycle, seed=cycle + 1, kill_after=rng.uniform(0.05, 1.5))
        all_acked.extend(acked)
        store = MultiVectorStore.open(path)
        try:
            hits = store.get(all_acked)
            assert len(hits) == len(all_acked), (
                f"cycle {cycle}: {len(all_acked) - len(hits)} acknowledged docs lost"
            )
            assert [h.id for h in hits] == all_acked
            assert all(h.text == f"doc {h.id}" for h in hits)
            assert len(store) >= len(all_acked)
            # Searchable: the newest acknowledged batch and a random sample of older ones
            # come back first when searched with their own vectors.
            sample = acked[-5:] + rng.sample(all_acked, min(10, len(all_acked)))
            by_id = {h.id: h for h in store.get(sample)}
            for doc_id in sample:
                meta = by_id[doc_id].metadata
                dense, tokens = vectors(meta["seed"], 100)
                j = meta["j"]
                top = store.search_encoded(dense[j], tokens[j], k=1, mode="hybrid")
                assert top and top[0].id == doc_id
        finally:
            store.close()
    assert len(all_acked) >= 2000, f"only {len(all_acked)} documents acknowledged in total"
