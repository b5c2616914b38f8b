"""Disk footprint of the embedded store (Qdrant Edge): bytes per stored token, by component.

    .venv/bin/python benchmarks/disk.py [--docs 1000] [--compression none fp16]
        [--batch-size 256] [--queries 20] [--cache PATH] [--reencode]

Builds a store from ``--docs`` SciFact abstracts (title + text; the sample corpus without
../shared) as ``vllm-retrieval eval`` does: ``add_encoded`` in batches of ``--batch-size``, then
``store.optimize()`` (the token index from 1,000 documents on, BM25), ``build_token_index()``
once more on the optimised store (``reindex``: new postings for every document; skip with
``--no-reindex``), then ``close()`` and a reopen. The vectors come from the packaged
all-MiniLM-L6-v2 (``Encoder()``), encoded once and cached in ``--cache`` (npz; ``--reencode``
refreshes it), so that repeated runs cost no encoding. After each step it prints the bytes on
disk (allocated blocks, not apparent sizes) of:

* ``tokens``: the token multivector storage in every segment (``vector_storage-colbert``);
* ``other seg``: everything else in the segments (dense vectors and HNSW, sparse vectors,
  payload, id tracker);
* ``wal``: Qdrant Edge's write-ahead log;
* ``sidecars``: our files beside the shard (manifest, token-index centroids, lock);

with ``B/token`` (total bytes per stored token vector) and ``x raw``, the ratio of the total to
the raw float32 token vectors (``tokens x dim x 4``); ``peak x`` the largest ratio seen during
the step (sampled every 0.2 s). ``segs`` counts the segment folders.

Then ``--queries`` SciFact claims are searched with exhaustive MaxSim (``mode="maxsim"``): the
top-10 must be the same after the reopen, and for each further ``--compression`` the largest
score difference to the first one is printed (e.g. fp16 storage against float32).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from startup import SCIFACT, load_docs  # SciFact abstracts (title + text), or the sample corpus

Vectors = tuple[np.ndarray, list[np.ndarray], np.ndarray, list[np.ndarray]]


def load_queries(n: int) -> list[str]:
    path = SCIFACT / "queries.jsonl"
    if not path.is_file():
        return ["How does late interaction score a document?"][:n]
    out: list[str] = []
    with path.open() as fh:
        for line in fh:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def _pack(toks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.array([t.shape[0] for t in toks], dtype=np.int64)
    return np.concatenate(toks).astype(np.float32), np.concatenate([[0], np.cumsum(lens)])


def _unpack(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def encoded(texts: list[str], queries: list[str], cache: Path, reencode: bool) -> Vectors:
    """Documents' and queries' ``(dense, tokens)``, from ``cache`` when it matches."""
    digest = hashlib.sha256("\0".join([*texts, "|", *queries]).encode()).hexdigest()[:16]
    key = f"{len(texts)}:{len(queries)}:{digest}"
    if cache.is_file() and not reencode:
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            print(f"vectors from {cache}")
            return (
                z["d_dense"],
                _unpack(z["d_tok"], z["d_off"]),
                z["q_dense"],
                _unpack(z["q_tok"], z["q_off"]),
            )
    from vllm_retrieval import Encoder

    t0 = time.perf_counter()
    with Encoder() as enc:
        print(f"encoding {len(texts)} documents (dtype {enc.engine_settings.dtype})", flush=True)
        d_dense, d_tok = enc.encode_documents(texts)
        q_dense, q_tok = enc.encode_queries(queries)
    print(f"encoded in {time.perf_counter() - t0:.0f} s; cached in {cache}")
    dt, do = _pack(d_tok)
    qt, qo = _pack(q_tok)
    with cache.open("wb") as fh:
        np.savez(
            fh, key=key, d_dense=d_dense, d_tok=dt, d_off=do, q_dense=q_dense, q_tok=qt, q_off=qo
        )
    return d_dense, list(d_tok), q_dense, list(q_tok)


def _blocks(p: Path) -> int:
    if p.is_file():
        return p.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in p.rglob("*") if f.is_file())


def footprint(path: Path) -> dict[str, int]:
    """Allocated bytes of the store in ``path`` by component."""
    out = {"tokens": 0, "other seg": 0, "wal": 0, "sidecars": 0, "segs": 0}
    for entry in path.iterdir():
        if not (entry.is_dir() and entry.name.startswith("shard")):
            out["sidecars"] += _blocks(entry)
            continue
        for part in entry.iterdir():
            if part.name == "wal":
                out["wal"] += _blocks(part)
            elif part.name.endswith("segments") and part.is_dir():
                for seg in part.iterdir():
                    out["segs"] += seg.is_dir()
                    tok = sum(_blocks(v) for v in seg.glob("vector_storage-colbert*"))
                    out["tokens"] += tok
                    out["other seg"] += _blocks(seg) - tok
            else:
                out["other seg"] += _blocks(part)
    return out


def total(fp: dict[str, int]) -> int:
    return fp["tokens"] + fp["other seg"] + fp["wal"] + fp["sidecars"]


def row(label: str, fp: dict[str, int], n_tokens: int, raw: int, seconds: float, peak: int) -> str:
    size = total(fp)
    mb = [f"{fp[k] / 2**20:9.1f}" for k in ("tokens", "other seg", "wal", "sidecars")]
    return (
        f"{label:<9} {fp['segs']:>4} {' '.join(mb)} {size / 2**20:9.1f} "
        f"{size / n_tokens:8.0f} {size / raw:6.2f} {max(peak, size) / raw:7.2f} {seconds:7.1f}"
    )


HEADER = (
    f"{'step':<9} {'segs':>4} {'tokens MB':>9} {'other seg':>9} {'wal MB':>9} {'sidecars':>9} "
    f"{'total MB':>9} {'B/token':>8} {'x raw':>6} {'peak x':>7} {'step s':>7}"
)


def build(
    path: Path,
    compression: str | None,
    vecs: Vectors,
    texts: list[str],
    batch: int,
    reindex: bool,
) -> tuple[list[str], list[list[Any]]]:
    """Build, optimise, close and reopen one store; returns the table rows and the top-10s
    (id, score) of every query, before the close and after the reopen."""
    from vllm_retrieval.store import MultiVectorStore

    d_dense, d_tok, q_dense, q_tok = vecs
    dim = d_dense.shape[1]
    n_tokens = sum(t.shape[0] for t in d_tok)
    raw = n_tokens * dim * 4
    rows: list[str] = []

    def step(label: str, fn: Callable[[], Any]) -> Any:
        peak = [0]
        done = threading.Event()

        def watch() -> None:  # the largest total seen during the step, every 0.2 s
            while not done.wait(0.2):
                with contextlib.suppress(OSError):  # files vanish while we walk
                    peak[0] = max(peak[0], total(footprint(path)))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        try:
            res = fn()
        finally:
            done.set()
            watcher.join()
        seconds = time.perf_counter() - t0
        rows.append(row(label, footprint(path), n_tokens, raw, seconds, peak[0]))
        return res

    def top10(store: Any) -> list[Any]:
        return [
            [(h.id, h.score) for h in store.search_encoded(qd, qt, k=10, mode="maxsim")]
            for qd, qt in zip(q_dense, q_tok, strict=True)
        ]

    store = MultiVectorStore(path, dim=dim, compression=compression, batch_size=batch)

    def add() -> None:
        for s in range(0, len(texts), batch):
            e = s + batch
            store.add_encoded(
                texts[s:e], d_dense[s:e], d_tok[s:e], ids=list(range(s, min(e, len(texts))))
            )

    step("add", add)
    step("optimize", store.optimize)
    if reindex:
        step("reindex", store.build_token_index)
    before = top10(store)
    step("close", store.close)
    store = step("reopen", lambda: MultiVectorStore.open(path))
    after = top10(store)
    store.close()
    return rows, [before, after]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument(
        "--compression",
        nargs="+",
        default=["none"],
        choices=["none", "fp16", "int8", "binary"],
        help="store settings to build, each from the same vectors (the first is the reference)",
    )
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=None, help="npz of the encoded vectors")
    ap.add_argument("--reencode", action="store_true", help="encode again, refresh the cache")
    ap.add_argument("--no-reindex", action="store_true", help="skip the second build_token_index()")
    ap.add_argument("--dir", type=Path, default=None, help="build here (default: a temp dir)")
    args = ap.parse_args()

    texts = load_docs(args.docs)
    queries = load_queries(args.queries)
    cache = args.cache or Path(tempfile.gettempdir()) / f"vllm-retrieval-disk-{len(texts)}.npz"
    vecs = encoded(texts, queries, cache, args.reencode)
    n_tokens = sum(t.shape[0] for t in vecs[1])
    dim = vecs[0].shape[1]
    print(
        f"{len(texts)} documents, {n_tokens} token vectors x {dim} dims: raw float32 "
        f"{n_tokens * dim * 4 / 2**20:.1f} MB ({dim * 4} B/token); "
        f"batch {args.batch_size}, {os.cpu_count()} CPUs"
    )
    base = args.dir or Path(tempfile.mkdtemp(prefix="vr-disk-"))
    ref: list[Any] | None = None
    try:
        for comp in args.compression:
            path = base / f"store-{comp}"
            shutil.rmtree(path, ignore_errors=True)
            rows, (before, after) = build(
                path,
                None if comp == "none" else comp,
                vecs,
                texts,
                args.batch_size,
                not args.no_reindex,
            )
            print(f"\ncompression={comp}\n{HEADER}")
            print("\n".join(rows))
            same = all(
                [i for i, _ in b] == [i for i, _ in a]
                and np.allclose([s for _, s in b], [s for _, s in a])
                for b, a in zip(before, after, strict=True)
            )
            print(f"reopen: top-10 of {len(before)} maxsim queries unchanged: {same}")
            if ref is None:
                ref = after
                continue
            diffs = [
                abs(s - dict(r)[i])
                for q, r in zip(after, ref, strict=True)
                for i, s in q
                if i in dict(r)
            ]
            overlap = np.mean(
                [
                    len({i for i, _ in q} & {i for i, _ in r}) / 10
                    for q, r in zip(after, ref, strict=True)
                ]
            )
            print(
                f"vs {args.compression[0]}: max |score diff| {max(diffs, default=0.0):.2e} "
                f"(mean {np.mean(diffs) if diffs else 0.0:.2e}), top-10 overlap {overlap:.3f}"
            )
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
