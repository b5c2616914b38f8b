"""The remote backend against a real vLLM CPU server: same results as the in-process engine.

A module fixture starts ``python -m vllm.entrypoints.openai.api_server`` with the packaged
model on 127.0.0.1 (a free port), waits for ``/health`` and kills it at the end, whatever
happens. The in-process side is the session ``encoder`` fixture (never a second engine).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from _vllm_server import free_port, kill, start_vllm, wait_healthy
from vllm_retrieval import Encoder
from vllm_retrieval.encoding import EncodedText, RemoteEngine, shutdown_remote_engines
from vllm_retrieval.encoding.profiles import default_model_path
from vllm_retrieval.scoring import remote_score

MODEL = default_model_path()
COS = 0.9999


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logdir = tempfile.TemporaryDirectory(prefix="vllm-remote-test-")
    log = Path(logdir.name) / "server.log"
    proc = start_vllm(MODEL, port, log)
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        shutdown_remote_engines()
        kill(proc)
        logdir.cleanup()


@pytest.fixture(scope="module")
def remote(server_url: str) -> Encoder:
    return Encoder(base_url=server_url, timeout=120.0).start()


@pytest.fixture(scope="module")
def texts(scifact_sample: dict[str, object]) -> list[str]:
    corpus = scifact_sample["corpus"]
    assert isinstance(corpus, dict)
    docs = [str(t) for t in list(corpus.values())[:24]]
    long = " ".join(docs[:3])  # far beyond the 256-token limit: truncated the same way
    return [*docs, long, "A short one.", "Ünïcödé — and emoji 🧬 too"]


@pytest.fixture(scope="module")
def queries(scifact_sample: dict[str, object]) -> list[str]:
    qs = scifact_sample["queries"]
    assert isinstance(qs, dict)
    return [str(q) for q in qs.values()]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_parity(local: list[EncodedText], remote: list[EncodedText]) -> None:
    assert len(local) == len(remote)
    for a, b in zip(local, remote, strict=True):
        assert a.token_ids == b.token_ids
        assert a.tokens.shape == b.tokens.shape and b.tokens.dtype == np.float32
        assert _cos(a.dense, b.dense) >= COS
        row_cos = (a.tokens * b.tokens).sum(axis=1)  # both L2-normalised
        assert float(row_cos.min()) >= COS


def _assert_identical(a: list[EncodedText], b: list[EncodedText]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.token_ids == y.token_ids
        np.testing.assert_array_equal(x.dense, y.dense)
        np.testing.assert_array_equal(x.tokens, y.tokens)


def test_discovery(remote: Encoder, server_url: str) -> None:
    engine = remote.engine
    assert isinstance(engine, RemoteEngine)
    info = engine.info
    assert info.root is not None and os.path.samefile(info.root, MODEL)
    assert info.max_model_len == 256
    assert info.dim == 384
    # One engine per (server, model, key, timeout) per process.
    assert Encoder(base_url=server_url + "/", timeout=120.0).engine is engine


def test_sync_parity_documents_and_queries(
    encoder: Encoder, remote: Encoder, texts: list[str], queries: list[str]
) -> None:
    _assert_parity(encoder.encode(texts), remote.encode(texts))
    _assert_parity(encoder.encode(queries, is_query=True), remote.encode(queries, is_query=True))
    dense_local, tokens_local = encoder.encode_documents(texts[:5])
    dense_remote, tokens_remote = remote.encode_documents(texts[:5])
    assert dense_remote.shape == dense_local.shape == (5, 384)
    assert float(np.min((dense_local * dense_remote).sum(axis=1))) >= COS
    assert [t.shape for t in tokens_remote] == [t.shape for t in tokens_local]


async def test_async_parity(
    encoder: Encoder, remote: Encoder, texts: list[str], queries: list[str]
) -> None:
    _assert_parity(await encoder.aencode(texts), await remote.aencode(texts))
    q_local = await encoder.aembed_query(queries[0])
    q_remote = await remote.aembed_query(queries[0])
    assert _cos(q_local, q_remote) >= COS


async def test_64_concurrent_async_calls_match_serial_calls(
    encoder: Encoder, remote: Encoder, queries: list[str], texts: list[str]
) -> None:
    pool = [*queries, *texts]
    inputs = [pool[i % len(pool)] + f" ({i})" for i in range(64)]
    serial = [(await remote.aencode([t], is_query=True))[0] for t in inputs]
    concurrent = await asyncio.gather(*(remote.aencode([t], is_query=True) for t in inputs))
    _assert_identical(serial, [c[0] for c in concurrent])
    _assert_parity(encoder.encode(inputs, is_query=True), serial)


def test_sync_submissions_from_threads_match(remote: Encoder, texts: list[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    serial = [remote.encode([t])[0] for t in texts[:12]]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda t: remote.encode([t])[0], texts[:12]))
    _assert_identical(serial, threaded)


def test_many_texts_in_one_call_are_split_and_kept_in_order(
    encoder: Encoder, server_url: str, texts: list[str]
) -> None:
    many = [f"{texts[i % len(texts)][:200]} #{i}" for i in range(150)]
    big = Encoder(base_url=server_url, timeout=120.0, batch_size=150)
    engine = big.remote_engine(max_batch_size=64)
    ids = big.token_ids(many, is_query=False)
    rows = engine.submit(ids).result(timeout=300)
    assert len(rows) == 150  # three requests of 64, 64 and 22 texts
    remote = [big._finish(i, r, is_query=False) for i, r in zip(ids, rows, strict=True)]
    _assert_parity(encoder.encode(many), remote)


def test_transfer_formats_agree(remote: Encoder, texts: list[str]) -> None:
    ids = remote.token_ids(texts[:6], is_query=False)
    results = {}
    for transfer in ("base64", "bytes", "json"):
        engine = remote.remote_engine(transfer=transfer)
        engine.wait_ready()
        results[transfer] = engine.submit(ids).result(timeout=120)
    for transfer in ("bytes", "json"):
        for a, b in zip(results["base64"], results[transfer], strict=True):
            np.testing.assert_array_equal(a, b)


def test_remote_score_agrees_with_local_maxsim(
    encoder: Encoder, remote: Encoder, texts: list[str], queries: list[str]
) -> None:
    docs = texts[:8]
    q = encoder.embed_query_tokens(queries[0])
    local = [float((q @ d.T).max(axis=1).sum()) for d in encoder.embed_documents_tokens(docs)]
    server = remote_score(remote, queries[0], docs)
    np.testing.assert_allclose(server, local, rtol=1e-4)
    assert int(np.argmax(server)) == int(np.argmax(local))
