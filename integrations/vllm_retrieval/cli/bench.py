"""``vllm-retrieval bench``: run one of the source repository's ``benchmarks/*.py`` scripts."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import IO

__all__ = ["BENCHMARKS", "add_bench_parser", "cmd_bench"]

BENCHMARKS = {
    "encode": "encode.py",
    "maxsim": "maxsim.py",
    "search": "search.py",
    "scifact": "scifact_store.py",
    "remote": "remote.py",
    "images": "images.py",
    "ingest": "ingest.py",
    "startup": "startup.py",
    "reduction": "reduction.py",
    "concurrency": "concurrency.py",
    "disk": "disk.py",
    "summary": "summary.py",
}


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``bench`` subcommand (no model or engine options: the script has its own)."""
    p = sub.add_parser(
        "bench",
        help="run a benchmark script",
        description="Run one of the repository's benchmarks (benchmarks/*.py) with the "
        "arguments that follow; `vllm-retrieval bench encode --help` shows its options.",
    )
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")


def _benchmarks_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "benchmarks"
        if (cand / "encode.py").is_file():
            return cand
    raise FileNotFoundError(
        "the benchmarks/ folder was not found (it ships with the source repository)"
    )


def cmd_bench(args: argparse.Namespace, out: IO[str]) -> int:
    script = _benchmarks_dir() / BENCHMARKS[args.name]
    if not script.is_file():
        raise FileNotFoundError(f"benchmark script {script} is missing")
    extra = list(args.args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    out.flush()
    return subprocess.call([sys.executable, str(script), *extra], stdout=out.fileno())
