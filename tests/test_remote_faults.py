"""Faults of the remote backend: every one is a typed RemoteEngineError within the timeout.

A small real HTTP server (stdlib ``http.server`` on 127.0.0.1, in a thread) plays a vLLM
server that answers 500s, stalls, malformed or truncated bodies, the wrong model or the wrong
task, refuses the key or dies; a real vLLM CPU server is killed in the middle of a run. Each
fault is asserted as its own subclass (unreachable, timeout, auth, model mismatch, malformed),
chosen by exception type and HTTP status. The HTTP clients (one per event loop) are checked
for leaks over 100 ``asyncio.run`` cycles. Every server here is stopped by the tests
themselves, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import io
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _vllm_server import free_port, kill, start_vllm, wait_healthy
from vllm_retrieval import Encoder
from vllm_retrieval.encoding import RemoteEngine, shutdown_remote_engines
from vllm_retrieval.encoding.inputs import LoadedItem
from vllm_retrieval.encoding.profiles import default_model_path
from vllm_retrieval.errors import (
    EngineError,
    RemoteAuthError,
    RemoteEngineError,
    RemoteMalformedResponseError,
    RemoteModelMismatchError,
    RemoteTimeoutError,
    RemoteUnreachableError,
)
from vllm_retrieval.scoring import remote_score

MODEL = default_model_path()
DIM = 8
IMAGE_PAD = 151655  # Qwen-VL's <|image_pad|>
SLACK = 10.0  # seconds on top of a timeout before a call counts as a hang


# -- a stub vLLM server ----------------------------------------------------------------------


class Stub:
    """What the stub server answers; tests flip ``mode`` and read ``calls``."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.model_id = MODEL
        self.api_key: str | None = None
        self.tokens: list[int] | None = None  # None: the real tokenizer's answer
        self.calls: list[str] = []
        self.pool_calls = 0
        self.batch_sizes: list[int] = []
        self.release = threading.Event()  # wakes stalled handlers at teardown
        self.tokenizer: Any = None
        self.echo_auth = False  # a 401 that quotes the Authorization header it got
        self.auth_seen: list[str | None] = []
        self.server: ThreadingHTTPServer | None = None
        self.connections: list[socket.socket] = []
        self.in_flight = threading.Event()  # set when a pooling request arrives
        self.processor: Any = None  # a VLM's image processor: image chat requests
        self.chats: list[dict[str, Any]] = []  # the chat requests (images decoded)

    def kill(self) -> None:
        """Die like a SIGKILLed server: stop listening and drop every open connection."""
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()  # new connections are refused from now on
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.release.set()


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode())

        def setup(self) -> None:
            super().setup()
            stub.connections.append(self.connection)

        def _authorised(self) -> bool:
            got = self.headers.get("Authorization")
            stub.auth_seen.append(got)
            if stub.api_key is None or got == f"Bearer {stub.api_key}":
                return True
            msg = f"Unauthorized: invalid {got}" if stub.echo_auth else "Unauthorized"
            self._json(401, {"error": {"message": msg, "code": 401}})
            return False

        def do_GET(self) -> None:
            stub.calls.append(f"GET {self.path}")
            if not self._authorised():
                return
            if self.path == "/v1/models":
                if stub.mode == "models_malformed":
                    self._send(200, b'{"object": "list", "data": [')
                    return
                card = {"id": stub.model_id, "root": stub.model_id, "max_model_len": 256}
                if stub.mode == "models_no_id":
                    del card["id"]
                self._json(200, {"object": "list", "data": [card]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(length) or b"{}")
            stub.calls.append(f"POST {self.path}")
            if not self._authorised():
                return
            if "messages" in req and self.path in ("/tokenize", "/pooling"):
                self._chat(req)
            elif self.path == "/tokenize":
                tokens = stub.tokens
                if tokens is None:
                    tokens = stub.tokenizer(req["prompt"], add_special_tokens=False)["input_ids"]
                self._json(200, {"count": len(tokens), "tokens": tokens, "max_model_len": 256})
            elif self.path == "/pooling":
                self._pooling(req)
            elif self.path == "/score":
                self._score(req)
            else:
                self._json(404, {"error": {"message": "not found"}})

        def _chat(self, req: dict[str, Any]) -> None:
            """An image chat request: vLLM's placeholder expansion, then one row per id."""
            from PIL import Image

            from vllm_retrieval.encoding.vlm import merged_grid

            if stub.mode == "untrusted":
                msg = (
                    "Chat template is passed with request, but --trust-request-chat-template "
                    "is not set. Refused request with untrusted chat template."
                )
                self._json(400, {"error": {"message": msg, "code": 400}})
                return
            parts = req["messages"][0]["content"]
            text = "".join(p["text"] for p in parts if p["type"] == "text")
            images = []
            for part in parts:
                if part["type"] == "image_url":
                    head, _, data = part["image_url"]["url"].partition(",")
                    assert head == "data:image/png;base64", head
                    images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
            stub.chats.append({**req, "text": text, "images": images})
            ids: list[int] = []
            pads = iter(images)
            for token in stub.tokenizer(text, add_special_tokens=False)["input_ids"]:
                if token == IMAGE_PAD:
                    img = next(pads)
                    rows, cols = merged_grid(stub.processor, img.width, img.height)
                    ids.extend([token] * (rows * cols))
                else:
                    ids.append(token)
            if self.path == "/tokenize":
                if stub.mode == "image_tokens_other":
                    ids = ids[1:]
                self._json(200, {"count": len(ids), "tokens": ids, "max_model_len": 4096})
                return
            arr = np.ones((len(ids), DIM), dtype="<f4")
            arr[:, 0] = np.arange(1, len(ids) + 1)  # row j is [j + 1, 1, 1, ...]
            data = base64.b64encode(arr.tobytes()).decode()
            self._json(200, {"data": [{"index": 0, "object": "pooling", "data": data}]})

        def _score(self, req: dict[str, Any]) -> None:
            n = len(req["documents"])
            items: list[dict[str, Any]] = [
                {"index": i, "object": "score", "score": 0.5 + i} for i in range(n)
            ]
            if stub.mode == "score_no_score":
                del items[-1]["score"]
            elif stub.mode == "score_bad_index":
                items[-1]["index"] = -1
            elif stub.mode == "score_dup":
                items[-1]["index"] = 0
            elif stub.mode == "score_short":
                items = items[:-1]
            self._json(200, {"object": "list", "data": items, "model": stub.model_id})

        def _pooling(self, req: dict[str, Any]) -> None:
            ids: list[list[int]] = req["input"]
            probe = req.get("encoding_format") == "float" and len(ids) == 1
            mode = stub.mode
            if probe and mode == "wrong_task":
                msg = "Try switching the model's pooling_task via --pooler-config.task embed."
                self._json(400, {"error": {"message": msg, "code": 400}})
                return
            if probe and mode == "pooled":
                self._json(200, {"data": [{"index": 0, "data": [0.5] * DIM}]})
                return
            if probe:
                rows = [[0.1 * (j + 1)] * DIM for j in range(len(ids[0]))]
                self._json(200, {"data": [{"index": 0, "object": "pooling", "data": rows}]})
                return
            stub.pool_calls += 1
            stub.batch_sizes.append(len(ids))
            stub.in_flight.set()
            if mode == "model_gone":
                msg = f"The model `{req.get('model')}` does not exist."
                self._json(404, {"error": {"message": msg, "type": "NotFoundError"}})
                return
            if mode == "truncated_http":  # promises more bytes than it sends, then hangs up
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b'{"data": [')
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if mode == "500":
                self._json(500, {"error": {"message": "EngineCore died", "code": 500}})
                return
            if mode == "stall":
                stub.release.wait(30)
                return
            if mode == "malformed":
                self._send(200, b'{"data": [{"index": 0, "data": "AAAA"')
                return
            if mode == "reject_long" and any(len(i) > 6 for i in ids):
                self._json(400, {"error": {"message": "prompt too long", "code": 400}})
                return
            items = []
            for n, one in enumerate(ids):
                arr = np.full((len(one), DIM), n + 1, dtype="<f4")
                data = base64.b64encode(arr.tobytes()).decode()
                if mode == "truncated_b64":
                    data = data[: len(data) // 2 // 4 * 4]
                if mode == "bad_base64":
                    data = "@@not base64@@"
                items.append({"index": n, "object": "pooling", "data": data})
            if mode == "wrong_count":
                items = items[:-1]
            if req.get("encoding_format") == "bytes":
                self._bytes(ids, mode)
                return
            self._json(200, {"data": items, "model": stub.model_id})

        def _bytes(self, ids: list[list[int]], mode: str) -> None:
            body, meta, offset = b"", [], 0
            for n, one in enumerate(ids):
                raw = np.full((len(one), DIM), n + 1, dtype="<f4").tobytes()
                meta.append(
                    {
                        "index": n,
                        "embed_dtype": "float32",
                        "endianness": "little",
                        "start": offset,
                        "end": offset + len(raw),
                        "shape": [len(one), DIM],
                    }
                )
                body += raw
                offset += len(raw)
            if mode == "truncated_bytes":
                body = body[: len(body) - 4]
            header = json.dumps({"data": meta})
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("metadata", header)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture(autouse=True)
def _close_remote_engines() -> Iterator[None]:
    yield
    shutdown_remote_engines()  # their background loops and HTTP clients


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return Encoder(base_url="http://127.0.0.1:9").tokenizer  # no request is made


@contextlib.contextmanager
def serve_stub(tokenizer: Any) -> Iterator[tuple[Stub, str]]:
    """A stub vLLM server on a free local port: its state and its URL (also for other tests)."""
    state = Stub()
    state.tokenizer = tokenizer
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def stub(tokenizer: Any) -> Iterator[tuple[Stub, str]]:
    with serve_stub(tokenizer) as served:
        yield served


def _raises_within(limit: float, fn: Callable[[], object]) -> RemoteEngineError:
    start = time.monotonic()
    with pytest.raises(RemoteEngineError) as info:
        fn()
    elapsed = time.monotonic() - start
    assert elapsed < limit, f"took {elapsed:.1f} s, more than {limit:.1f} s"
    return info.value


# -- the stub tests ----------------------------------------------------------------------------


def test_stub_happy_path_decodes_base64_and_bytes(stub: tuple[Stub, str]) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=5.0)
    ids = enc.token_ids(["one", "two words", "three more words"], is_query=False)
    for transfer in ("base64", "bytes"):
        engine = enc.remote_engine(transfer=transfer)
        engine.wait_ready()
        assert engine.info.dim == DIM and engine.info.max_model_len == 256
        rows = engine.submit(ids).result(timeout=10)
        assert [r.shape for r in rows] == [(len(i), DIM) for i in ids]
        assert [float(r[0, 0]) for r in rows] == [1.0, 2.0, 3.0]  # order kept
    assert state.calls[0] == "GET /v1/models"


