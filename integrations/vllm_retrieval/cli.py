"""The ``vllm-retrieval`` command line: index, search, eval and bench.

::

    vllm-retrieval index  --index DIR INPUT...        # BEIR corpus.jsonl, JSONL, .txt/.md files
    vllm-retrieval search --index DIR "query" [-k 10] [--mode hybrid] [--filter year>=2010]
    vllm-retrieval eval   --beir DIR [--split test] [--qrels FILE] [--modes dense hybrid]
    vllm-retrieval bench  encode|maxsim|search|scifact [ARGS...]

Every command takes the model and engine options (``--model``, prefixes, ``--max-length``,
``--dtype``, ``--engine-arg``, ``--base-url`` for a remote ``vllm serve``...). Results go to
standard output; library and engine logs go to standard error, so ``--json`` output can be
piped. Errors are one line on standard error and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .core.errors import VLLMRetrievalError, require

if TYPE_CHECKING:
    from .core.encoder import Encoder
    from .core.store import MultiVectorStore, SearchHit

__all__ = ["build_parser", "chunk_text", "main", "read_inputs"]

PROG = "vllm-retrieval"
MODES = ("dense", "maxsim", "hybrid", "fusion")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
MARKDOWN_SUFFIXES = (".md", ".markdown")  # chunked with MarkdownTextSplitter
BENCHMARKS = {
    "encode": "encode.py",
    "maxsim": "maxsim.py",
    "search": "search.py",
    "scifact": "scifact_store.py",
    "remote": "remote.py",
}
STEP_MARK = "### vllm-retrieval step"


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


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
    g.add_argument("--pooling", choices=("mean", "cls"), help="dense pooling (default: model's)")
    g.add_argument("--batch-size", type=int, default=64, help="texts per engine request (64)")
    g.add_argument(
        "--dtype",
        help="vLLM dtype (default: $VLLM_RETRIEVAL_DTYPE or auto, i.e. bfloat16 on CPUs with "
        "bf16 units, else float32; the model's on GPU)",
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
    g.add_argument("--api-key", help="API key of the remote server")
    g.add_argument("--timeout", type=float, default=60.0, help="remote request timeout, s (60)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("-v", "--verbose", action="store_true", help="show vLLM's info logs")
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

    p = sub.add_parser(
        "index",
        parents=[common],
        help="index documents into a store (resumable)",
        description="Index documents into an embedded multi-vector store. INPUT is a BEIR "
        "corpus.jsonl (_id, title, text) or its folder, a JSONL of {id, text, ...metadata}, "
        "or .txt/.md files and folders (split into chunks). Ids already in the store are "
        "skipped, so an interrupted run can simply be started again.",
    )
    p.add_argument("--index", required=True, type=Path, metavar="DIR", help="store directory")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders")
    p.add_argument("--chunk-size", type=int, default=1000, help="characters per text chunk")
    p.add_argument("--chunk-overlap", type=int, default=100, help="characters of overlap")
    p.add_argument(
        "--compression",
        choices=("none", "fp16", "int8", "binary"),
        help="token-vector storage of a NEW store (default: float32)",
    )

    p = sub.add_parser(
        "search",
        parents=[common],
        help="search a store",
        description="Search a store; prints a table (or JSON) of the best documents.",
    )
    p.add_argument("--index", required=True, type=Path, metavar="DIR", help="store directory")
    p.add_argument("query", help="the query text")
    p.add_argument("-k", type=int, default=10, help="number of results (10)")
    p.add_argument("--mode", choices=MODES, default="hybrid", help="search mode (hybrid)")
    p.add_argument(
        "--candidates", type=int, default=200, help="dense prefetch depth of hybrid/fusion (200)"
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="metadata filter; also FIELD!=V, FIELD>=V, FIELD<=V, FIELD>V, FIELD<V, or a JSON "
        "filter object; repeat to combine with AND",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--explain", action="store_true", help="show the MaxSim token alignment of the top hit"
    )

    p = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate on a BEIR dataset",
        description="Index (or reuse) a BEIR corpus and report nDCG@10, recall@100 and MRR@10 "
        "per search mode (ir-measures), with encode time and query latency.",
    )
    p.add_argument("--beir", required=True, type=Path, metavar="DIR", help="BEIR folder")
    p.add_argument("--split", default="test", help="qrels split, qrels/SPLIT.tsv (test)")
    p.add_argument("--qrels", type=Path, metavar="FILE", help="a BEIR or TREC qrels file")
    p.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="modes (all four)"
    )
    p.add_argument(
        "--index",
        type=Path,
        metavar="DIR",
        help="store directory to build or reuse (default: a temporary one)",
    )
    p.add_argument("--max-queries", type=int, help="evaluate only the first N judged queries")
    p.add_argument(
        "--extra-docs",
        type=int,
        metavar="N",
        help="index only the documents judged for the evaluated queries plus N random others "
        "(a quick run on a subset; default: the whole corpus)",
    )
    p.add_argument("--candidates", type=int, default=200, help="dense prefetch depth (200)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "bench",
        help="run a benchmark script",
        description="Run one of the repository's benchmarks (benchmarks/*.py) with the "
        "arguments that follow; `vllm-retrieval bench encode --help` shows its options.",
    )
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")

    # Hidden: run several commands in one process (one engine start), used by the tests.
    p = sub.add_parser("steps")
    p.add_argument("commands", nargs="+", help="one quoted command line per step")
    return parser


# -- the encoder and the store -------------------------------------------------------------------


def _engine_kwargs(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--engine-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _setup_env(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if args.cpu_threads:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.cpu_threads


def _recorded_settings(index: Path) -> dict[str, Any]:
    from .core.store import MANIFEST_NAME, StoreManifest

    path = index / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = StoreManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise CLIError(f"{path} is damaged: {exc}") from None
    if manifest.encoder is None:
        return {}
    return manifest.encoder.model_dump(exclude={"profile"})


def make_encoder(args: argparse.Namespace, index: Path | None = None) -> Encoder:
    """The Encoder from the command-line options; an existing index's settings are defaults."""
    from .core.encoder import Encoder

    recorded = _recorded_settings(index) if index is not None else {}
    given = {
        "model": args.model,
        "query_prefix": args.query_prefix,
        "document_prefix": args.document_prefix,
        "max_length": args.max_length,
        "query_length": args.query_length,
        "pooling": args.pooling,
    }
    settings = {k: (v if v is not None else recorded.get(k)) for k, v in given.items()}
    return Encoder(
        **settings,
        batch_size=args.batch_size,
        dtype=args.dtype,
        engine_kwargs=_engine_kwargs(args.engine_arg),
        base_url=args.base_url,
        api_key=args.api_key,
        timeout=args.timeout,
        show_progress=False,
    )


