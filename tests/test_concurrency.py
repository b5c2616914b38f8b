"""Concurrency on one engine: async methods never block the event loop; threads and tasks
together give the serial results.

The loop check runs a ticker task (a tick every 5 ms) beside an async call whose CPU work is
mostly tokenisation (long texts, truncated to the model's 256 tokens) and records the longest
gap between ticks. Tokenising on the loop stalls it for the whole batch (hundreds of ms here);
in a worker thread the ticker keeps ticking. The bound, 20 ticks, is generous: it is a check of
blocking, not of speed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vllm_retrieval import Encoder
from vllm_retrieval.scoring import MaxSimReranker
from vllm_retrieval.store import MultiVectorStore

AsyncCall = Callable[[], Coroutine[Any, Any, Any]]
TICK = 0.005
BOUND = 20 * TICK
_WORDS = [
    "statins",
    "lower",
    "cholesterol",
    "in",
    "patients",
    "with",
    "cardiovascular",
    "disease",
    "and",
    "diabetes",
]


def long_text(i: int, words: int) -> str:
    return f"{i} " + " ".join(_WORDS[(i + j) % len(_WORDS)] for j in range(words))


LONG_DOCS = [long_text(i, 2500) for i in range(32)]
LONG_QUERY = long_text(7, 40_000)


async def _longest_gap(work: Awaitable[Any]) -> tuple[Any, float]:
    """Await ``work`` while a ticker measures the longest stall of the event loop."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = loop.time()
        while not done:
            await asyncio.sleep(TICK)
            now = loop.time()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(TICK)  # the ticker is running before the work starts
    try:
        result = await work
    finally:
        done = True
        await task
    return result, max(gaps)


def longest_gap(make: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    async def main() -> tuple[Any, float]:
        return await _longest_gap(make())

    return asyncio.run(main())


def test_aencode_does_not_block_the_event_loop(encoder: Encoder) -> None:
    encoder.encode(LONG_DOCS[:1])  # warm: the first call may import or compile things
    result, gap = longest_gap(lambda: encoder.aencode(LONG_DOCS))
    assert len(result) == len(LONG_DOCS) and all(len(e.token_ids) == 256 for e in result)
    assert gap < BOUND, f"the event loop stalled for {gap * 1000:.0f} ms"


@pytest.fixture(scope="module")
def small_store(encoder: Encoder) -> Any:
    store = MultiVectorStore(location=":memory:", encoder=encoder)
    store.add_texts([long_text(i, 40) for i in range(20)], ids=list(range(20)))
    yield store
    store.close()


def _async_adapter_calls(
    encoder: Encoder, store: Any
) -> dict[str, Callable[[], Coroutine[Any, Any, Any]]]:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from vllm_retrieval.langchain import VLLMEmbeddings, VLLMMaxSimReranker
    from vllm_retrieval.langchain import VLLMMultiVectorRetriever as LCRetriever
    from vllm_retrieval.llama_index import VLLMEmbedding, VLLMMaxSimRerank
    from vllm_retrieval.llama_index import VLLMMultiVectorRetriever as LIRetriever

    lc_docs = [Document(page_content=t) for t in LONG_DOCS]
    li_nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in LONG_DOCS]
    lc_emb, li_emb = VLLMEmbeddings(encoder=encoder), VLLMEmbedding(encoder=encoder)
    lc_rerank = VLLMMaxSimReranker(encoder=encoder, top_n=3)
    li_rerank = VLLMMaxSimRerank(encoder=encoder, top_n=3)
    lc_ret, li_ret = LCRetriever(store=store, k=3), LIRetriever(store, similarity_top_k=3)
    bundle = QueryBundle(LONG_QUERY)
    return {
        "core arerank": lambda: MaxSimReranker(encoder=encoder).arerank("q", LONG_DOCS),
        "langchain aembed_documents": lambda: lc_emb.aembed_documents(LONG_DOCS),
        "langchain acompress_documents": lambda: lc_rerank.acompress_documents(lc_docs, "q"),
        "langchain retriever ainvoke": lambda: lc_ret.ainvoke(LONG_QUERY),
        "llama_index aget_text_embedding_batch": lambda: li_emb.aget_text_embedding_batch(
            LONG_DOCS
        ),
        "llama_index apostprocess_nodes": lambda: li_rerank.apostprocess_nodes(
            li_nodes, query_bundle=QueryBundle("q")
        ),
        "llama_index aretrieve": lambda: li_ret.aretrieve(bundle),
    }


@pytest.mark.parametrize(
    "name",
    [
        "core arerank",
        "langchain aembed_documents",
        "langchain acompress_documents",
        "langchain retriever ainvoke",
        "llama_index aget_text_embedding_batch",
        "llama_index apostprocess_nodes",
        "llama_index aretrieve",
    ],
)
def test_async_adapters_do_not_block_the_event_loop(
    encoder: Encoder, small_store: Any, name: str
) -> None:
    calls = _async_adapter_calls(encoder, small_store)
    asyncio.run(calls[name]())  # warm: imports and first-use set-up are not measured
    result, gap = longest_gap(calls[name])
    assert result is not None
    assert gap < BOUND, f"{name}: the event loop stalled for {gap * 1000:.0f} ms"


# -- threads + tasks vs serial (a small run of benchmarks/concurrency.py) ---------------------


def _benchmark() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "concurrency.py"
    spec = importlib.util.spec_from_file_location("bench_concurrency", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_threads_and_tasks_give_the_serial_results(encoder: Encoder) -> None:
    """Queries, documents, reranks and short-lived Encoder copies (opened, used and closed
    while the others run) from 4 threads and 16 tasks at once: every result equals its
    serial twin, nothing errors (a closed copy never stops the shared engine), nothing hangs."""
    bench = _benchmark()
    report = bench.run(
        encoder, MaxSimReranker(encoder=encoder), threads=4, tasks=16, calls=5, timeout=600
    )
    assert not report.hung, f"no progress within the timeout (deadlock?): {report.hung}"
    assert not report.errors, report.errors
    assert report.calls == (4 + 16) * 5
    assert report.mismatches == 0, f"max |diff| vs serial {report.max_diff:.3g}"
    assert {k for k, v in report.latencies.items() if v} == set(bench.KINDS)
