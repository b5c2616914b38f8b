"""Child processes of the store's reliability tests and benchmark, and the parent's side.

``python _store_crash_child.py ingest STORE_DIR CYCLE SEED``: ingest random documents until
killed. After each ``add_encoded`` call returns, the ids it wrote are printed on one line
(``ACK id id ...``) and stdout is flushed; the parent SIGKILLs this process at a random moment
and then checks every acknowledged id (:func:`run_ingest_child`).

``python _store_crash_child.py hold STORE_DIR``: open the store and hold it (``READY``) until
stdin says ``close`` (``CLOSED``) or ``exit`` (:class:`Holder`).

``python _store_crash_child.py append STORE_DIR TAG LOCK_TIMEOUT``: open the store waiting up to
``LOCK_TIMEOUT`` s for other holders, add 10 documents ``TAG-0..9``, close, print
``OK <seconds waited for the lock>`` (:func:`spawn_appender`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from vllm_retrieval.store import MultiVectorStore

DIM = 32
HERE = Path(__file__).resolve().parent


def vectors(seed: int, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Deterministic vectors of a batch (the parent regenerates them to search)."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, DIM)).astype(np.float32)
    tokens = [
        rng.standard_normal((int(rng.integers(8, 24)), DIM)).astype(np.float32) for _ in range(n)
    ]
    return dense, tokens


def ingest(path: str, cycle: int, seed: int) -> None:
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


def hold(path: str) -> None:
    store = MultiVectorStore(path=path, dim=DIM)
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "close":
            store.close()
            print("CLOSED", flush=True)
        elif line.strip() == "exit":
            return


def append(path: str, tag: str, lock_timeout: float) -> None:
    t0 = time.perf_counter()
    with MultiVectorStore(path=path, dim=DIM, lock_timeout=lock_timeout) as store:
        waited = time.perf_counter() - t0
        dense, tokens = vectors(zlib.crc32(tag.encode()), 10)
        ids = [f"{tag}-{j}" for j in range(10)]
        store.add_encoded([f"doc {i}" for i in ids], dense, tokens, ids=ids)
    print(f"OK {waited:.3f}", flush=True)


# -- the parent's side --------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "integrations") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, str(HERE / "_store_crash_child.py"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


class _Lines:
    """Reads a child's stdout in a thread; waits for a line that starts with a word."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, word: str, timeout: float = 120) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(x.startswith(word) for x in self.lines), timeout)

    def join(self) -> None:
        self._thread.join(30)


def run_ingest_child(path: Path, cycle: int, seed: int, kill_after: float) -> list[str]:
    """Run an ingesting child, SIGKILL it ``kill_after`` s after it opened the store; the
    ids of every ``add_encoded`` call that had returned."""
    proc = _spawn("ingest", str(path), str(cycle), str(seed))
    assert proc.stdout is not None and proc.stderr is not None
    out = _Lines(proc.stdout)
    try:
        if not out.wait_for("READY"):
            raise AssertionError(f"child never got ready: {proc.stderr.read()}")
        time.sleep(kill_after)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        out.join()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"child ended by itself ({proc.returncode}): {proc.stderr.read()}")
    acked: list[str] = []
    for line in out.lines:
        # A line cut by the kill has no newline: the add had returned, but count it only if
        # complete (a partial line could carry a truncated id).
        if line.startswith("ACK ") and line.endswith("\n"):
            acked.extend(line.split()[1:])
    return acked


def spawn_appender(path: Path, tag: str, lock_timeout: float) -> subprocess.Popen[str]:
    """Start an ``append`` child (read its ``OK <waited>`` line with ``communicate()``)."""
    return _spawn("append", str(path), tag, str(lock_timeout))


class Holder:
    """Another process holding the embedded store in ``path`` (created if missing)."""

    def __init__(self, path: Path) -> None:
        self.proc = _spawn("hold", str(path))
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._out = _Lines(self.proc.stdout)
        if not self._out.wait_for("READY"):
            self.kill()
            raise AssertionError(f"holder never got ready: {self.proc.stderr.read()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close_store(self) -> None:
        """The holder closes the store (and stays alive)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        if not self._out.wait_for("CLOSED"):
            raise AssertionError("holder did not close the store")

    def kill(self) -> None:
        """SIGKILL the holder (the kernel drops its lock)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


def main() -> None:
    if sys.argv[1] == "ingest":
        ingest(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "hold":
        hold(sys.argv[2])
    elif sys.argv[1] == "append":
        append(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")


if __name__ == "__main__":
    main()
