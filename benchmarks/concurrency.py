"""Many threads and asyncio tasks on ONE shared engine: same results as serial, no deadlock.

    .venv/bin/python benchmarks/concurrency.py [--threads 8] [--tasks 64] [--calls 100]
        [--timeout 1800]

Every worker (``--threads`` OS threads calling the sync API, ``--tasks`` asyncio tasks on one
event loop calling the async API, all at the same time) makes ``--calls`` mixed calls on one
``Encoder`` and one ``MaxSimReranker`` sharing one in-process vLLM engine (the packaged
all-MiniLM-L6-v2): encode a query, encode 1-3 documents, rerank 4-8 documents for a query,
or ("scoped") open a short-lived copy of the Encoder, encode a query and close it, as a
component that comes and goes would (closing it must not stop the shared engine under the
others' feet).
Inputs are drawn (seeded) from a pool, and each distinct call is also run **serially**,
alone, before the concurrent run; every concurrent result is compared with its serial twin
(dense and token vectors, rerank scores per document). Waits are bounded: a worker still
running after ``--timeout`` seconds is reported as a deadlock.

Prints the serial-vs-concurrent difference (max |diff| over every vector and score), then
p50 / p99 / max latency per call kind and overall, and the throughput (calls/s, texts/s).
Exit status 1 on a mismatch, an error or a timeout. ``tests/test_concurrency.py`` runs a small
version (4 threads + 16 tasks x 5 calls).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ("query", "documents", "rerank", "scoped")
_VOCABULARY = (
    "statin cholesterol artery plaque insulin glucose receptor kinase tumour cell protein "
    "gene expression mutation pathway inflammation cytokine vaccine antibody virus bacteria "
    "neuron synapse cortex memory sleep exercise diet obesity pressure heart kidney liver "
    "lung cancer therapy trial cohort risk dose placebo outcome mortality survival signal"
)
_WORDS = _VOCABULARY.split()


@dataclass(frozen=True)
class Call:
    """One call of the mixed workload: its kind, the query and the documents (indices)."""

    kind: str
    query: int
    docs: tuple[int, ...]


@dataclass
class Workload:
    queries: list[str]
    docs: list[str]

    @classmethod
    def make(cls, seed: int = 0, n_queries: int = 40, n_docs: int = 120) -> Workload:
        rng = random.Random(seed)

        def text(lo: int, hi: int) -> str:
            return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))

        queries = [f"q{i}: {text(4, 12)}?" for i in range(n_queries)]
        docs = [f"Document {i}. {text(20, 90)}." for i in range(n_docs)]
        return cls(queries, docs)

    def plan(self, worker: int, calls: int, seed: int = 0) -> list[Call]:
        """``calls`` mixed calls for one worker (deterministic in ``worker`` and ``seed``).

        Inputs come from small pools (a few hundred distinct calls in all), so the serial
        reference is cheap while every worker still mixes kinds and inputs."""
        rng = random.Random(seed * 1_000_003 + worker)
        out: list[Call] = []
        for _ in range(calls):
            kind = rng.choice(KINDS)
            q = rng.randrange(len(self.queries))
            if kind == "documents":
                start = rng.randrange(0, len(self.docs) - 3, 3)
                docs: tuple[int, ...] = tuple(range(start, start + rng.randint(1, 3)))
            elif kind == "rerank":
                start = 8 * rng.randrange(len(self.docs) // 8)
                docs = tuple(range(start, start + rng.randint(4, 8)))
            else:
                docs = ()
            out.append(Call(kind, q, docs))
        return out


Result = list[Any]  # arrays, or (index, score) pairs of a rerank


def _vectors(dense: Any, tokens: Sequence[Any]) -> Result:
    return [np.asarray(dense), *(np.asarray(t) for t in tokens)]


def run_sync(encoder: Any, reranker: Any, work: Workload, call: Call) -> Result:
    if call.kind == "query":
        return _vectors(*encoder.encode_queries([work.queries[call.query]]))
    if call.kind == "scoped":
        with encoder.model_copy(update={"batch_size": 5}) as own:
            return _vectors(*own.encode_queries([work.queries[call.query]]))
    if call.kind == "documents":
        return _vectors(*encoder.encode_documents([work.docs[i] for i in call.docs]))
    ranked = reranker.rerank(work.queries[call.query], [work.docs[i] for i in call.docs])
    return [(int(r.index), float(r.score)) for r in ranked]


async def run_async(encoder: Any, reranker: Any, work: Workload, call: Call) -> Result:
    if call.kind == "query":
        return _vectors(*await encoder.aencode_queries([work.queries[call.query]]))
    if call.kind == "scoped":
        with encoder.model_copy(update={"batch_size": 5}) as own:
            return _vectors(*await own.aencode_queries([work.queries[call.query]]))
    if call.kind == "documents":
        return _vectors(*await encoder.aencode_documents([work.docs[i] for i in call.docs]))
    ranked = await reranker.arerank(work.queries[call.query], [work.docs[i] for i in call.docs])
    return [(int(r.index), float(r.score)) for r in ranked]


def difference(got: Result, want: Result) -> float:
    """Max |diff| between two results of the same call (inf if their shapes differ)."""
    if len(got) != len(want):
        return float("inf")
    if want and isinstance(want[0], tuple):  # rerank: the score of every document
        mine, ref = dict(got), dict(want)
        if mine.keys() != ref.keys():
            return float("inf")
        return float(max(abs(mine[i] - ref[i]) for i in ref))
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        if a.shape != b.shape:
            return float("inf")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    return worst


@dataclass
class Report:
    calls: int = 0
    texts: int = 0
    wall_s: float = 0.0
    max_diff: float = 0.0
    mismatches: int = 0
    errors: list[str] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})

    @property
    def ok(self) -> bool:
        return not self.errors and not self.hung and self.mismatches == 0

    def lines(self) -> list[str]:
        out = [
            f"calls: {self.calls} ({self.texts} texts) in {self.wall_s:.1f} s: "
            f"{self.calls / self.wall_s:.1f} calls/s, {self.texts / self.wall_s:.1f} texts/s",
            f"vs serial: max |diff| {self.max_diff:.3g}, mismatches {self.mismatches}, "
            f"errors {len(self.errors)}, hung workers {len(self.hung)}",
            f"{'latency ms':<12}{'n':>7}{'p50':>9}{'p99':>9}{'max':>9}",
        ]
        every = [x for v in self.latencies.values() for x in v]
        for name, values in [*self.latencies.items(), ("all", every)]:
            if values:
                p50, p99 = np.percentile(values, [50, 99]) * 1000
                out.append(
                    f"{name:<12}{len(values):>7}{p50:>9.1f}{p99:>9.1f}{max(values) * 1000:>9.1f}"
                )
        return out


def run(
    encoder: Any,
    reranker: Any,
    *,
    threads: int,
    tasks: int,
    calls: int,
    timeout: float = 600.0,
    tolerance: float = 1e-5,
    seed: int = 0,
) -> Report:
    """The concurrent run, checked call by call against a serial run of the same calls."""
    work = Workload.make(seed)
    plans = [work.plan(w, calls, seed) for w in range(threads + tasks)]
    serial = {c: run_sync(encoder, reranker, work, c) for plan in plans for c in plan}
    report = Report()
    lock = threading.Lock()

    def record(call: Call, result: Result, seconds: float) -> None:
        diff = difference(result, serial[call])
        with lock:
            report.calls += 1
            report.texts += len(call.docs) + (call.kind != "documents")
            report.latencies[call.kind].append(seconds)
            report.max_diff = max(report.max_diff, diff)
            report.mismatches += diff > tolerance

    def thread_worker(plan: list[Call]) -> None:
        try:
            for call in plan:
                start = time.perf_counter()
                result = run_sync(encoder, reranker, work, call)
                record(call, result, time.perf_counter() - start)
        except BaseException as exc:  # reported, never swallowed
            with lock:
                report.errors.append(f"thread: {type(exc).__name__}: {exc}")

    async def task_worker(plan: list[Call]) -> None:
        for call in plan:
            start = time.perf_counter()
            result = await run_async(encoder, reranker, work, call)
            record(call, result, time.perf_counter() - start)

    async def all_tasks(deadline: float) -> None:
        jobs = [asyncio.create_task(task_worker(p)) for p in plans[threads:]]
        done, pending = await asyncio.wait(jobs, timeout=max(0.0, deadline - time.monotonic()))
        for job in pending:
            job.cancel()
        report.hung += [f"asyncio task {i}" for i, j in enumerate(jobs) if j in pending]
        report.errors += [
            f"task: {type(j.exception()).__name__}: {j.exception()}"
            for j in done
            if j.exception() is not None
        ]

    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    pool = [
        threading.Thread(target=thread_worker, args=(p,), daemon=True, name=f"bench-{i}")
        for i, p in enumerate(plans[:threads])
    ]
    for t in pool:
        t.start()
    # Not asyncio.run: it waits for the default executor without a bound at the end.
    loop = asyncio.new_event_loop()
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="bench-loop"))
    try:
        loop.run_until_complete(all_tasks(deadline))
    finally:
        loop.close()  # shuts the executor down without waiting for a hung call
    for i, t in enumerate(pool):
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            report.hung.append(f"thread {i}")
    report.wall_s = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--calls", type=int, default=100, help="calls per thread and per task")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before 'hung'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", help="engine dtype (default float32)")
    args = parser.parse_args(argv)

    from vllm_retrieval import Encoder, shutdown_engines
    from vllm_retrieval.scoring import MaxSimReranker

    with Encoder(dtype=args.dtype) as encoder:
        started = time.perf_counter()
        encoder.start()
        print(f"engine started in {time.perf_counter() - started:.1f} s")
        reranker = MaxSimReranker(encoder=encoder)
        report = run(
            encoder,
            reranker,
            threads=args.threads,
            tasks=args.tasks,
            calls=args.calls,
            timeout=args.timeout,
            seed=args.seed,
        )
    shutdown_engines()
    print(
        f"{args.threads} threads + {args.tasks} asyncio tasks x {args.calls} mixed calls "
        f"on one engine ({os.cpu_count()} CPUs)"
    )
    for line in report.lines():
        print(line)
    for err in report.errors[:5]:
        print("ERROR", err)
    for hung in report.hung[:5]:
        print("HUNG", hung)
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
