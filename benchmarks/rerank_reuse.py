"""MaxSim reranking of candidates that come from the store: encode them again, or score their
stored token vectors? Both frameworks' rerankers, on SciFact training claims.

Usage::

    .venv/bin/python benchmarks/rerank_reuse.py [--data ../shared/data/scifact]
        [--claims 20] [--candidates 50] [--docs 1000] [--dtype float32|bfloat16] [--json]

A store holds ``--docs`` SciFact abstracts (``title + " " + text``: those judged relevant for
the claims, then others in corpus order). For each of the first ``--claims`` training claims,
the ``--candidates`` best abstracts by dense cosine come back through each framework's
retriever (LangChain ``Document``s with ``Document.id``, LlamaIndex nodes with their
``node_id``); each framework's MaxSim reranker then ranks them twice: with ``encoder=``
(every candidate encoded again, as any reranker would) and with ``store=`` (the stored token
vectors; only the query is encoded). Rankings must be identical; the figures are wall times
per claim (median and mean) and their ratio, with how many texts each run encoded.
Exits 0 with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integrations"))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"


def load(data: Path, n_claims: int, n_docs: int) -> tuple[list[str], dict[str, str]]:
    """(the first ``n_claims`` judged training claims, ``n_docs`` abstracts by id)."""
    qrels: dict[str, set[str]] = {}
    with (data / "qrels" / "train.tsv").open() as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, set()).add(did)
    queries: dict[str, str] = {}
    with (data / "queries.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]
    chosen = sorted(queries, key=int)[:n_claims]
    wanted = {d for q in chosen for d in qrels[q]}
    relevant: dict[str, str] = {}
    others: dict[str, str] = {}
    with (data / "corpus.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            text = (row.get("title", "") + " " + row["text"]).strip()
            if row["_id"] in wanted:
                relevant[row["_id"]] = text
            elif len(others) < n_docs:
                others[row["_id"]] = text
    corpus = dict(relevant)
    for did, text in others.items():
        if len(corpus) >= max(n_docs, len(relevant)):
            break
        corpus[did] = text
    return [queries[q] for q in chosen], corpus


class Counter:
    """Texts the engine runs a forward pass on."""

    def __init__(self, engine: Any) -> None:
        self.sequences = 0
        submit = engine.submit

        def counting(ids: Any) -> Any:
            self.sequences += len(ids)
            return submit(ids)

        engine.submit = counting


def _ms(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": 1000 * statistics.median(seconds),
        "mean_ms": 1000 * statistics.fmean(seconds),
        "total_s": sum(seconds),
    }


def measure(
    name: str,
    claims: list[str],
    candidates: list[list[Any]],
    plain: Any,
    reuse: Any,
    ranked: Any,
    counter: Counter,
) -> dict[str, Any]:
    """Time ``plain`` and ``reuse`` on every claim (alternating which runs first)."""
    ranked(plain, candidates[0], claims[0])  # warm-up: both paths, outside the figures
    ranked(reuse, candidates[0], claims[0])
    times: dict[str, list[float]] = {"encode": [], "stored": []}
    texts = {"encode": 0, "stored": 0}
    identical, max_delta = 0, 0.0
    for i, (claim, cands) in enumerate(zip(claims, candidates, strict=True)):
        order = [("encode", plain), ("stored", reuse)]
        results: dict[str, list[tuple[str, float]]] = {}
        for label, reranker in order if i % 2 == 0 else order[::-1]:
            before = counter.sequences
            start = time.perf_counter()
            results[label] = ranked(reranker, cands, claim)
            times[label].append(time.perf_counter() - start)
            texts[label] += counter.sequences - before
        a, b = results["encode"], results["stored"]
        identical += [x for x, _ in a] == [x for x, _ in b]
        max_delta = max(max_delta, max(abs(x[1] - y[1]) for x, y in zip(a, b, strict=True)))
    enc, sto = _ms(times["encode"]), _ms(times["stored"])
    return {
        "framework": name,
        "encode": enc,
        "stored": sto,
        "speedup_p50": enc["p50_ms"] / sto["p50_ms"],
        "speedup_total": enc["total_s"] / sto["total_s"],
        "identical_rankings": identical,
        "claims": len(claims),
        "max_abs_score_delta": max_delta,
        "texts_encoded": texts,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=ap_formatter())
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--claims", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--dtype", default=None, help="engine dtype (default: the Encoder's)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if not (args.data / "corpus.jsonl").is_file():
        print(f"SciFact not found at {args.data}: nothing to measure (pass --data)")
        return 0

    from llama_index.core.schema import QueryBundle

    from vllm_retrieval import Encoder, shutdown_engines
    from vllm_retrieval.langchain import VLLMMaxSimReranker, VLLMMultiVectorRetriever
    from vllm_retrieval.llama_index import VLLMMaxSimRerank
    from vllm_retrieval.llama_index import VLLMMultiVectorRetriever as NodeRetriever
    from vllm_retrieval.store import MultiVectorStore

    claims, corpus = load(args.data, args.claims, args.docs)
    encoder = Encoder(dtype=args.dtype).start()
    counter = Counter(encoder.engine)
    with tempfile.TemporaryDirectory() as tmp:
        store = MultiVectorStore(path=Path(tmp) / "idx", encoder=encoder)
        start = time.perf_counter()
        store.add_texts(list(corpus.values()), ids=list(corpus))
        index_s = time.perf_counter() - start
        k = args.candidates

        docs = [VLLMMultiVectorRetriever(store=store, k=k, mode="dense").invoke(c) for c in claims]
        nodes = [NodeRetriever(store, similarity_top_k=k, mode="dense").retrieve(c) for c in claims]

        def lc_ranked(reranker: Any, cands: Any, claim: str) -> list[tuple[str, float]]:
            out = reranker.compress_documents(cands, claim)
            return [(d.id, d.metadata["relevance_score"]) for d in out]

        def li_ranked(reranker: Any, cands: Any, claim: str) -> list[tuple[str, float]]:
            out = reranker.postprocess_nodes(cands, QueryBundle(claim))
            return [(n.node.node_id, float(n.score)) for n in out]

        fetch = []  # the core read the stored path pays for: token vectors of 50 documents
        for hits in docs:
            start = time.perf_counter()
            store.get_tokens([d.id for d in hits])
            fetch.append(time.perf_counter() - start)
        rows = [
            measure(
                "langchain VLLMMaxSimReranker",
                claims,
                docs,
                VLLMMaxSimReranker(encoder=encoder, top_n=None),
                VLLMMaxSimReranker(store=store, top_n=None),
                lc_ranked,
                counter,
            ),
            measure(
                "llama_index VLLMMaxSimRerank",
                claims,
                nodes,
                VLLMMaxSimRerank(encoder=encoder, top_n=None),
                VLLMMaxSimRerank(store=store, top_n=None),
                li_ranked,
                counter,
            ),
        ]
        store.close()
    report = {
        "claims": len(claims),
        "candidates": k,
        "store_docs": len(corpus),
        "index_s": index_s,
        "model": encoder.model_path,
        "dtype": encoder.engine_settings.dtype,
        "store_get_tokens": _ms(fetch),
        "cpu": _cpu(),
        "results": rows,
    }
    shutdown_engines()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['claims']} SciFact train claims x {k} candidates (dense top-{k} of a "
        f"{len(corpus)}-abstract store, indexed in {index_s:.1f} s); dtype {report['dtype']}; "
        f"{report['cpu']}"
    )
    head = (
        f"{'reranker':<30} {'encode p50/mean ms':>19} {'stored p50/mean ms':>19} "
        f"{'speed-up':>9} {'same ranking':>12} {'max |dscore|':>12} {'texts encoded':>14}"
    )
    print(head)
    for r in rows:
        e, s = r["encode"], r["stored"]
        print(
            f"{r['framework']:<30} {e['p50_ms']:>9.1f}/{e['mean_ms']:<9.1f}"
            f"{s['p50_ms']:>9.1f}/{s['mean_ms']:<9.1f} {r['speedup_p50']:>8.1f}x "
            f"{r['identical_rankings']:>6}/{r['claims']:<5} {r['max_abs_score_delta']:>12.2e} "
            f"{r['texts_encoded']['encode']:>6} vs {r['texts_encoded']['stored']:<4}"
        )
    fetch_ms = report["store_get_tokens"]
    print(
        f"of the stored path, MultiVectorStore.get_tokens of {k} documents takes "
        f"{fetch_ms['p50_ms']:.1f} ms (p50)"
    )
    return 0


def ap_formatter() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs"


if __name__ == "__main__":
    raise SystemExit(main())
