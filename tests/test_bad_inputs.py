# ruff: noqa: E501  (the table keeps one case per line)
"""The bad-inputs table: every bad input gets a clear, typed error, and nothing breaks.

One parametrised test runs every row of :data:`CASES` against the real parts (the session's
vLLM CPU engine, a real Qdrant Edge store, both frameworks' adapters, the CLI in-process) and
checks the error's type and message. After each row the engine still encodes and the store
still answers, so no bad input crashes the engine or corrupts the store.

The README's "Reliability" section lists this table; ``test_readme_lists_the_table`` keeps the
two in step (``python tests/test_bad_inputs.py`` prints the Markdown rows).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_retrieval import (
    Encoder,
    MultiVectorStore,
    PackedDocs,
    RemoteEngineError,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    maxsim,
    maxsim_topk,
    pack,
)

README = Path(__file__).resolve().parent.parent / "README.md"
DOCS = ["Paris is the capital of France.", "The mitochondria is the powerhouse of the cell."]


class CliExit(Exception):
    """The CLI ended with a non-zero exit status (argparse usage error or a reported error)."""


@dataclass(frozen=True)
class Case:
    part: str
    what: str
    call: Callable[[Any], object]
    error: type[BaseException]
    match: str

    @property
    def id(self) -> str:
        return f"{self.part}: {self.what}"


class Ctx:
    """What the rows act on: the session encoder, a small store, adapters, a temp dir."""

    def __init__(self, encoder: Encoder, root: Path) -> None:
        self.encoder = encoder
        self.root = root
        self.store = MultiVectorStore(root / "store", encoder=encoder)
        self.store.add_texts(DOCS, ids=["a", "b"])
        self.q = np.ones((3, 4), dtype=np.float32)
        self.d = np.ones((5, 4), dtype=np.float32)

    def fresh(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def reopen(self, path: Path, **settings: Any) -> None:
        """Create a plain store at ``path`` and reopen it with ``settings``."""
        MultiVectorStore(path, dim=4).close()
        MultiVectorStore.open(path, **settings).close()

    def closed_store(self) -> MultiVectorStore:
        store = MultiVectorStore(self.root / "closed", encoder=self.encoder)
        store.close()
        return store

    def other_model_store(self) -> MultiVectorStore:
        path = self.root / "other-model"
        if not path.exists():
            MultiVectorStore(path, encoder=self.encoder).close()
        other = Encoder(model=self.encoder.model, query_prefix="query: ")
        return MultiVectorStore(path, encoder=other)

    def png(self) -> Path:
        from PIL import Image

        path = self.root / "red.png"
        Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
        return path

    def not_a_store(self) -> MultiVectorStore:
        path = self.fresh("junk")
        (path / "notes.txt").write_text("not a store")
        return MultiVectorStore.open(path, encoder=self.encoder)

    def langchain_store(self) -> Any:
        from vllm_retrieval.langchain import VLLMMultiVectorStore

        return VLLMMultiVectorStore(store=self.store)

    def cli(self, *argv: str) -> None:
        from vllm_retrieval.cli import main

        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        if code:
            raise CliExit(f"exit status {code}")


def _nan(shape: tuple[int, int]) -> np.ndarray:
    a = np.ones(shape, dtype=np.float32)
    a[0, 0] = math.nan
    return a


def _lc(name: str) -> Any:
    import vllm_retrieval.langchain as lc

    return getattr(lc, name)


def _li(name: str) -> Any:
    import vllm_retrieval.llama_index as li

    return getattr(li, name)


CASES: list[Case] = [
    # -- Encoder ---------------------------------------------------------------------------
    Case("Encoder", "a str where a list of texts is due", lambda c: c.encoder.encode_documents("abc"), TypeError, "list"),
    Case("Encoder", "None among the texts", lambda c: c.encoder.encode_documents(["ok", None]), TypeError, "None|str"),
    Case("Encoder", "an int among the texts", lambda c: c.encoder.encode_documents(["ok", 7]), TypeError, "str"),
    Case("Encoder", "bytes as the query", lambda c: c.encoder.embed_query(b"abc"), TypeError, "str"),
    Case("Encoder", "a list as the query", lambda c: c.encoder.embed_query(["abc"]), TypeError, "str"),
    Case("Encoder", "batch_size=0", lambda c: Encoder(batch_size=0), ValueError, "greater than 0"),
    Case("Encoder", "an unknown setting", lambda c: Encoder(bogus=1), ValueError, "extra"),
    Case("Encoder", "max_length above the model's limit", lambda c: Encoder(max_length=10**6), ValueError, "exceeds the model's limit"),
    Case("Encoder", "a model directory without config.json", lambda c: Encoder(model=str(c.fresh("empty-model"))), ValueError, r"config\.json"),
    Case("Encoder", "an unknown pooling", lambda c: Encoder(pooling="median"), ValueError, "pooling"),
    Case("Encoder", "an image for a text-only model", lambda c: c.encoder.encode_images([c.png()]), ValueError, "texts only"),
    Case("Encoder", "an array where an image is due", lambda c: c.encoder.encode_images([np.zeros((8, 8, 3), np.uint8)]), TypeError, "PIL image"),
    Case("Encoder", "a server that is not running", lambda c: Encoder(base_url="http://127.0.0.1:9", timeout=5).embed_query("x"), RemoteEngineError, "127.0.0.1:9"),
    # -- MaxSim ----------------------------------------------------------------------------
    Case("MaxSim", "query and document dims differ", lambda c: maxsim(c.q, [np.ones((2, 5), np.float32)]), ValueError, "dimension mismatch"),
    Case("MaxSim", "a query with no token", lambda c: maxsim(c.q[:0], [c.d]), ValueError, "no token vectors"),
    Case("MaxSim", "a 1-D query", lambda c: maxsim(np.ones(4, np.float32), [c.d]), ValueError, "2-D"),
    Case("MaxSim", "NaN in the query", lambda c: maxsim(_nan((3, 4)), [c.d]), ValueError, "NaN or inf"),
    Case("MaxSim", "NaN in a document", lambda c: maxsim(c.q, [c.d, _nan((2, 4))]), ValueError, "NaN or inf"),
    Case("MaxSim", "integer vectors", lambda c: maxsim(c.q, [np.ones((2, 4), np.int64)]), TypeError, "floating"),
    Case("MaxSim", "nested Python lists", lambda c: maxsim(c.q, [[[1.0] * 4]]), TypeError, "numpy array or a torch tensor"),
    Case("MaxSim", "top-k with k=0", lambda c: maxsim_topk(c.q, [c.d], k=0), ValueError, "positive"),
    Case("MaxSim", "offsets not ending at the token count", lambda c: PackedDocs(np.ones((4, 4), np.float32), np.array([0, 2, 3])), ValueError, r"offsets\[-1\]"),
    Case("MaxSim", "decreasing offsets", lambda c: PackedDocs(np.ones((4, 4), np.float32), np.array([0, 3, 2, 4])), ValueError, "non-decreasing"),
    Case("MaxSim", "pack of documents of two dims", lambda c: pack([c.d, np.ones((2, 5), np.float32)]), ValueError, "dim"),
    # -- store -----------------------------------------------------------------------------
    Case("store", "an unknown compression", lambda c: MultiVectorStore(c.fresh("s1") / "x", encoder=c.encoder, compression="zip"), ValueError, "unknown compression"),
    Case("store", "dim=0", lambda c: MultiVectorStore(c.fresh("s2") / "x", dim=0), ValueError, "dim must be a positive int"),
    Case("store", "batch_size=0", lambda c: MultiVectorStore(c.fresh("s3") / "x", dim=4, batch_size=0), ValueError, "batch_size"),
    Case("store", "pool_factor=0", lambda c: MultiVectorStore(c.fresh("s4") / "x", dim=4, pool_factor=0), ValueError, "pool_factor"),
    Case("store", "reopening with another pool_factor", lambda c: c.reopen(c.fresh("s5") / "x", pool_factor=2), StoreMismatchError, "pool_factor=1, not 2"),
    Case("store", "reduce_to=0", lambda c: MultiVectorStore(c.fresh("s6") / "x", dim=4, reduce_to=0), ValueError, "reduce_to must be"),
    Case("store", "reduce_to not below the vectors' width", lambda c: MultiVectorStore(c.fresh("s7") / "x", dim=4, reduce_to=4), ValueError, "below the vectors' width"),
    Case("store", "reopening with another reduce_to", lambda c: c.reopen(c.fresh("s8") / "x", reduce_to=2), StoreMismatchError, "not reduce_to=2"),
    Case("store", "reduce_to on a Qdrant server", lambda c: MultiVectorStore(location=":memory:", dim=4, reduce_to=2), StoreError, "embedded store"),
    Case("store", "opening a directory that is not a store", lambda c: c.not_a_store(), StoreCorruptError, "not a vllm-retrieval store"),
    Case("store", "opening a store that does not exist", lambda c: MultiVectorStore.open(c.root / "missing", encoder=c.encoder), FileNotFoundError, "missing"),
    Case("store", "an encoder with other settings", lambda c: c.other_model_store(), StoreMismatchError, "other encoder settings"),
    Case("store", "pre-encoded vectors of another dim", lambda c: c.store.add_encoded(["x"], np.ones((1, 8), np.float32), [np.ones((2, 8), np.float32)]), ValueError, "dim"),
    Case("store", "the same id twice in one call", lambda c: c.store.add_texts(["x", "y"], ids=["dup", "dup"]), ValueError, "dup"),
    Case("store", "fewer metadatas than texts", lambda c: c.store.add_texts(["x", "y"], metadatas=[{}]), ValueError, "metadata"),
    Case("store", "an empty text", lambda c: c.store.add_texts([""]), ValueError, "empty"),
    Case("store", "k=0", lambda c: c.store.search("capital", k=0), ValueError, "k must be"),
    Case("store", "an unknown mode", lambda c: c.store.search("capital", mode="sparse"), ValueError, "mode"),
    Case("store", "an unknown fusion", lambda c: c.store.search("capital", fusion="max"), ValueError, "fusion"),
    Case("store", "an unsupported filter operator", lambda c: c.store.search("capital", filter={"t": {"$regex": "a"}}), ValueError, r"\$regex"),
    Case("store", "weights for fewer lists than fused", lambda c: c.store.search("capital", fuse=["dense", "maxsim"], weights=[1.0]), ValueError, "weights"),
    Case("store", "NaN in pre-encoded tokens", lambda c: c.store.add_encoded(["x"], np.ones((1, 384), np.float32), [_nan((2, 384))]), ValueError, "NaN"),
    Case("store", "a call after close", lambda c: c.closed_store().search("capital"), StoreError, "closed"),
    # -- LangChain -------------------------------------------------------------------------
    Case("LangChain", "VLLMEmbeddings with an unknown setting", lambda c: _lc("VLLMEmbeddings")(bogus=1), ValueError, "extra"),
    Case("LangChain", "VLLMEmbeddings with batch_size=0", lambda c: _lc("VLLMEmbeddings")(batch_size=0), ValueError, "greater than 0"),
    Case("LangChain", "a retriever with k=0", lambda c: _lc("VLLMMultiVectorRetriever")(store=c.store, k=0), ValueError, "greater than 0"),
    Case("LangChain", "similarity_search with k=0", lambda c: c.langchain_store().similarity_search("capital", k=0), ValueError, "k must be"),
    Case("LangChain", "a reranker with top_n=0", lambda c: _lc("VLLMMaxSimReranker")(encoder=c.encoder, top_n=0), ValueError, "greater than 0"),
    # -- LlamaIndex ------------------------------------------------------------------------
    Case("LlamaIndex", "VLLMEmbedding with an unknown setting", lambda c: _li("VLLMEmbedding")(bogus=1), ValueError, "extra"),
    Case("LlamaIndex", "VLLMEmbedding with embed_batch_size=0", lambda c: _li("VLLMEmbedding")(embed_batch_size=0), ValueError, "greater than 0"),
    Case("LlamaIndex", "a retriever with similarity_top_k=0", lambda c: _li("VLLMMultiVectorRetriever")(store=c.store, similarity_top_k=0), ValueError, "similarity_top_k"),
    Case("LlamaIndex", "a reranker with top_n=0", lambda c: _li("VLLMMaxSimRerank")(encoder=c.encoder, top_n=0), ValueError, "greater than 0"),
    # -- CLI -------------------------------------------------------------------------------
    Case("CLI", "search without --index", lambda c: c.cli("search", "capital"), CliExit, "exit status 2"),
    Case("CLI", "search with an unknown mode", lambda c: c.cli("search", "--index", str(c.root / "store"), "--mode", "sparse", "q"), CliExit, "exit status 2"),
    Case("CLI", "search of an index that does not exist", lambda c: c.cli("search", "--index", str(c.root / "missing"), "q"), CliExit, "exit status"),
    Case("CLI", "index of a file that does not exist", lambda c: c.cli("index", str(c.root / "nope.txt"), "--index", str(c.root / "cli-idx")), CliExit, "exit status"),
    Case("CLI", "an unknown bench", lambda c: c.cli("bench", "nope"), CliExit, "exit status 2"),
]  # fmt: skip


@pytest.fixture(scope="module")
def ctx(encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    c = Ctx(encoder, tmp_path_factory.mktemp("bad-inputs"))
    yield c
    c.store.close()


def test_the_table_is_large_and_unique() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.part for case in CASES} == {
        "Encoder",
        "MaxSim",
        "store",
        "LangChain",
        "LlamaIndex",
        "CLI",
    }


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_typed_error(ctx: Ctx, case: Case) -> None:
    with pytest.raises(case.error, match=case.match):
        case.call(ctx)
    # Nothing broke: the engine still encodes and the store still answers the same.
    hits = ctx.store.search("capital of France", k=2, mode="dense")
    assert hits[0].id == "a"
    assert len(ctx.store) == 2


def markdown() -> str:
    rows = ["| Part | Bad input | Error |", "|---|---|---|"]
    rows += [f"| {c.part} | {c.what} | `{c.error.__name__}` |" for c in CASES]
    return "\n".join(rows)


def test_readme_lists_the_table() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [row for row in markdown().splitlines() if row not in text]
    assert not missing, "README's reliability table is stale; run python tests/test_bad_inputs.py"


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