def open_store(
    args: argparse.Namespace, index: Path, *, create: bool, compression: str | None = None
) -> MultiVectorStore:
    """Open (or, with ``create``, create) the store at ``index`` with the CLI's encoder."""
    from .core.store import MultiVectorStore

    if not create and not index.is_dir():
        raise FileNotFoundError(f"no index at {index} (build one with `{PROG} index`)")
    encoder = make_encoder(args, index)
    if create:
        return MultiVectorStore(index, encoder=encoder, compression=compression)
    return MultiVectorStore.open(index, encoder=encoder)


# -- reading inputs ------------------------------------------------------------------------------


def _splitter(chunk_size: int, overlap: int, *, markdown: bool) -> Any:
    splitters = require("langchain_text_splitters", "cli")
    cls = splitters.MarkdownTextSplitter if markdown else splitters.RecursiveCharacterTextSplitter
    return cls(chunk_size=chunk_size, chunk_overlap=overlap)


def chunk_text(
    text: str, chunk_size: int = 1000, overlap: int = 100, *, markdown: bool = False
) -> list[str]:
    """Split ``text`` into chunks of at most ``chunk_size`` characters.

    Uses ``langchain-text-splitters`` (the ``cli`` extra): ``RecursiveCharacterTextSplitter``
    (paragraphs, then lines, then words), or with ``markdown=True`` its ``MarkdownTextSplitter``
    (headings, code fences and rules first). Consecutive chunks share up to ``overlap``
    characters. Raises an ImportError naming the extra when the package is missing.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk size must be > 0, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise ValueError(f"chunk overlap must be in [0, chunk size), got {overlap}")
    splitter = _splitter(chunk_size, overlap, markdown=markdown)
    return [c for c in splitter.split_text(text) if c.strip()]


Doc = tuple[str, str, dict[str, Any]]


def _read_jsonl(path: Path) -> Iterator[Doc]:
    from .eval import _jsonl

    for row in _jsonl(path):
        if "_id" in row:  # BEIR corpus row
            title = str(row.get("title") or "")
            text = (title + " " + str(row.get("text") or "")).strip()
            meta = {k: v for k, v in row.items() if k not in ("_id", "text", "title")}
            if title:
                meta["title"] = title
            yield str(row["_id"]), text, meta
        elif "id" in row and "text" in row:
            meta = {k: v for k, v in row.items() if k not in ("id", "text")}
            yield str(row["id"]), str(row["text"]), meta
        else:
            raise ValueError(
                f"{path}: rows need 'id' and 'text' (or BEIR '_id', 'title', 'text'); "
                f"got keys {sorted(row)[:6]}"
            )


def _read_text_file(path: Path, name: str, chunk_size: int, overlap: int) -> Iterator[Doc]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    markdown = path.suffix.lower() in MARKDOWN_SUFFIXES
    for i, chunk in enumerate(chunk_text(text, chunk_size, overlap, markdown=markdown)):
        yield f"{name}#{i}", chunk, {"source": name, "chunk": i}


def read_inputs(inputs: Sequence[Path], chunk_size: int = 1000, overlap: int = 100) -> list[Doc]:
    """``(id, text, metadata)`` for every document of the inputs; empty texts are dropped."""
    docs: list[Doc] = []
    for inp in inputs:
        if not inp.exists():
            raise FileNotFoundError(f"input {inp} does not exist")
        if inp.is_dir():
            if (inp / "corpus.jsonl").is_file():
                docs.extend(_read_jsonl(inp / "corpus.jsonl"))
                continue
            files = sorted(
                f for f in inp.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
            )
            if not files:
                raise ValueError(f"{inp} holds no corpus.jsonl and no .txt/.md files")
            for f in files:
                name = f.relative_to(inp).as_posix()
                docs.extend(_read_text_file(f, name, chunk_size, overlap))
        elif inp.suffix.lower() == ".jsonl":
            docs.extend(_read_jsonl(inp))
        elif inp.suffix.lower() in TEXT_SUFFIXES:
            docs.extend(_read_text_file(inp, inp.name, chunk_size, overlap))
        else:
            raise ValueError(
                f"{inp}: unsupported input (use .jsonl, .txt, .md files or folders of them)"
            )
    docs = [d for d in docs if d[1].strip()]
    if not docs:
        raise ValueError("the inputs hold no text to index")
    return docs


# -- commands ------------------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace, out: IO[str]) -> int:
    from .eval import index_documents

    docs = read_inputs(args.inputs, args.chunk_size, args.chunk_overlap)
    compression = None if args.compression in (None, "none") else args.compression
    store = open_store(args, args.index, create=True, compression=compression)
    try:
        added, skipped, seconds = index_documents(store, docs, progress=not args.no_progress)
        total = len(store)
    finally:
        store.close()
    rate = f" in {seconds:.1f} s ({added / seconds:.1f} docs/s)" if added and seconds else ""
    print(
        f"indexed {added} new documents{rate}; skipped {skipped} already stored; "
        f"{total} in {args.index}",
        file=out,
    )
    return 0


_FILTER_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|>=|<=|>|<)\s*(.*)$")
_FILTER_OPS = {"!=": "$ne", ">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt"}


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_filters(items: Sequence[str]) -> dict[str, Any] | None:
    """``["year>=2010", "topic=nlp"]`` → ``{"$and": [...]}`` in the store's filter language."""
    parts: list[dict[str, Any]] = []
    for item in items:
        if item.lstrip().startswith("{"):
            obj = _value(item)
            if not isinstance(obj, dict):
                raise CLIError(f"--filter {item!r} is not a JSON object")
            parts.append(obj)
            continue
        m = _FILTER_RE.match(item)
        if m is None:
            raise CLIError(f"--filter expects FIELD=VALUE (or !=, >=, <=, >, <), got {item!r}")
        key, op, raw = m.groups()
        value = _value(raw)
        parts.append({key: value} if op in ("=", "==") else {key: {_FILTER_OPS[op]: value}})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(hits: Sequence[SearchHit]) -> str:
    if not hits:
        return "(no results)"
    ids = [str(h.id) for h in hits]
    wid = min(max(len("id"), *(len(i) for i in ids)), 30)
    lines = [f"{'#':>3}  {'score':>8}  {'id':<{wid}}  text"]
    for n, (h, doc_id) in enumerate(zip(hits, ids, strict=True), 1):
        meta = ", ".join(f"{k}={v}" for k, v in h.metadata.items() if k != "title")
        text = _shorten(h.text, 70)
        lines.append(f"{n:>3}  {h.score:>8.4f}  {_shorten(doc_id, wid):<{wid}}  {text}")
        if meta:
            lines.append(f"{'':>3}  {'':>8}  {'':<{wid}}  [{_shorten(meta, 70)}]")
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace, out: IO[str]) -> int:
    if not args.query.strip():
        raise CLIError("the query is empty")
    if args.k <= 0:
        raise CLIError(f"-k must be > 0, got {args.k}")
    flt = parse_filters(args.filter)
    store = open_store(args, args.index, create=False)
    try:
        t0 = time.perf_counter()
        hits = store.search(
            args.query, args.k, mode=args.mode, filter=flt, candidates=args.candidates
        )
        ms = 1000 * (time.perf_counter() - t0)
        explanation = None
        if args.explain and hits:
            from .core.reranker import MaxSimReranker

            explanation = MaxSimReranker(encoder=store.encoder).explain(args.query, hits[0].text)
    finally:
        store.close()
    if args.json:
        payload: dict[str, Any] = {
            "query": args.query,
            "mode": args.mode,
            "k": args.k,
            "latency_ms": round(ms, 2),
            "results": [
                {"rank": n, "id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata}
                for n, h in enumerate(hits, 1)
            ],
        }
        if explanation is not None:
            payload["explain"] = {
                "id": hits[0].id,
                "score": explanation.score,
                "matches": [m._asdict() for m in explanation.matches],
            }
        print(json.dumps(payload, ensure_ascii=False, indent=2), file=out)
        return 0
    print(f"{args.mode} search, {len(hits)} results in {ms:.0f} ms: {args.query!r}", file=out)
    print(_table(hits), file=out)
    if explanation is not None:
        print(
            f"\nWhy {hits[0].id!r} won: MaxSim {explanation.score:.4f} = sum over query tokens "
            "of the best document-token cosine",
            file=out,
        )
        qw = max(len("query token"), *(len(m.query_token) for m in explanation.matches))
        print(f"  {'query token':<{qw}}  {'best document token':<24}  {'pos':>4}  cosine", file=out)
        for m in explanation.matches:
            print(
                f"  {m.query_token:<{qw}}  {m.document_token:<24}  {m.document_position:>4}  "
                f"{m.similarity:.4f}",
                file=out,
            )
    return 0


def cmd_eval(args: argparse.Namespace, out: IO[str]) -> int:
    from .eval import beir_documents, evaluate_run, index_documents, load_beir, run_queries

    if args.max_queries is not None and args.max_queries <= 0:
        raise CLIError(f"--max-queries must be > 0, got {args.max_queries}")
    data = load_beir(args.beir, args.split, args.qrels)
    if args.extra_docs is not None and args.extra_docs < 0:
        raise CLIError(f"--extra-docs must be >= 0, got {args.extra_docs}")
    if args.max_queries is not None or args.extra_docs is not None:
        data = data.subset(args.max_queries, args.extra_docs)
    with contextlib.ExitStack() as stack:
        index = args.index
        if index is None:
            index = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vr-eval-")))
        store = open_store(args, index, create=True)
        stack.callback(store.close)
        added, skipped, enc_s = index_documents(
            store, beir_documents(data), progress=not args.no_progress
        )
        runs, q_enc_s = run_queries(
            store, data.queries, args.modes, k=100, candidates=args.candidates
        )
        n_docs = len(store)
    nq = len(data.queries)
    results = []
    for mode in args.modes:
        run, ms = runs[mode]
        metrics = evaluate_run(data.qrels, run)
        results.append(
            {
                "mode": mode,
                "nDCG@10": round(100 * metrics["nDCG@10"], 2),
                "recall@100": round(100 * metrics["R@100"], 2),
                "MRR@10": round(100 * metrics["RR@10"], 2),
                "search_ms": round(ms, 2),
                "latency_ms": round(ms + 1000 * q_enc_s / max(nq, 1), 2),
            }
        )
    report: dict[str, Any] = {
        "dataset": str(args.beir),
        "split": args.split if args.qrels is None else str(args.qrels),
        "queries": nq,
        "documents": n_docs,
        "corpus_subset": args.extra_docs is not None,
        "index": str(args.index) if args.index is not None else None,
        "model": str(args.model or "default"),
        "documents_encoded": added,
        "documents_reused": skipped,
        "encode_seconds": round(enc_s, 2),
        "query_encode_ms": round(1000 * q_enc_s / max(nq, 1), 2),
        "candidates": args.candidates,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2), file=out)
        return 0
    enc = (
        f"encoded {added} documents in {enc_s:.1f} s ({added / enc_s:.1f} docs/s)"
        if added and enc_s
        else "encoded 0 documents"
    )
    print(f"{args.beir} [{report['split']}]: {nq} queries, {n_docs} documents", file=out)
    print(
        f"{enc}; reused {skipped}; query encoding {report['query_encode_ms']:.1f} ms/query",
        file=out,
    )
    print(
        f"{'mode':<8} {'nDCG@10':>8} {'recall@100':>11} {'MRR@10':>7} "
        f"{'search ms':>10} {'latency ms':>11}",
        file=out,
    )
    for r in results:
        print(
            f"{r['mode']:<8} {r['nDCG@10']:>8.2f} {r['recall@100']:>11.2f} {r['MRR@10']:>7.2f} "
            f"{r['search_ms']:>10.2f} {r['latency_ms']:>11.2f}",
            file=out,
        )
    print("(metrics ×100; latency = query encoding + search, per query)", file=out)
    return 0


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


COMMANDS = {"index": cmd_index, "search": cmd_search, "eval": cmd_eval, "bench": cmd_bench}


# -- entry point ---------------------------------------------------------------------------------


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
        # Stop engines now, while their shutdown logs still go to stderr (not at exit).
        engine = sys.modules.get("vllm_retrieval.core.engine")
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.shutdown_engines()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        out.close()


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        msg = str(exc.args[0])
    first = msg.splitlines()[0]
    return f"{PROG}: error: {first}"


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
    except (
        CLIError,
        VLLMRetrievalError,
        ValueError,
        TypeError,
        KeyError,
        FileNotFoundError,
        ImportError,
        OSError,
    ) as exc:
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
    status = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":
    console_main()
