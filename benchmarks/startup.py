"""Time to first result: where the in-process vLLM engine's start goes, per engine variant.

    .venv/bin/python benchmarks/startup.py [--variants default legacy ...] [--repeats 3]
        [--docs 200] [--cli]

Each run is a fresh Python process (one engine per process, as a user's ``vllm-retrieval
search`` gets) that prints, as JSON:

* ``import_s``: ``import vllm`` plus ``from vllm import LLM`` in the calling process;
* ``engine_s``: ``Encoder(...).start()`` after that (processes spawned, model loaded);
* ``first_query_ms``: the first ``encode_queries`` call; ``docs_per_s``: ``encode_documents``
  of ``--docs`` SciFact abstracts (or the sample corpus), the steady-state throughput;
* ``digest``: the token vectors of a fixed set of texts, so that variants that change
  vectors are seen (``max_abs_diff`` against the first variant).

Variants (environment and ``engine_kwargs`` on top of the library's defaults):

* ``program``: what the console script and ``make demo`` do (``prefer_in_process_engine``):
  one process (engine core in-process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``; model in the
  engine core, ``distributed_executor_backend="uni"``) and the heap frozen before the engine
  loads (``gc.freeze``);
* ``nofreeze``: the same without the ``gc.freeze``;
* ``default``: what ``Encoder()`` does in a library user's process: vLLM's engine core in a
  process of its own (on CPU vLLM turns ``"uni"`` into ``"mp"``: the model in a third process,
  as in ``legacy``);
* ``legacy``: the engine settings before the start-up work (EngineCore in its own process,
  a further worker process under it): 3 processes, each importing vLLM and torch;
* ``inproc``: the engine core in-process over the ``mp`` executor, without the freeze.

With ``--cli`` it also times ``vllm-retrieval --help`` and a ``search`` of the sample corpus
(engine start and search time as the CLI reports them). Runs are sequential; figures on a
shared machine are noisy, so it prints the median and the spread of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
SAMPLE = ROOT / "integrations" / "vllm_retrieval" / "data" / "sample_corpus.jsonl"

_MP = "VLLM_ENABLE_V1_MULTIPROCESSING"
VARIANTS: dict[str, dict[str, Any]] = {
    "program": {"env": {_MP: "0"}, "engine_kwargs": {}},
    "nofreeze": {"env": {_MP: "0"}, "engine_kwargs": {}, "freeze_gc": False},
    "default": {"env": {}, "engine_kwargs": {}},
    "legacy": {"env": {_MP: "1"}, "engine_kwargs": {"distributed_executor_backend": "mp"}},
    "inproc": {
        "env": {_MP: "0"},
        "engine_kwargs": {"distributed_executor_backend": "mp"},
        "freeze_gc": False,
    },
}
PROBE = [
    "How does late interaction score a document?",
    "Bread rises because yeast ferments sugars into carbon dioxide.",
    "CRISPR-Cas9 edits genes by cutting DNA at a guide RNA's target.",
]


def load_docs(n: int) -> list[str]:
    path = SCIFACT / "corpus.jsonl" if (SCIFACT / "corpus.jsonl").is_file() else SAMPLE
    docs: list[str] = []
    with path.open() as fh:
        for line in fh:
            row = json.loads(line)
            docs.append((row.get("title", "") + " " + row["text"]).strip())
            if len(docs) == n:
                break
    return docs


def child(variant: str, docs: int, dtype: str | None, out: str) -> None:
    """One run in this (fresh) process: writes one JSON object to ``out``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.update(VARIANTS[variant]["env"])
    t0 = time.perf_counter()
    import vllm  # noqa: F401
    from vllm import LLM  # noqa: F401

    import_s = time.perf_counter() - t0
    import numpy as np

    from vllm_retrieval import Encoder, shutdown_engines
    from vllm_retrieval.encoding.backends import local

    local._FREEZE_GC = VARIANTS[variant].get("freeze_gc", True)
    enc = Encoder(dtype=dtype, engine_kwargs=VARIANTS[variant]["engine_kwargs"])
    t1 = time.perf_counter()
    enc.start()
    engine_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    enc.encode_queries(["what makes bread rise"])
    first_ms = 1000 * (time.perf_counter() - t2)
    texts = load_docs(docs)
    enc.encode_documents(texts[:8])  # settle
    t3 = time.perf_counter()
    enc.encode_documents(texts)
    docs_s = len(texts) / (time.perf_counter() - t3)
    _, tokens = enc.encode_documents(PROBE)
    digest = np.concatenate([t.ravel() for t in tokens]).astype(np.float64)
    shutdown_engines()  # no engine process outlives the run
    Path(out).write_text(
        json.dumps(
            {
                "variant": variant,
                "dtype": enc.engine_settings.dtype,
                "import_s": round(import_s, 2),
                "engine_s": round(engine_s, 2),
                "first_query_ms": round(first_ms, 1),
                "docs_per_s": round(docs_s, 1),
                "digest": digest.tolist(),
            }
        )
    )
    os._exit(0)  # the interpreter's own teardown is not what is measured


