"""Evaluation on BEIR-style data: loading, (resumable) indexing, runs and IR metrics.

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl``
(``{"_id", "text"}``) and ``qrels/<split>.tsv`` (``query-id  corpus-id  score`` with a header).
Documents are indexed as ``title + " " + text`` (the MTEB / sentence-transformers convention),
with the title kept as metadata. Metrics come from ``ir-measures`` (nDCG@10, R@100, RR@10).

Used by ``vllm-retrieval eval``, ``benchmarks/st_reference.py`` and the cookbook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import require

if TYPE_CHECKING:
    from .store import MultiVectorStore

__all__ = [
    "MEASURES",
    "BeirData",
    "beir_documents",
    "evaluate_run",
    "index_documents",
    "load_beir",
    "load_qrels",
    "missing_ids",
    "run_queries",
    "sentence_transformers_dense_run",
]

#: Reported measures, by their ir-measures names, and how they are printed.
MEASURES: dict[str, str] = {"nDCG@10": "nDCG@10", "R@100": "recall@100", "RR@10": "MRR@10"}

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


@dataclass
class BeirData:
    """A BEIR dataset: corpus (id -> (title, text)), queries (id -> text) and judgements."""

    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: Qrels

    def doc_text(self, doc_id: str) -> str:
        """The indexed text of a document: ``title + " " + text``, stripped."""
        title, text = self.corpus[doc_id]
        return (title + " " + text).strip()

    def subset(
        self, n_queries: int | None = None, extra_docs: int | None = None, seed: int = 0
    ) -> BeirData:
        """The first ``n_queries`` judged queries, their judged documents and ``extra_docs``
        other documents (drawn with ``seed``); ``None`` keeps all queries / documents."""
        import random

        qids = list(self.queries)[:n_queries] if n_queries is not None else list(self.queries)
        qrels = {q: self.qrels[q] for q in qids}
        if extra_docs is None:
            corpus = dict(self.corpus)
        else:
            judged = {d for q in qids for d in qrels[q] if d in self.corpus}
            others = sorted(set(self.corpus) - judged)
            rng = random.Random(seed)
            picked = set(rng.sample(others, min(extra_docs, len(others)))) | judged
            corpus = {d: v for d, v in self.corpus.items() if d in picked}
        return BeirData(corpus, {q: self.queries[q] for q in qids}, qrels)


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object per line")
            yield row


def load_qrels(path: str | Path) -> Qrels:
    """A qrels file: BEIR TSV (``query-id corpus-id score``, header optional) or TREC
    (``qid 0 docid rel``), tab- or space-separated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no qrels file at {path}")
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 3:
                qid, did, rel = parts
            elif len(parts) == 4:
                qid, _, did, rel = parts
            else:
                raise ValueError(f"{path}:{n}: expected 3 (BEIR) or 4 (TREC) columns")
            try:
                score = int(float(rel))
            except ValueError:
                if n == 1:  # header line
                    continue
                raise ValueError(f"{path}:{n}: relevance {rel!r} is not a number") from None
            qrels.setdefault(qid, {})[did] = score
    if not qrels:
        raise ValueError(f"{path} holds no judgements")
    return qrels


