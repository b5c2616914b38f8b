"""The entry points: the argument parser, :func:`main` and the ``vllm-retrieval`` script.

Results go to standard output and everything else (vLLM's logs, shown with ``-v``) to standard
error, see :func:`_result_stream`; errors are one line and a non-zero exit status (with ``-v``
after the traceback), see :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from ..encoding.backends.local import prefer_in_process_engine, quiet_engine_logs
from ..encoding.model_profile import PROFILES
from .bench import add_bench_parser, cmd_bench
from .common import PROG, CLIError
from .eval import add_eval_parser, cmd_eval
from .index import add_index_parser, cmd_index
from .search import add_search_parser, cmd_search

__all__ = ["COMMANDS", "STEP_MARK", "build_parser", "console_main", "main"]

STEP_MARK = "### vllm-retrieval step"

# True in the console script (a process of its own), False when a host program calls main().
_PROGRAM = False
# The module whose ``shutdown_engines`` stops this process's in-process vLLM engines.
_ENGINE_REGISTRY = "vllm_retrieval.encoding.backends.registry"


# -- arguments -----------------------------------------------------------------------------------


def _common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model and engine (every command)")
    g.add_argument(
        "--model",
        help="model folder or name (default: the packaged all-MiniLM-L6-v2, or the model an "
        "existing index was built with)",
    )
    g.add_argument("--query-prefix", help="text prepended to queries (default: the model's)")
    g.add_argument("--document-prefix", help="text prepended to documents (default: the model's)")
    g.add_argument("--max-length", type=int, help="truncation length in tokens")
    g.add_argument("--query-length", type=int, help="ColBERT query length ([MASK] expansion)")
    g.add_argument(
        "--pooling", choices=("mean", "cls", "max", "last"), help="dense pooling (default: model's)"
    )
    g.add_argument(
        "--profile",
        choices=PROFILES,
        help="model profile, e.g. jina-v4 for Jina embeddings v4 (default: detected)",
    )
    g.add_argument("--batch-size", type=int, default=64, help="texts per engine request (64)")
    g.add_argument(
        "--dtype",
        help="vLLM dtype (default: $VLLM_RETRIEVAL_DTYPE or auto, i.e. bfloat16 on CPUs where "
        "it is faster (AMX, Zen 4+), else float32; the model's on GPU)",
    )
    g.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra vllm.LLM keyword argument (VALUE parsed as JSON when it can be); repeatable",
    )
    g.add_argument(
        "--cpu-threads",
        metavar="BIND",
        help="CPU cores for vLLM, e.g. 0-1 (sets VLLM_CPU_OMP_THREADS_BIND)",
    )
    g.add_argument("--base-url", help="URL of a remote token_embed vLLM server (no local engine)")
    g.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help="file holding the remote server's API key (default: $VLLM_API_KEY); keys are "
        "not taken on the command line, where `ps` shows them",
    )
    # Refused with a pointer to the above: a key on argv is visible to every local user.
    g.add_argument("--api-key", dest="api_key_argv", help=argparse.SUPPRESS)
    g.add_argument("--timeout", type=float, default=60.0, help="remote request timeout, s (60)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show vLLM's logs and, on an error, the full traceback",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for documentation and tests)."""
    common = _common_parser()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Dense + ColBERT multi-vector retrieval with MaxSim on one vLLM engine: "
        "index documents, search them, evaluate on BEIR data, run the benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_index_parser(sub, common)
    add_search_parser(sub, common)
    add_eval_parser(sub, common)
    add_bench_parser(sub)

    # Hidden: run several commands in one process (one engine start), used by the tests.
    p = sub.add_parser("steps")
    p.add_argument("commands", nargs="+", help="one quoted command line per step")
    return parser


# -- running -------------------------------------------------------------------------------------

Command = Callable[[argparse.Namespace, IO[str]], int]

COMMANDS: dict[str, Command] = {
    "index": cmd_index,
    "search": cmd_search,
    "eval": cmd_eval,
    "bench": cmd_bench,
}


def _setup_env(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    if _PROGRAM:  # a host program that calls main() keeps its own logging and environment
        quiet_engine_logs(not args.verbose)
    if args.cpu_threads:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.cpu_threads


@contextlib.contextmanager
def _result_stream() -> Iterator[IO[str]]:
    """Standard output for results only: fd 1 points at stderr meanwhile (vLLM logs there)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real file descriptor (embedded use)
        yield sys.stdout
        return
    out = os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="replace")
    os.dup2(2, 1)
    try:
        yield out
    finally:
        out.flush()
        # The console script stops engines now, while their shutdown logs still go to stderr
        # (not at exit). Called from a host program, the commands' own Encoders have released
        # their references already: an engine the host shares stays up.
        registry = sys.modules.get(_ENGINE_REGISTRY)
        if _PROGRAM and registry is not None:
            with contextlib.suppress(Exception):
                registry.shutdown_engines()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        out.close()


def _one_line(exc: BaseException) -> str:
    """``vllm-retrieval: error: Type: first line of the message`` (no type for usage errors)."""
    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    first = (msg.strip().splitlines() or [""])[0]
    if isinstance(exc, CLIError):
        return f"{PROG}: error: {first}"
    kind = type(exc).__name__
    return f"{PROG}: error: {kind}: {first}" if first else f"{PROG}: error: {kind}"


def _run(args: argparse.Namespace, out: IO[str]) -> int:
    if args.command != "bench":
        _setup_env(args)
    return COMMANDS[args.command](args, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (also the console script's)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    steps: list[argparse.Namespace]
    if args.command == "steps":
        steps = [parser.parse_args(shlex.split(c)) for c in args.commands]
        if any(s.command in ("steps", "bench") for s in steps):
            parser.error("steps cannot contain 'steps' or 'bench'")
    else:
        steps = [args]
    try:
        with _result_stream() as out:
            status = 0
            for n, step in enumerate(steps, 1):
                if args.command == "steps":
                    print(f"{STEP_MARK} {n}", file=out, flush=True)
                status = _run(step, out)
                out.flush()
                if status:
                    break
            return status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # With -v the whole traceback (and its causes); always one last line saying what.
        if any(getattr(s, "verbose", False) for s in steps):
            traceback.print_exc(file=sys.stderr)
        print(_one_line(exc), file=sys.stderr)
        return 2 if isinstance(exc, CLIError) else 1


def console_main() -> None:
    """The ``vllm-retrieval`` console script: :func:`main`, then a hard exit.

    When ``main`` returns, results are flushed, stores are closed and engines are shut down.
    The interpreter's own teardown can still abort in native code afterwards (libstdc++
    "terminate called without an active exception" from a native thread of the vLLM/torch
    stack, seen here in about 1 of 30 runs on a loaded machine), which would turn a finished
    run into exit status 134. So the script leaves with ``os._exit`` once its work is done.
    """
    global _PROGRAM
    _PROGRAM = True
    prefer_in_process_engine()  # one engine in a short-lived program: the faster start
    status = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(status)