def test_many_texts_go_in_few_bounded_requests(stub: tuple[Stub, str]) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=5.0, batch_size=1000)
    texts = [f"text number {i}" for i in range(150)]
    assert len(enc.encode(texts)) == 150
    assert sorted(state.batch_sizes) == [22, 64, 64]  # max_batch_size=64 texts per request
    state.batch_sizes.clear()
    engine = enc.remote_engine(max_batch_tokens=40)
    ids = enc.token_ids(texts[:10], is_query=False)
    rows = engine.submit(ids).result(timeout=30)
    assert len(rows) == 10 and sum(state.batch_sizes) == 10
    assert max(state.batch_sizes) * len(ids[0]) <= 40  # max_batch_tokens=40 per request


def test_500s_are_retried_then_raise(stub: tuple[Stub, str]) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=5.0).start()
    state.mode = "500"
    err = _raises_within(5.0 + SLACK, lambda: enc.embed_documents(["hello"]))
    assert type(err) is RemoteEngineError  # a server error: none of the specific faults
    assert url in str(err) and "500" in str(err) and "EngineCore died" in str(err)
    assert state.pool_calls == 4  # one attempt + max_retries=3
    state.mode = "ok"  # the server recovered: the next call works
    assert enc.embed_documents(["hello"]).shape == (1, DIM)


