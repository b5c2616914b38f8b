"""``vllm-retrieval search``: queries and filters from the command line, one result block per
query (a table, or one JSON object per line), explanations; one engine start for all queries.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..store import DEFAULT_MODE, FUSIONS, MODES, SIGNALS
from .common import CLIError, open_store

if TYPE_CHECKING:
    from ..store import SearchHit

__all__ = [
    "add_fusion_options",
    "add_search_parser",
    "cmd_search",
    "parse_filters",
    "read_queries",
]


def add_fusion_options(p: argparse.ArgumentParser) -> None:
    """``--fusion``, ``--fuse`` and ``--weights``: how the ``fusion`` mode combines lists."""
    p.add_argument(
        "--fusion",
        choices=FUSIONS,
        help="how fusion combines its lists (default: dbsf; weighted with --weights)",
    )
    p.add_argument(
        "--fuse",
        nargs="+",
        choices=SIGNALS,
        metavar="LIST",
        help=f"lists fused by the fusion mode, of {', '.join(SIGNALS)} "
        "(default: maxsim bm25 dense, or maxsim alone on a store without BM25)",
    )
    p.add_argument(
        "--weights", nargs="+", type=float, metavar="W", help="one weight per fused list"
    )


def add_search_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """The ``search`` subcommand and its options."""
    p = sub.add_parser(
        "search",
        parents=[common],
        help="search a store",
        description="Search a store with one or more queries (arguments, and/or a file or "
        "standard input with one query per line); prints a block (a table, or with --json a "
        "JSON object on one line) per query, after the engine's start time. One engine start "
        "serves every query.",
    )
    p.add_argument("--index", required=True, type=Path, metavar="DIR", help="store directory")
    p.add_argument("queries", nargs="*", metavar="QUERY", help="query texts")
    p.add_argument(
        "--queries-file",
        metavar="FILE",
        help="more queries, one per line (blank lines skipped); '-' reads standard input",
    )
    p.add_argument("-k", type=int, default=10, help="number of results (10)")
    p.add_argument(
        "--mode", choices=MODES, help=f"search mode (default: the store's, {DEFAULT_MODE})"
    )
    p.add_argument(
        "--candidates", type=int, default=200, help="prefetch depth of hybrid/fusion (200)"
    )
    add_fusion_options(p)
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


# -- filters -------------------------------------------------------------------------------------

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


def read_queries(args: argparse.Namespace) -> list[str]:
    """The queries: the positional ones, then those of ``--queries-file`` (``-``: stdin)."""
    queries = list(args.queries)
    if any(not q.strip() for q in queries):
        raise CLIError("a query is empty")
    source = args.queries_file
    if source is not None:
        if source == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise CLIError(f"cannot read --queries-file {source}: {exc.strerror}") from None
        queries += [line.strip() for line in text.splitlines() if line.strip()]
    if not queries:
        raise CLIError("no query given (QUERY arguments or --queries-file)")
    return queries


# -- output --------------------------------------------------------------------------------------


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


def _engine_line(store: Any, seconds: float) -> str:
    enc = store.encoder
    where = f"remote {enc.base_url}" if enc.base_url else "in-process vLLM"
    return f"engine: ready in {seconds:.1f} s ({where}, {enc.model}); not counted below"


def _explain_lines(hit: SearchHit, explanation: Any) -> list[str]:
    lines = [
        f"\nWhy {hit.id!r} won: MaxSim {explanation.score:.4f} = sum over query tokens "
        "of the best document-token cosine"
    ]
    qw = max(len("query token"), *(len(m.query_token) for m in explanation.matches))
    lines.append(f"  {'query token':<{qw}}  {'best document token':<24}  {'pos':>4}  cosine")
    for m in explanation.matches:
        lines.append(
            f"  {m.query_token:<{qw}}  {m.document_token:<24}  {m.document_position:>4}  "
            f"{m.similarity:.4f}"
        )
    return lines


def cmd_search(args: argparse.Namespace, out: IO[str]) -> int:
    queries = read_queries(args)
    if args.k <= 0:
        raise CLIError(f"-k must be > 0, got {args.k}")
    flt = parse_filters(args.filter)
    timings: dict[str, float] = {}
    store = open_store(args, args.index, create=False, timings=timings)
    mode = args.mode or DEFAULT_MODE
    try:
        engine_s = timings.get("engine_s", 0.0)
        if not args.json:
            print(_engine_line(store, engine_s), file=out, flush=True)
        reranker = None
        for n, query in enumerate(queries):
            t0 = time.perf_counter()
            hits = store.search(
                query,
                args.k,
                mode=args.mode,
                filter=flt,
                candidates=args.candidates,
                fusion=args.fusion,
                fuse=args.fuse,
                weights=args.weights,
            )
            ms = 1000 * (time.perf_counter() - t0)
            explanation = None
            if args.explain and hits:
                if reranker is None:
                    from ..scoring import MaxSimReranker

                    reranker = MaxSimReranker(encoder=store.encoder)
                explanation = reranker.explain(query, hits[0].text)
            if args.json:
                payload: dict[str, Any] = {
                    "query": query,
                    "mode": mode,
                    "k": args.k,
                    "latency_ms": round(ms, 2),
                    "engine_start_s": round(engine_s, 2),
                    "results": [
                        {
                            "rank": r,
                            "id": h.id,
                            "score": h.score,
                            "text": h.text,
                            "metadata": h.metadata,
                        }
                        for r, h in enumerate(hits, 1)
                    ],
                }
                if explanation is not None:
                    payload["explain"] = {
                        "id": hits[0].id,
                        "score": explanation.score,
                        "matches": [m._asdict() for m in explanation.matches],
                    }
                print(json.dumps(payload, ensure_ascii=False), file=out, flush=True)
                continue
            header = f"{mode} search, {len(hits)} results in {ms:.0f} ms: {query!r}"
            lines = ([""] if n else []) + [header, _table(hits)]
            if explanation is not None:
                lines += _explain_lines(hits[0], explanation)
            print("\n".join(lines), file=out, flush=True)
    finally:
        store.close()
    return 0
