"""Reliability of the embedded store, measured: SIGKILL during ingestion, and lock contention.

    .venv/bin/python benchmarks/reliability_store.py [--cycles 20] [--seed 1234]
        [--contenders 8] [--out DIR]

**Kill cycles.** A child process ingests batches of 100 random documents (``add_encoded``,
printing each batch's ids only after the call returned) and is SIGKILLed at a random moment
(0.05-1.5 s after it opened the store), ``--cycles`` times on the same store. After every
kill this process reopens the store and checks every acknowledged document (present, with its
text) and searches a sample of them with their own vectors (found first). Prints one line per
cycle, then acknowledged documents, documents lost (must be 0) and reopen successes (must be
all).

**Lock contention.** Another process holds the store: opening fails at once with
``StoreLockedError`` naming the holder's pid (never ``StoreCorruptError``); ``lock_timeout``
waits for the holder to close, or gives up after the timeout; a SIGKILLed holder's lock is
released by the kernel; ``--contenders`` processes open the same store at once with
``lock_timeout`` and each adds 10 documents (all must succeed, one at a time, none lost).

Exit status 1 if any figure is off. ``tests/test_store_crash.py`` and
``tests/test_store_locking.py`` are the short versions.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _store_crash_child import (  # noqa: E402
    DIM,
    Holder,
    run_ingest_child,
    spawn_appender,
    vectors,
)
from vllm_retrieval import StoreCorruptError, StoreLockedError  # noqa: E402
from vllm_retrieval.store import MultiVectorStore  # noqa: E402


def kill_cycles(path: Path, cycles: int, seed: int) -> bool:
    print(f"== SIGKILL during ingestion: {cycles} cycles on one store ({path})")
    MultiVectorStore(path=path, dim=DIM).close()
    rng = random.Random(seed)
    all_acked: list[str] = []
    lost_total = 0
    reopened = 0
    searched = found = 0
    for cycle in range(cycles):
        kill_after = rng.uniform(0.05, 1.5)
        acked = run_ingest_child(path, cycle, seed=cycle + 1, kill_after=kill_after)
        all_acked.extend(acked)
        t0 = time.perf_counter()
        try:
            store = MultiVectorStore.open(path)
        except Exception as exc:
            print(f"cycle {cycle:2d}: REOPEN FAILED: {type(exc).__name__}: {exc}")
            continue
        reopen_ms = (time.perf_counter() - t0) * 1e3
        reopened += 1
        with store:
            hits = store.get(all_acked)
            present = {h.id for h in hits if h.text == f"doc {h.id}"}
            lost = [i for i in all_acked if i not in present]
            lost_total = len(lost)
            sample = acked[-5:] + rng.sample(all_acked, min(10, len(all_acked)))
            by_id = {h.id: h for h in store.get(sample)}
            for doc_id in sample:
                if doc_id not in by_id:
                    continue
                meta = by_id[doc_id].metadata
                dense, tokens = vectors(meta["seed"], 100)
                top = store.search_encoded(dense[meta["j"]], tokens[meta["j"]], k=1, mode="hybrid")
                searched += 1
                found += bool(top and top[0].id == doc_id)
            stored = len(store)
        print(
            f"cycle {cycle:2d}: killed after {kill_after:.2f} s, {len(acked):5d} acknowledged "
            f"this cycle, {len(all_acked):6d} in all, {stored:6d} stored, lost {len(lost)}, "
            f"reopen {reopen_ms:.0f} ms"
        )
    ok = lost_total == 0 and reopened == cycles and found == searched
    print(
        f"acknowledged documents: {len(all_acked)}; acknowledged documents lost: {lost_total}; "
        f"reopen successes: {reopened}/{cycles}; "
        f"found first by their own vectors: {found}/{searched}"
    )
    return ok


def _refusals(path: Path, holder_pid: int, n: int) -> tuple[int, int, list[float]]:
    typed = corrupt = 0
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            MultiVectorStore.open(path).close()
        except StoreLockedError as exc:
            times.append(time.perf_counter() - t0)
            typed += exc.pid == holder_pid and exc.path == str(path)
        except StoreCorruptError:
            corrupt += 1
    return typed, corrupt, times


def contention(path: Path, contenders: int) -> bool:
    print(f"\n== Lock contention ({path})")
    ok = True
    with Holder(path) as holder:
        typed, corrupt, times = _refusals(path, holder.pid, 20)
        print(
            f"held by pid {holder.pid}: 20 opens with lock_timeout=0 -> {typed}/20 "
            f"StoreLockedError naming the holder's pid and the directory, {corrupt} "
            f"StoreCorruptError; median refusal {statistics.median(times) * 1e3:.1f} ms"
        )
        ok &= typed == 20 and corrupt == 0

        t0 = time.perf_counter()
        try:
            MultiVectorStore.open(path, lock_timeout=0.5).close()
            print("lock_timeout=0.5 while held: OPENED (wrong)")
            ok = False
        except StoreLockedError:
            print(
                "lock_timeout=0.5 while held: StoreLockedError after "
                f"{time.perf_counter() - t0:.2f} s"
            )

        timer = threading.Timer(1.0, holder.close_store)
        t0 = time.perf_counter()
        timer.start()
        try:
            with MultiVectorStore.open(path, lock_timeout=60):
                waited = time.perf_counter() - t0
            print(f"lock_timeout=60, holder closes after 1.0 s: opened after {waited:.2f} s")
        except StoreLockedError as exc:
            print(f"lock_timeout=60, holder closes after 1.0 s: FAILED {exc}")
            ok = False
        timer.join()

    with Holder(path) as holder:
        holder.kill()
        t0 = time.perf_counter()
        try:
            with MultiVectorStore.open(path):
                print(
                    "holder SIGKILLed: reopened at once "
                    f"({(time.perf_counter() - t0) * 1e3:.0f} ms)"
                )
        except StoreLockedError as exc:
            print(f"holder SIGKILLed: STILL LOCKED {exc}")
            ok = False

    with MultiVectorStore.open(path) as store:
        before = len(store)
    procs = [spawn_appender(path, f"p{i}", 120.0) for i in range(contenders)]
    waits: list[float] = []
    failed = 0
    for p in procs:
        out, err = p.communicate(timeout=300)
        line = next((x for x in out.splitlines() if x.startswith("OK ")), None)
        if p.returncode != 0 or line is None:
            failed += 1
            print(f"contender failed ({p.returncode}): {err.strip().splitlines()[-1:]}")
        else:
            waits.append(float(line.split()[1]))
    with MultiVectorStore.open(path) as store:
        added = len(store) - before
        missing = [f"p{i}-{j}" for i in range(contenders) for j in range(10)]
        missing = [m for m in missing if not store.get([m])]
    print(
        f"{contenders} processes open at once with lock_timeout=120 and add 10 docs each: "
        f"{contenders - failed}/{contenders} succeeded, {added}/{10 * contenders} documents "
        f"added, {len(missing)} missing; waits for the lock "
        f"{', '.join(f'{w:.2f}' for w in sorted(waits))} s"
    )
    ok &= failed == 0 and added == 10 * contenders and not missing
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--contenders", type=int, default=8)
    ap.add_argument(
        "--out", type=Path, default=None, help="folder for the stores (default: a temp dir)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        ok = kill_cycles(Path(tmp) / "crash", args.cycles, args.seed)
        ok &= contention(Path(tmp) / "contended", args.contenders)
    print("\nRESULT:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
