"""Child of ``test_store_crash.py``: ingest random documents until killed.

Usage: ``python _store_crash_child.py STORE_DIR CYCLE SEED``. After each ``add_encoded`` call
returns, the ids it wrote are printed on one line (``ACK id id ...``) and stdout is flushed;
the parent SIGKILLs this process at a random moment and then checks every acknowledged id.
"""

from __future__ import annotations

import sys

import numpy as np

from vllm_retrieval.store import MultiVectorStore

DIM = 32


def vectors(seed: int, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Deterministic vectors of a batch (the parent regenerates them to search)."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, DIM)).astype(np.float32)
    tokens = [
        rng.standard_normal((int(rng.integers(8, 24)), DIM)).astype(np.float32) for _ in range(n)
    ]
    return dense, tokens


def main() -> None:
    path, cycle, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = MultiVectorStore(path=path, dim=DIM, batch_size=100)
    print("READY", flush=True)
    batch = 0
    while True:
        n = 100
        dense, tokens = vectors(seed * 100_000 + batch, n)
        ids = [f"c{cycle}-b{batch}-{j}" for j in range(n)]
        metas = [
            {"cycle": cycle, "batch": batch, "seed": seed * 100_000 + batch, "j": j}
            for j in range(n)
        ]
        store.add_encoded([f"doc {i}" for i in ids], dense, tokens, metas, ids)
        sys.stdout.write("ACK " + " ".join(ids) + "\n")
        sys.stdout.flush()
        batch += 1


if __name__ == "__main__":
    main()
