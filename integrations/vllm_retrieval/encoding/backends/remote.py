"""The remote vLLM backend: the same core against a ``vllm serve`` (token_embed) fleet.

A :class:`RemoteEngine` implements the
:class:`~vllm_retrieval.encoding.backends.base.EngineBackend` protocol over
HTTP. The Encoder tokenises client-side (ColBERT markers and ``[MASK]`` expansion included)
and sends token ids to the server's ``/pooling`` endpoint with ``task="token_embed"`` and
``use_activation=false``; the server answers the raw rows ``[T_i, dim]`` of each text, and the
core pools and normalises them exactly as for the in-process engine, so results match.

* **Discovery** (:meth:`RemoteEngine.wait_ready`): ``GET /v1/models`` gives the served model
  and its ``max_model_len``; ``POST /tokenize`` checks that the server's tokenizer agrees with
  the local one; a probe ``POST /pooling`` checks the token_embed task and learns ``dim``.
* **Transfer**: ``encoding_format="base64"`` by default (little-endian float32, the shape is
  known from the ids and ``dim``), ``"bytes"`` (binary body, shapes in a header) or ``"json"``
  (nested floats, several times bigger and slower; kept for the benchmark).
* **Robustness**: each HTTP request (retries included) finishes within ``timeout`` seconds;
  connection errors and 5xx answers are retried with exponential backoff (4xx are not);
  every answer is validated (count, shapes, byte lengths: :mod:`.remote_wire`) and anything
  unusable raises
  :class:`~vllm_retrieval.errors.RemoteEngineError` naming the server and the cause —
  never a hang, never silently partial results.
* **Concurrency**: the sync ``submit`` runs on one background event loop per engine and
  returns a ``concurrent.futures.Future`` at once; the native ``asubmit`` runs on the
  caller's event loop. Both bound the requests in flight (``max_concurrency`` per loop) and
  split large submissions into requests of at most ``max_batch_size`` texts and
  ``max_batch_tokens`` tokens.

One engine is shared per (server, model, API key, timeout) per process (:mod:`.registry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
import numpy as np

from ...errors import RemoteEngineError
from .base import RowsArray
from .remote_wire import Transfer, decode_rows, error_detail

__all__ = [
    "RemoteEngine",
    "RemoteSettings",
    "ServerInfo",
    "Transfer",
]

T = TypeVar("T")

PROBE_TEXT = "vllm-retrieval probe: late interaction over token embeddings."
# The packaged default model, by the names a server may serve it under.
_DEFAULT_ALIASES = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")


@dataclass(frozen=True)
class RemoteSettings:
    """What makes two remote engines different (and how one talks to its server)."""

    base_url: str
    model_path: str  # the local model folder (tokenizer and profile come from it)
    model_name: str | None = None  # the name the user gave (``Encoder.model``), if any
    api_key: str | None = None
    timeout: float = 60.0  # seconds per HTTP request, retries included
    transfer: Transfer = "base64"
    max_concurrency: int = 8  # requests in flight per event loop
    max_retries: int = 3  # further attempts after a connection error or a 5xx
    backoff: float = 0.25  # first retry delay in seconds, doubled each time
    max_batch_size: int = 64  # texts per request
    max_batch_tokens: int = 16384  # tokens per request
    drops_first_row: bool = False  # the model's pooler drops the first row (BGE-M3)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://: {self.base_url!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.transfer not in ("base64", "bytes", "json"):
            raise ValueError(f"transfer must be 'base64', 'bytes' or 'json': {self.transfer!r}")
        if self.max_concurrency < 1 or self.max_batch_size < 1 or self.max_batch_tokens < 1:
            raise ValueError("max_concurrency, max_batch_size and max_batch_tokens must be >= 1")
        if self.max_retries < 0 or self.backoff < 0:
            raise ValueError("max_retries and backoff must be >= 0")


@dataclass(frozen=True)
class ServerInfo:
    """What discovery learned about the server."""

    model: str  # the served model id (sent with every request)
    root: str | None
    max_model_len: int | None
    dim: int


@dataclass
class _LoopState:
    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore


class _Failure:
    """The last request that exhausted its retries: requests queued before it fail fast."""

    __slots__ = ("error", "generation")

    def __init__(self) -> None:
        self.generation = 0
        self.error: RemoteEngineError | None = None


def _names(value: str | None) -> set[str]:
    """A model name and its path-insensitive forms, for matching client and server names."""
    if not value:
        return set()
    out = {value, value.rstrip("/")}
    if os.path.exists(value):
        out.add(os.path.realpath(value))
    return out


class RemoteEngine:
    """A remote vLLM ``token_embed`` server as an engine backend (see the module docstring)."""

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        probe_ids: list[int] | None = None,
        local_tokenize: Callable[[str], list[int]] | None = None,
    ) -> None:
        self.settings = replace(settings, base_url=settings.base_url.rstrip("/"))
        self.url = self.settings.base_url
        self._probe_ids = probe_ids
        self._local_tokenize = local_tokenize
        self._info: ServerInfo | None = None
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._failure = _Failure()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"RemoteEngine({self.url!r}, transfer={self.settings.transfer!r})"

    # -- public ---------------------------------------------------------------------------

    @property
    def info(self) -> ServerInfo:
        """What discovery learned (calls :meth:`wait_ready` first if needed)."""
        if self._info is None:
            self.wait_ready()
        assert self._info is not None
        return self._info

    def wait_ready(self, timeout: float | None = None) -> None:
        """Discover and verify the server: served model, max length, token_embed task, dim.

        With ``timeout`` given, waits up to that long for a server that is still starting;
        without it, connection errors get the usual retries within the request timeout.
        Raises :class:`RemoteEngineError` naming the server and the cause.
        """
        if self._info is not None:
            return
        budget = self.settings.timeout if timeout is None else timeout
        self._run_sync(self._discover(poll_until=timeout), budget * 3 + 10)

    async def await_ready(self, timeout: float | None = None) -> None:
        """Async :meth:`wait_ready`, on the caller's event loop."""
        if self._info is None:
            await self._discover(poll_until=timeout)

    def submit(self, ids: Sequence[list[int]]) -> Future[list[RowsArray]]:
        """Raw ``[rows, dim]`` float32 arrays, one per id list; returns at once."""
        batch = [list(i) for i in ids]
        if not batch:
            done: Future[list[RowsArray]] = Future()
            done.set_result([])
            return done
        loop = self._background_loop()
        return asyncio.run_coroutine_threadsafe(self.asubmit(batch), loop)

    async def asubmit(self, ids: Sequence[list[int]]) -> list[RowsArray]:
        """Native async :meth:`submit`, on the caller's event loop."""
        batch = [list(i) for i in ids]
        if not batch:
            return []
        if self._closed:
            raise RemoteEngineError(f"vLLM server {self.url}: this remote engine was closed")
        info = self._info
        if info is None:
            await self._discover(poll_until=None)
            info = self._info
            assert info is not None
        limit = info.max_model_len
        for n, one in enumerate(batch):
            if not one:
                raise ValueError(f"ids[{n}] is empty")
            if limit is not None and len(one) > limit:
                raise RemoteEngineError(
                    f"vLLM server {self.url}: a text has {len(one)} tokens, more than the "
                    f"server's max_model_len of {limit}: pass a smaller Encoder(max_length=...)"
                    " or start the server with a larger --max-model-len"
                )
        chunks = self._chunks(batch)
        generation = self._failure.generation
        if len(chunks) == 1:
            return await self._pool(info, chunks[0], generation)
        tasks = [asyncio.ensure_future(self._pool(info, c, generation)) for c in chunks]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
        rows: list[RowsArray] = []
        for task in tasks:  # the first failure (in order) wins; no partial results
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                raise exc
        for task in tasks:
            if task.cancelled():  # pragma: no cover - only when another task failed
                raise RemoteEngineError(f"vLLM server {self.url}: request cancelled")
            rows.extend(task.result())
        return rows

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the registry then builds a new engine)."""
        return self._closed

    async def ascore(
        self, query: str, documents: list[str], *, truncate: int | None
    ) -> list[float]:
        """The server's own late-interaction scores (``POST /score``) of texts it tokenises."""
        info = self._info
        if info is None:
            await self._discover(poll_until=None)
            info = self._info
            assert info is not None
        body = {
            "model": info.model,
            "queries": query,
            "documents": documents,
            "use_activation": True,
            "truncate_prompt_tokens": truncate,
        }
        deadline = asyncio.get_running_loop().time() + self.settings.timeout
        resp = await self._request("POST", "/score", body=body, deadline=deadline)
        payload = self._json(resp, "POST /score")
        items = payload.get("data") if isinstance(payload, dict) else None
        where = f"vLLM server {self.url}: POST /score"
        if not isinstance(items, list) or len(items) != len(documents):
            got = len(items) if isinstance(items, list) else "no"
            raise RemoteEngineError(f"{where} answered {got} scores for {len(documents)} docs")
        scores = [float("nan")] * len(documents)
        try:
            for item in items:
                scores[int(item["index"])] = float(item["score"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RemoteEngineError(f"{where} answered a malformed score item: {exc!r}") from None
        return scores

    def score(self, query: str, documents: list[str], *, truncate: int | None) -> list[float]:
        """Sync :meth:`ascore` (on the engine's background loop)."""
        if not documents:
            return []
        return self._run_sync(
            self.ascore(query, documents, truncate=truncate), self.settings.timeout * 3 + 10
        )

    def close(self) -> None:
        """Close the HTTP clients and stop the background loop."""
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        state = self._states.get(loop)
        if state is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(state.client.aclose(), loop)
            with contextlib.suppress(Exception):  # closing must not raise
                fut.result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._loop = self._thread = None

    # -- the event loops ------------------------------------------------------------------

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RemoteEngineError(f"vLLM server {self.url}: this remote engine was closed")
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name=f"vllm-remote:{self.url}", daemon=True)
                thread.start()
                started.wait(timeout=10)
                self._loop, self._thread = loop, thread
            return self._loop

    def _run_sync(self, coro: Coroutine[Any, Any, T], limit: float) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._background_loop())
        try:
            return fut.result(timeout=limit)
        except FutureTimeoutError:  # a guard: the coroutine bounds itself well before this
            fut.cancel()
            raise RemoteEngineError(
                f"vLLM server {self.url}: no answer within {limit:g} s"
            ) from None

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None or state.client.is_closed:
            headers = {"User-Agent": "vllm-retrieval"}
            if self.settings.api_key:
                headers["Authorization"] = f"Bearer {self.settings.api_key}"
            n = self.settings.max_concurrency
            client = httpx.AsyncClient(
                base_url=self.url,
                headers=headers,
                timeout=httpx.Timeout(self.settings.timeout),
                limits=httpx.Limits(max_connections=n + 2, max_keepalive_connections=n + 2),
                trust_env=False,
            )
            state = _LoopState(client=client, semaphore=asyncio.Semaphore(n))
            self._states[loop] = state
        return state

    # -- HTTP with deadline and retries ---------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        deadline: float,
        poll: bool = False,
    ) -> httpx.Response:
        """One HTTP exchange: retried on connection errors and 5xx, bounded by ``deadline``.

        ``poll`` retries connection errors until the deadline (a server still starting).
        """
        loop = asyncio.get_running_loop()
        client = self._state().client
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RemoteEngineError(
                    f"vLLM server {self.url}: {method} {path} timed out "
                    f"(timeout={self.settings.timeout:g} s)"
                )
            cause: str
            try:
                resp = await asyncio.wait_for(
                    client.request(
                        method, path, json=body, timeout=httpx.Timeout(max(remaining, 0.01))
                    ),
                    timeout=remaining,
                )
            except (asyncio.TimeoutError, httpx.TimeoutException):
                raise RemoteEngineError(
                    f"vLLM server {self.url}: {method} {path} got no complete answer within "
                    f"the timeout ({self.settings.timeout:g} s)"
                ) from None
            except httpx.TransportError as exc:
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if resp.status_code < 400:
                    return resp
                if resp.status_code < 500:
                    raise RemoteEngineError(
                        f"vLLM server {self.url}: {method} {path} answered "
                        f"{resp.status_code}: {error_detail(resp)}"
                    )
                cause = f"HTTP {resp.status_code}: {error_detail(resp)}"
            attempt += 1
            if attempt > self.settings.max_retries and not poll:
                raise RemoteEngineError(
                    f"vLLM server {self.url}: {method} {path} failed after {attempt} "
                    f"attempts: {cause}"
                )
            delay = self.settings.backoff * 2 ** min(attempt - 1, 6)
            if poll:
                delay = min(delay, 1.0)
            if loop.time() + delay >= deadline:
                raise RemoteEngineError(
                    f"vLLM server {self.url}: {method} {path} failed until the timeout "
                    f"({self.settings.timeout:g} s): {cause}"
                )
            await asyncio.sleep(delay)

    def _json(self, resp: httpx.Response, what: str) -> Any:
        try:
            return json.loads(resp.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RemoteEngineError(
                f"vLLM server {self.url}: {what} returned malformed JSON "
                f"({len(resp.content)} bytes): {exc}"
            ) from None

    # -- discovery ------------------------------------------------------------------------

    async def _discover(self, *, poll_until: float | None) -> None:
        loop = asyncio.get_running_loop()
        budget = self.settings.timeout if poll_until is None else poll_until
        deadline = loop.time() + budget
        poll = poll_until is not None
        resp = await self._request("GET", "/v1/models", deadline=deadline, poll=poll)
        payload = self._json(resp, "GET /v1/models")
        cards = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(cards, list) or not all(isinstance(c, dict) for c in cards):
            raise RemoteEngineError(
                f"vLLM server {self.url}: GET /v1/models answered no model list: "
                f"{str(payload)[:200]}"
            )
        card = self._match_model(cards)
        model_id = str(card["id"])
        root = card.get("root")
        max_len = card.get("max_model_len")
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise RemoteEngineError(
                f"vLLM server {self.url}: invalid max_model_len {max_len!r} for {model_id!r}"
            )
        deadline = loop.time() + budget
        await self._check_tokenizer(model_id, deadline)
        dim = await self._probe(model_id, deadline)
        self._info = ServerInfo(
            model=model_id,
            root=str(root) if root is not None else None,
            max_model_len=max_len,
            dim=dim,
        )

    def _match_model(self, cards: list[dict[str, Any]]) -> dict[str, Any]:
        wanted = _names(self.settings.model_path) | _names(self.settings.model_name)
        if self.settings.model_name is None or self.settings.model_name in _DEFAULT_ALIASES:
            from ..profiles import default_model_path

            try:
                if os.path.realpath(self.settings.model_path) == os.path.realpath(
                    default_model_path()
                ):
                    wanted |= set(_DEFAULT_ALIASES)
            except ImportError:
                pass
        served = [str(c.get("id")) for c in cards]
        for card in cards:
            names = _names(str(card.get("id"))) | _names(card.get("root"))
            if names & wanted:
                return card
        # Same folder name on another machine (a fleet rarely shares paths with clients);
        # the tokenizer and probe checks below guard against a different model of that name.
        base = os.path.basename(self.settings.model_path.rstrip("/"))
        for card in cards:
            for name in (card.get("id"), card.get("root")):
                if name and os.path.basename(str(name).rstrip("/")) == base:
                    return card
        want = self.settings.model_name or self.settings.model_path
        raise RemoteEngineError(
            f"vLLM server {self.url} serves {served}, not the model {want!r}: point base_url "
            "at a server started with this model (or --served-model-name matching it)"
        )

    async def _check_tokenizer(self, model_id: str, deadline: float) -> None:
        if self._local_tokenize is None:
            return
        try:
            resp = await self._request(
                "POST",
                "/tokenize",
                body={"model": model_id, "prompt": PROBE_TEXT, "add_special_tokens": False},
                deadline=deadline,
            )
        except RemoteEngineError as exc:
            if " answered 404" in str(exc):  # the tokenizer endpoint is optional
                return
            raise
        payload = self._json(resp, "POST /tokenize")
        tokens = payload.get("tokens") if isinstance(payload, dict) else None
        local = self._local_tokenize(PROBE_TEXT)
        if tokens != local:
            raise RemoteEngineError(
                f"vLLM server {self.url} serves {model_id!r} with a different tokenizer than "
                f"the local model {self.settings.model_path!r} (server {tokens}, local {local}):"
                " a different model"
            )

    async def _probe(self, model_id: str, deadline: float) -> int:
        ids = self._probe_ids or [0, 1]
        body = {
            "model": model_id,
            "input": [ids],
            "task": "token_embed",
            "use_activation": False,
            "encoding_format": "float",
        }
        try:
            resp = await self._request("POST", "/pooling", body=body, deadline=deadline)
        except RemoteEngineError as exc:
            if " answered 4" in str(exc):
                raise RemoteEngineError(
                    f"vLLM server {self.url} does not serve the token_embed pooling task for "
                    f"{model_id!r} (start it with --runner pooling --pooler-config.task "
                    f"token_embed): {exc}"
                ) from None
            raise
        payload = self._json(resp, "POST /pooling")
        try:
            data = payload["data"][0]["data"]
        except (KeyError, IndexError, TypeError):
            raise RemoteEngineError(
                f"vLLM server {self.url}: POST /pooling answered no data: {str(payload)[:200]}"
            ) from None
        if not isinstance(data, list) or not data or not isinstance(data[0], list):
            raise RemoteEngineError(
                f"vLLM server {self.url} does not serve the token_embed pooling task for "
                f"{model_id!r}: /pooling answered one pooled vector instead of one vector per "
                "token (start it with --runner pooling --pooler-config.task token_embed)"
            )
        rows = np.asarray(data, dtype=np.float32)
        expected = len(ids) - (1 if self.settings.drops_first_row else 0)
        if rows.ndim != 2 or rows.shape[0] != expected or rows.shape[1] < 1:
            raise RemoteEngineError(
                f"vLLM server {self.url}: the probe of {len(ids)} tokens gave rows of shape "
                f"{rows.shape}, expected ({expected}, dim): not the token_embed task of this model"
            )
        return int(rows.shape[1])

    # -- pooling --------------------------------------------------------------------------

    def _chunks(self, ids: list[list[int]]) -> list[list[list[int]]]:
        out: list[list[list[int]]] = []
        cur: list[list[int]] = []
        tokens = 0
        for one in ids:
            if cur and (
                len(cur) >= self.settings.max_batch_size
                or tokens + len(one) > self.settings.max_batch_tokens
            ):
                out.append(cur)
                cur, tokens = [], 0
            cur.append(one)
            tokens += len(one)
        if cur:
            out.append(cur)
        return out

    async def _pool(
        self, info: ServerInfo, ids: list[list[int]], generation: int
    ) -> list[RowsArray]:
        state = self._state()
        async with state.semaphore:
            failure = self._failure
            if failure.generation != generation and failure.error is not None:
                # The server failed for good after this request was queued: fail fast.
                raise RemoteEngineError(str(failure.error))
            deadline = asyncio.get_running_loop().time() + self.settings.timeout
            fmt = self.settings.transfer
            body: dict[str, Any] = {
                "model": info.model,
                "input": ids,
                "task": "token_embed",
                "use_activation": False,
                "encoding_format": "float" if fmt == "json" else fmt,
                "embed_dtype": "float32",
                "endianness": "little",
            }
            try:
                resp = await self._request("POST", "/pooling", body=body, deadline=deadline)
            except RemoteEngineError as exc:
                if "answered 4" not in str(exc):
                    failure.error = exc
                    failure.generation += 1
                raise
            payload = (
                None if self.settings.transfer == "bytes" else self._json(resp, "POST /pooling")
            )
            drop = 1 if self.settings.drops_first_row else 0
            shapes = [(len(i) - drop, info.dim) for i in ids]
            return decode_rows(
                resp,
                payload,
                shapes,
                self.settings.transfer,
                f"vLLM server {self.url}: POST /pooling",
            )