def run_child(variant: str, docs: int, dtype: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vr-startup-") as tmp:
        result, log = Path(tmp) / "result.json", Path(tmp) / "log.txt"
        cmd = [sys.executable, __file__, "--child", variant, "--docs", str(docs)]
        cmd += ["--out", str(result)] + (["--dtype", dtype] if dtype else [])
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with log.open("w") as fh:  # a file, not a pipe: no wait on engine processes' EOF
            code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if code or not result.is_file():
            raise SystemExit(f"{variant} failed ({code}):\n{log.read_text()[-3000:]}")
        out: dict[str, Any] = json.loads(result.read_text())
    out["wall_s"] = round(wall, 2)
    out["cpu_s"] = round(cpu, 2)
    return out


def _cli(*args: str) -> tuple[float, str]:
    script = Path(sys.executable).parent / "vllm-retrieval"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "vllm_retrieval.cli"]
    t0 = time.perf_counter()
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(f"vllm-retrieval {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0, res.stdout


def cli_figures(repeats: int) -> None:
    helps = [_cli("--help")[0] for _ in range(repeats)]
    print(f"vllm-retrieval --help: median {statistics.median(helps):.2f} s (of {repeats})")
    with tempfile.TemporaryDirectory(prefix="vr-startup-") as tmp:
        idx = str(Path(tmp) / "idx")
        _cli("index", "--index", idx, str(SAMPLE), "--no-progress")
        for _ in range(repeats):
            wall, out = _cli(
                "search", "--index", idx, "-k", "3", "what makes bread rise", "Which enzyme?"
            )
            heads = [ln for ln in out.splitlines() if "results in" in ln or "engine" in ln]
            print(f"search (2 queries): wall {wall:.1f} s; " + " | ".join(heads))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--variants", nargs="+", default=["program", "default", "legacy"], choices=VARIANTS
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--dtype", help="engine dtype (default: the library's auto)")
    ap.add_argument("--cli", action="store_true", help="also time the CLI (--help, search)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.docs, args.dtype, args.out)
        return
    import numpy as np

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    for _ in range(args.repeats):  # interleaved, so load drifts hit every variant alike
        for v in args.variants:
            runs[v].append(run_child(v, args.docs, args.dtype))
            r = runs[v][-1]
            print(
                f"  {v:<8} import {r['import_s']:5.1f} s  engine {r['engine_s']:5.1f} s  "
                f"wall {r['wall_s']:5.1f} s  cpu {r['cpu_s']:5.1f} s  "
                f"first query {r['first_query_ms']:6.1f} ms  "
                f"{r['docs_per_s']:6.1f} docs/s",
                flush=True,
            )
    ref = np.asarray(runs[args.variants[0]][0]["digest"])
    print(
        f"\n{'variant':<8} {'dtype':<9} {'import s':>9} {'engine s':>9} {'wall s':>8} {'cpu s':>8} "
        f"{'1st query ms':>13} {'docs/s':>7} {'max |diff|':>11}"
    )
    for v, rs in runs.items():

        def med(key: str, rs: list[dict[str, Any]] = rs) -> str:
            vals = [r[key] for r in rs]
            return f"{statistics.median(vals):.1f}±{(max(vals) - min(vals)) / 2:.1f}"

        diff = max(float(np.abs(np.asarray(r["digest"]) - ref).max()) for r in rs)
        print(
            f"{v:<8} {rs[0]['dtype']:<9} {med('import_s'):>9} {med('engine_s'):>9} "
            f"{med('wall_s'):>8} {med('cpu_s'):>8} {med('first_query_ms'):>13} "
            f"{med('docs_per_s'):>7} {diff:>11.2e}"
        )
    if args.cli:
        print()
        cli_figures(args.repeats)


if __name__ == "__main__":
    main()