def test_4xx_is_not_retried_and_no_partial_results(stub: tuple[Stub, str]) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=5.0, batch_size=1).start()
    state.mode = "reject_long"
    texts = ["hi", "a much longer text than the others here", "yo"]
    err = _raises_within(5.0 + SLACK, lambda: enc.encode(texts))
    assert type(err) is RemoteEngineError
    assert "400" in str(err) and "prompt too long" in str(err) and url in str(err)
    assert state.pool_calls <= 3  # never retried


def test_stall_past_the_timeout_raises_within_it(stub: tuple[Stub, str]) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=2.0).start()
    state.mode = "stall"
    err = _raises_within(2.0 + SLACK, lambda: enc.embed_documents(["hello"]))
    assert isinstance(err, RemoteTimeoutError) and isinstance(err, TimeoutError)
    assert url in str(err) and "timeout" in str(err)
    assert state.pool_calls == 1


async def test_stall_async_raises_within_timeout(stub: tuple[Stub, str]) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=2.0).start()
    state.mode = "stall"
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match="timeout"):
        await enc.aembed_documents(["hello", "world"])
    assert time.monotonic() - start < 2.0 + SLACK


@pytest.mark.parametrize(
    ("mode", "transfer", "needle"),
    [
        ("malformed", "base64", "malformed JSON"),
        ("truncated_b64", "base64", "expected"),
        ("bad_base64", "base64", "not valid base64"),
        ("wrong_count", "base64", "items for"),
        ("truncated_bytes", "bytes", "truncated"),
        ("truncated_http", "base64", "RemoteProtocolError"),
    ],
)
def test_bad_bodies_raise_typed_errors(
    stub: tuple[Stub, str], mode: str, transfer: str, needle: str
) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=5.0)
    engine = enc.remote_engine(transfer=transfer)
    engine.wait_ready()
    state.mode = mode
    ids = enc.token_ids(["hello there", "general kenobi"], is_query=False)
    err = _raises_within(5.0 + SLACK, lambda: engine.submit(ids).result(timeout=30))
    assert isinstance(err, RemoteMalformedResponseError), repr(err)
    assert url in str(err) and needle in str(err)