def load_beir(
    folder: str | Path, split: str = "test", qrels_file: str | Path | None = None
) -> BeirData:
    """Load a BEIR folder; only queries with judgements in the split are kept."""
    folder = Path(folder)
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    for p in (corpus_path, queries_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found (is {folder} a BEIR folder?)")
    qpath = Path(qrels_file) if qrels_file is not None else folder / "qrels" / f"{split}.tsv"
    qrels = load_qrels(qpath)
    corpus: dict[str, tuple[str, str]] = {}
    for row in _jsonl(corpus_path):
        if "_id" not in row or "text" not in row:
            raise ValueError(f"{corpus_path}: every row needs '_id' and 'text'")
        corpus[str(row["_id"])] = (str(row.get("title") or ""), str(row["text"]))
    queries = {
        str(row["_id"]): str(row["text"])
        for row in _jsonl(queries_path)
        if str(row.get("_id")) in qrels
    }
    qrels = {q: r for q, r in qrels.items() if q in queries}
    if not queries:
        raise ValueError(f"no query in {queries_path} has judgements in {qpath}")
    return BeirData(corpus, queries, qrels)


# -- indexing ----------------------------------------------------------------------------------


def missing_ids(store: MultiVectorStore, ids: Sequence[str], batch: int = 1024) -> list[str]:
    """The ids of ``ids`` that are not in the store yet (for resumable indexing)."""
    out: list[str] = []
    for s in range(0, len(ids), batch):
        part = list(ids[s : s + batch])
        present = {str(h.id) for h in store.get(part)}
        out.extend(i for i in part if i not in present)
    return out


def index_documents(
    store: MultiVectorStore,
    docs: Iterable[tuple[str, str, Mapping[str, Any]]],
    *,
    chunk: int | None = None,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int, float]:
    """Add ``(id, text, metadata)`` documents that the store does not hold yet.

    Resumable: ids already stored are skipped, and :meth:`MultiVectorStore.add_texts` writes
    the store's ``batch_size`` documents at a time (each batch durable once written, the
    encoding of the next one overlapping the write), so an interrupted run loses at most the
    batch in flight. ``chunk`` documents go to each ``add_texts`` call (default: all of them,
    one call, one progress bar); ``on_batch`` is called after each call with its size.
    After adding, the store is optimised (:meth:`MultiVectorStore.optimize`, which builds
    the token index once the store holds 1,000 documents, and BM25 — also for a reused store
    written before BM25 existed). Returns ``(added, skipped, encode_seconds)``.
    """
    rows = list(docs)
    by_id: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for doc_id, text, meta in rows:
        if doc_id in by_id:
            raise ValueError(f"id {doc_id!r} appears more than once in the input")
        by_id[doc_id] = (text, meta)
    todo = missing_ids(store, list(by_id))
    skipped = len(by_id) - len(todo)
    step = max(chunk or len(todo), 1)
    seconds = 0.0
    for s in range(0, len(todo), step):
        part = todo[s : s + step]
        t0 = time.perf_counter()
        store.add_texts(
            [by_id[i][0] for i in part],
            [dict(by_id[i][1]) for i in part],
            part,
            show_progress=progress,
        )
        seconds += time.perf_counter() - t0
        if on_batch is not None:
            on_batch(len(part))
    if todo or store.bm25 is None:
        # indexes: the token index once the store holds 1,000 documents, BM25's avg_len
        store.optimize()
    return len(todo), skipped, seconds


def beir_documents(data: BeirData) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(id, text, metadata)`` for every document of a BEIR corpus."""
    for doc_id, (title, _) in data.corpus.items():
        text = data.doc_text(doc_id)
        if text:
            yield doc_id, text, {"title": title} if title else {}


# -- searching and scoring ---------------------------------------------------------------------


def run_queries(
    store: MultiVectorStore,
    queries: Mapping[str, str],
    modes: Sequence[str],
    *,
    k: int = 100,
    candidates: int = 200,
    encoded: tuple[Any, list[Any]] | None = None,
    fusion: str | None = None,
    fuse: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
) -> tuple[dict[str, tuple[Run, float]], float]:
    """Search every query in every mode.

    Queries are encoded once (batched; pass ``encoded=(dense, tokens)`` to reuse an encoding)
    and searched per mode with :meth:`MultiVectorStore.search_encoded`, with the query text
    (for BM25); ``fusion``/``fuse``/``weights`` apply to the ``fusion`` mode (``None``: the
    store's defaults). Returns ``({mode: (run, mean search ms per query)}, query encode
    seconds)``.
    """
    qids = list(queries)
    t0 = time.perf_counter()
    if encoded is None:
        encoded = store.encoder.encode_queries([queries[q] for q in qids])
    enc_s = time.perf_counter() - t0
    dense, tokens = encoded
    out: dict[str, tuple[Run, float]] = {}
    for mode in modes:
        run: Run = {}
        t0 = time.perf_counter()
        extra: dict[str, Any] = (
            {"fusion": fusion, "fuse": fuse, "weights": weights} if mode == "fusion" else {}
        )
        for i, qid in enumerate(qids):
            hits = store.search_encoded(
                dense[i],
                tokens[i],
                k,
                mode=mode,
                candidates=candidates,
                text=queries[qid],
                **extra,
            )
            run[qid] = {str(h.id): float(h.score) for h in hits}
        ms = 1000.0 * (time.perf_counter() - t0) / max(len(qids), 1)
        out[mode] = (run, ms)
    return out, enc_s


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], run: Run) -> dict[str, float]:
    """nDCG@10, R@100 and RR@10 (mean over judged queries) with ir-measures."""
    ir_measures = require("ir_measures", "eval")
    measures = [ir_measures.parse_measure(m) for m in MEASURES]
    judged = {q: dict(r) for q, r in qrels.items()}
    full_run = {q: run.get(q, {}) for q in judged}
    agg = ir_measures.calc_aggregate(measures, judged, full_run)
    return {str(m): float(agg[m]) for m in measures}


def sentence_transformers_dense_run(
    data: BeirData, model: str | None = None, *, k: int = 100, batch_size: int = 32
) -> Run:
    """The reference run: sentence-transformers dense vectors and exact cosine top-``k``.

    ``model`` defaults to the packaged all-MiniLM-L6-v2 folder. Documents are encoded as
    :meth:`BeirData.doc_text` (the same text the store indexes). Needs ``sentence-transformers``
    (the ``dev`` extra).
    """
    import numpy as np

    from .encoding import resolve_model_path

    st = require("sentence_transformers", "dev")
    m = st.SentenceTransformer(resolve_model_path(model), device="cpu")
    doc_ids = list(data.corpus)
    docs = m.encode(
        [data.doc_text(d) for d in doc_ids],
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    qids = list(data.queries)
    qs = m.encode(
        [data.queries[q] for q in qids],
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    scores = np.asarray(qs, dtype=np.float32) @ np.asarray(docs, dtype=np.float32).T
    run: Run = {}
    for i, qid in enumerate(qids):
        top = np.argsort(-scores[i], kind="stable")[:k]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in top}
    return run
