"""Durability: a child ingesting documents is SIGKILLed at random moments, over and over.

After every kill the store is reopened in this process: every document whose ``add_encoded``
call had returned (the child prints the ids, flushed, only after the call returns) must be
present, with its text and metadata, and be found by a search for its own vectors.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from vllm_retrieval.store import MultiVectorStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _store_crash_child import DIM, run_ingest_child, vectors  # noqa: E402

# A few cycles here; benchmarks/reliability_store.py runs 20 and prints the figures.
CYCLES = 3


def test_sigkill_during_ingestion_loses_no_acknowledged_document(tmp_path: Path) -> None:
    path = tmp_path / "crash_store"
    MultiVectorStore(path=path, dim=DIM).close()
    rng = random.Random(1234)
    all_acked: list[str] = []
    for cycle in range(CYCLES):
        acked = run_ingest_child(path, cycle, seed=cycle + 1, kill_after=rng.uniform(0.2, 1.5))
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
    assert len(all_acked) >= 100, f"only {len(all_acked)} documents acknowledged in total"