def test_wrong_model_in_discovery(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.model_id = "BAAI/bge-m3"
    err = _raises_within(5.0 + SLACK, Encoder(base_url=url, timeout=5.0).start)
    assert isinstance(err, RemoteModelMismatchError), repr(err)
    assert url in str(err) and "BAAI/bge-m3" in str(err) and "not the model" in str(err)


def test_model_gone_after_discovery_is_a_mismatch(stub: tuple[Stub, str]) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=5.0).start()
    state.mode = "model_gone"  # the server was restarted with another model: 404
    err = _raises_within(5.0 + SLACK, lambda: enc.embed_documents(["hello"]))
    assert isinstance(err, RemoteModelMismatchError), repr(err)
    assert "404" in str(err) and "does not exist" in str(err)
    assert state.pool_calls == 1  # not retried


def test_same_name_other_tokenizer_is_a_different_model(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.tokens = [1, 2, 3]
    err = _raises_within(5.0 + SLACK, Encoder(base_url=url, timeout=5.0).start)
    assert isinstance(err, RemoteModelMismatchError), repr(err)
    assert url in str(err) and "different tokenizer" in str(err)


@pytest.mark.parametrize("mode", ["wrong_task", "pooled"])
def test_wrong_task_in_discovery(stub: tuple[Stub, str], mode: str) -> None:
    state, url = stub
    state.mode = mode
    err = _raises_within(5.0 + SLACK, Encoder(base_url=url, timeout=5.0).start)
    assert url in str(err) and "token_embed" in str(err)
    assert isinstance(err, EngineError) and isinstance(err, RemoteModelMismatchError)


@pytest.mark.parametrize(("mode", "needle"), [("models_malformed", "malformed JSON"),
                                              ("models_no_id", "no model list")])  # fmt: skip
def test_malformed_model_list(stub: tuple[Stub, str], mode: str, needle: str) -> None:
    state, url = stub
    state.mode = mode
    err = _raises_within(5.0 + SLACK, Encoder(base_url=url, timeout=5.0).start)
    assert isinstance(err, RemoteMalformedResponseError), repr(err)
    assert url in str(err) and needle in str(err)


def test_api_key_is_sent_and_a_wrong_one_is_a_typed_error(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.api_key = "sekrit"
    assert Encoder(base_url=url, api_key="sekrit", timeout=5.0).embed_query("hi").shape == (DIM,)
    err = _raises_within(5.0 + SLACK, Encoder(base_url=url, api_key="nope", timeout=5.0).start)
    assert isinstance(err, RemoteAuthError) and isinstance(err, PermissionError)
    assert "401" in str(err) and url in str(err)
    assert state.calls.count("GET /v1/models") == 2  # an auth error is never retried


def test_remote_score(stub: tuple[Stub, str]) -> None:
    _, url = stub
    enc = Encoder(base_url=url, timeout=5.0)
    assert remote_score(enc, "query", ["a", "b", "c"]) == [0.5, 1.5, 2.5]


@pytest.mark.parametrize("mode", ["score_no_score", "score_bad_index", "score_dup", "score_short"])
def test_remote_score_malformed_answer_is_typed(stub: tuple[Stub, str], mode: str) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=5.0).start()
    state.mode = mode
    err = _raises_within(5.0 + SLACK, lambda: remote_score(enc, "query", ["a", "b", "c"]))
    assert isinstance(err, RemoteMalformedResponseError), repr(err)
    assert url in str(err) and "POST /score" in str(err)


def test_remote_score_never_raises_a_bare_key_error(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.mode = "models_no_id"  # a model card without an "id"
    err = _raises_within(
        5.0 + SLACK, lambda: remote_score(Encoder(base_url=url, timeout=5.0), "q", ["a"])
    )
    assert isinstance(err, RemoteMalformedResponseError), repr(err)


def test_server_killed_mid_request_is_unreachable(stub: tuple[Stub, str]) -> None:
    state, url = stub
    enc = Encoder(base_url=url, timeout=5.0).start()
    state.mode = "stall"  # the request is in flight when the server dies
    fut = enc.engine.submit(enc.token_ids(["hello"], is_query=False))
    assert state.in_flight.wait(10)
    state.kill()
    err = _raises_within(5.0 + SLACK, lambda: fut.result(timeout=30))
    assert isinstance(err, RemoteUnreachableError) and isinstance(err, ConnectionError)
    assert url in str(err) and "ConnectError" in str(err)
    # Later calls fail the same way (connection refused, retried, then raised).
    err = _raises_within(5.0 + SLACK, lambda: enc.embed_documents(["after the kill"]))
    assert isinstance(err, RemoteUnreachableError), repr(err)


def test_server_not_running() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    err = _raises_within(3.0 + SLACK, Encoder(base_url=url, timeout=3.0).start)
    assert isinstance(err, RemoteUnreachableError), repr(err)
    assert url in str(err) and "Connect" in str(err)


# -- one HTTP client per event loop, closed with it -------------------------------------------


def _client_sockets(port: int) -> int:
    """This process's open TCP sockets connected to ``port`` (the client side only)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if remote_port == port and cols[9] in inodes:
                count += 1
    return count


needs_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


@needs_proc
def test_asyncio_run_cycles_leave_no_client_open(stub: tuple[Stub, str]) -> None:
    state, url = stub
    port = int(url.rsplit(":", 1)[1])
    enc = Encoder(base_url=url, timeout=5.0).start()  # discovery: the background loop's client
    engine = enc.engine
    assert isinstance(engine, RemoteEngine)
    baseline = _client_sockets(port)
    gc.collect()
    gc.disable()  # sockets must be closed by the engine, not by the garbage collector
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for n in range(100):
                encoded = asyncio.run(enc.aencode([f"text {n}", "another"]))
                assert len(encoded) == 2
                assert _client_sockets(port) <= baseline, f"cycle {n}"
            assert engine.open_clients <= 1  # the background loop's, if any
            gc.enable()
            gc.collect()
    finally:
        gc.enable()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks[:3]]
    assert state.pool_calls == 100


@needs_proc
def test_close_closes_the_clients_of_every_loop(stub: tuple[Stub, str]) -> None:
    _, url = stub
    port = int(url.rsplit(":", 1)[1])
    enc = Encoder(base_url=url, timeout=5.0)
    assert enc.embed_documents(["sync"]).shape == (1, DIM)  # the background loop's client
    idle = asyncio.new_event_loop()  # a loop that is not running when the engine closes
    idle.run_until_complete(enc.aencode(["idle loop"]))
    busy = asyncio.new_event_loop()  # a loop running in another thread
    thread = threading.Thread(target=busy.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(enc.aencode(["busy loop"]), busy).result(30)
        engine = enc.engine
        assert isinstance(engine, RemoteEngine)
        assert _client_sockets(port) >= 3
        engine.close()
        assert _client_sockets(port) == 0  # closed by the engine, on each loop
        assert engine.open_clients == 0
    finally:
        busy.call_soon_threadsafe(busy.stop)
        thread.join(10)
        busy.close()
        idle.close()


# -- a real vLLM server killed in the middle of a run -----------------------------------------


def test_real_server_killed_mid_run(tmp_path: Path, scifact_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "vllm-server.log"
    proc = start_vllm(MODEL, port, log)
    try:
        wait_healthy(url, proc, log)
        timeout = 30.0
        enc = Encoder(base_url=url, timeout=timeout, batch_size=16).start()
        with (scifact_dir / "corpus.jsonl").open() as fh:
            docs = [json.loads(next(fh))["text"] for _ in range(400)]
        result: dict[str, object] = {}

        def run() -> None:
            try:
                result["value"] = enc.encode(docs)
            except BaseException as exc:
                result["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(2.0)  # requests are in flight: 400 abstracts take far longer than this
        assert worker.is_alive(), "the run finished before the server could be killed"
        killed_at = time.monotonic()
        kill(proc)
        worker.join(timeout=timeout + SLACK)
        assert not worker.is_alive(), "encode hung after the server was killed"
        assert time.monotonic() - killed_at < timeout + SLACK
        assert "value" not in result, "partial results came back from a dead server"
        err = result["error"]
        assert isinstance(err, RemoteUnreachableError), repr(err)
        assert url in str(err)
        # Afterwards a fresh call fails fast too (connection refused, retried, then raised).
        err = _raises_within(timeout + SLACK, lambda: enc.embed_documents(["after the kill"]))
        assert isinstance(err, RemoteUnreachableError), repr(err)
    finally:
        kill(proc)


# -- images over a remote server (a tiny Qwen2.5-VL's tokenizer and image processor) -----------


@pytest.fixture(scope="module")
def vlm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import _vlm

    why = _vlm.missing()
    if why is not None:
        pytest.skip(why)
    return _vlm.build_qwen25_vl(tmp_path_factory.mktemp("vlm") / "tiny-qwen25-vl")


@pytest.fixture
def vlm_stub(vlm_path: Path) -> Iterator[tuple[Stub, str, Encoder]]:
    from transformers import AutoImageProcessor

    local = Encoder(model=str(vlm_path), profile="jina-v4")  # its tokenizer; no engine
    with serve_stub(local.tokenizer) as (state, url):
        state.model_id = str(vlm_path)
        state.processor = AutoImageProcessor.from_pretrained(vlm_path)
        enc = Encoder(model=str(vlm_path), profile="jina-v4", base_url=url, timeout=10.0)
        yield state, url, enc


def _images() -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in ((56, 84), (112, 56))
    ]


def test_images_over_a_remote_server(vlm_stub: tuple[Stub, str, Encoder]) -> None:
    from vllm_retrieval.encoding.backends.remote_images import CHAT_TEMPLATE

    state, _, enc = vlm_stub
    images = _images()
    dense, tokens = enc.encode_images(images)
    assert dense.shape == (2, DIM)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, rtol=1e-5)
    chats = [c for c in state.chats if c.get("task") == "token_embed"]
    assert len(chats) == 2  # one /pooling chat per image (and one /tokenize each)
    for img, tok in zip(images, tokens, strict=True):
        # The image travelled losslessly (PNG), and the text is the in-process prompt verbatim.
        pixels = np.asarray(img)
        (chat,) = [c for c in chats if np.array_equal(np.asarray(c["images"][0]), pixels)]
        assert chat["chat_template"] == CHAT_TEMPLATE and chat["use_activation"] is False
        prompt = enc.image_prompt(LoadedItem(image=img))
        assert chat["text"] == enc.tokenizer.decode(prompt.token_ids)
        # Jina v4: the rows from <|vision_start|> to <|vision_end|>, one per merged patch.
        rows, cols = enc.image_grid(img)
        assert tok.shape == (rows * cols + 2, DIM)
        start = prompt.token_ids.index(151652)  # <|vision_start|>: expanded rows start there
        want = np.ones((rows * cols + 2, DIM), dtype=np.float32)
        want[:, 0] = np.arange(start + 1, start + rows * cols + 3)
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(tok, want, rtol=1e-5)


async def test_images_over_a_remote_server_async(vlm_stub: tuple[Stub, str, Encoder]) -> None:
    _, _, enc = vlm_stub
    images = _images()
    dense, tokens = await enc.aencode_images(images)
    want_dense, want_tokens = enc.encode_images(images)
    np.testing.assert_allclose(dense, want_dense, rtol=1e-6)
    assert [t.shape for t in tokens] == [t.shape for t in want_tokens]


@pytest.mark.parametrize(
    ("mode", "error", "needle"),
    [
        ("untrusted", RemoteEngineError, "--trust-request-chat-template"),
        ("image_tokens_other", RemoteModelMismatchError, "tokenizer differs"),
    ],
)
def test_remote_image_faults_are_typed(
    vlm_stub: tuple[Stub, str, Encoder], mode: str, error: type[Exception], needle: str
) -> None:
    state, url, enc = vlm_stub
    enc.start()
    state.mode = mode
    err = _raises_within(10.0 + SLACK, lambda: enc.encode_images(_images()[:1]))
    assert isinstance(err, error), repr(err)
    assert url in str(err) and needle in str(err)
