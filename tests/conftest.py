"""Shared fixtures: ONE real vLLM CPU engine (packaged all-MiniLM-L6-v2) per test session."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The session engine runs float32: the parity tests compare with float32 references
# (sentence-transformers, transformers) at cosine >= 0.9999. The "auto" default (bfloat16 on
# CPUs with bf16 units) has its own test in test_encoder.py.
os.environ.setdefault("VLLM_RETRIEVAL_DTYPE", "float32")

import pytest

from vllm_retrieval import Encoder, shutdown_engines
from vllm_retrieval.store import MultiVectorStore

REPO = Path(__file__).resolve().parents[1]
SCIFACT = Path(os.environ.get("SCIFACT_DIR", REPO.parent / "shared" / "data" / "scifact"))


@pytest.fixture(scope="session")
def encoder() -> Iterator[Encoder]:
    """The packaged model on the in-process vLLM CPU engine, shared by the whole session."""
    enc = Encoder().start()
    yield enc
    shutdown_engines()  # stop engine processes while pytest's streams are still open


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    if not (SCIFACT / "corpus.jsonl").is_file():
        # ../shared exists on the project's machines and in CI, not on a user's clone.
        pytest.skip(f"SciFact data not found at {SCIFACT} (set SCIFACT_DIR to a BEIR copy)")
    return SCIFACT


@pytest.fixture(scope="session")
def scifact_sample(scifact_dir: Path) -> dict[str, object]:
    """A small real corpus: 40 training claims with their relevant abstracts + 160 others."""
    qrels: dict[str, set[str]] = {}
    with (scifact_dir / "qrels" / "train.tsv").open() as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, set()).add(did)
    queries = {}
    with (scifact_dir / "queries.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]
    chosen = sorted(queries, key=int)[:40]
    wanted = {d for q in chosen for d in qrels[q]}
    corpus: dict[str, str] = {}
    others: dict[str, str] = {}
    with (scifact_dir / "corpus.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            text = (row.get("title", "") + " " + row["text"]).strip()
            if row["_id"] in wanted:
                corpus[row["_id"]] = text
            elif len(others) < 160:
                others[row["_id"]] = text
    corpus.update(others)
    return {
        "queries": {q: queries[q] for q in chosen},
        "qrels": {q: qrels[q] for q in chosen},
        "corpus": corpus,
    }


StoreFactory = Callable[..., MultiVectorStore]


@pytest.fixture(params=["edge", "client"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Open (or reopen) a store of the parametrised backend in this test's tmp dir."""
    opened: list[MultiVectorStore] = []

    def factory(*, reopen: bool = False, **kw: Any) -> MultiVectorStore:
        if request.param == "edge":
            target: dict[str, Any] = {"path": tmp_path / "idx"}
        else:
            target = {"client_path": tmp_path / "qdrant_local", "collection": "docs"}
        store = (MultiVectorStore.open if reopen else MultiVectorStore)(**target, **kw)
        opened.append(store)
        return store

    factory.backend = request.param  # type: ignore[attr-defined]
    yield factory
    for s in opened:
        s.close()


class EnginePasses:
    """How many texts the shared engine ran a forward pass on (queries included)."""

    def __init__(self) -> None:
        self.sequences = 0

    def clear(self) -> None:
        self.sequences = 0


@pytest.fixture
def engine_passes(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> EnginePasses:
    """Counts the sequences submitted to the session engine (every Encoder with the same
    settings shares it) while the test runs."""
    engine = encoder.engine
    counter = EnginePasses()
    submit = engine.submit

    def counting(ids: Any) -> Any:
        counter.sequences += len(ids)
        return submit(ids)

    monkeypatch.setattr(engine, "submit", counting)
    _ = encoder.dimension  # learned once, before counting
    return counter
