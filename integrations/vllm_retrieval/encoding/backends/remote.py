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
  transport errors and 5xx answers are retried with exponential backoff (4xx are not);
  every answer is validated (count, shapes, byte lengths: :mod:`.remote_wire`). Failures
  are typed by exception and status (:mod:`.remote_client`), each naming the server:
  :class:`~vllm_retrieval.errors.RemoteUnreachableError`, ``RemoteTimeoutError``,
  ``RemoteAuthError`` (401/403), ``RemoteModelMismatchError`` (another model, tokenizer or
  task), ``RemoteMalformedResponseError``, else ``RemoteEngineError`` (a 4xx, or 5xx after
  the retries) — never a hang, never silently partial results.
* **Concurrency**: the sync ``submit`` runs on one background event loop per engine and
  returns a ``concurrent.futures.Future`` at once; the native ``asubmit`` runs on the
  caller's event loop. Both bound the requests in flight (``max_concurrency`` per loop) and
  split large submissions into requests of at most ``max_batch_size`` texts and
  ``max_batch_tokens`` tokens. Each loop has one HTTP client, closed when the loop shuts
  down or the engine closes.
* **Secrets**: ``api_key`` is a ``SecretStr`` (``$VLLM_API_KEY`` when not given), shown
  nowhere: not in reprs, nor in error messages.

One engine is shared per (server, model, API key, timeout) per process (:mod:`.registry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from pydantic import SecretStr

from ...errors import (
    RemoteEngineError,
    RemoteMalformedResponseError,
    RemoteModelMismatchError,
    RemoteTimeoutError,
)
from .base import ImagePrompt, ImageRows, RowsArray
from .remote_client import RemoteHTTP
from .remote_images import RemoteImages
from .remote_wire import Transfer, decode_rows, decode_scores, error_detail, parse_json

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
# 4xx answers a caller judges itself (401 and 403 are always auth errors).
_REJECTED = frozenset(range(400, 500)) - {401, 403}


@dataclass(frozen=True)
class RemoteSettings:
    """What makes two remote engines different (and how one talks to its server)."""

    base_url: str
    model_path: str  # the local model folder (tokenizer and profile come from it)
    model_name: str | None = None  # the name the user gave (``Encoder.model``), if any
    api_key: SecretStr | None = None  # a str is accepted; None: $VLLM_API_KEY if set
    timeout: float = 60.0  # seconds per HTTP request, retries included
    transfer: Transfer = "base64"
    max_concurrency: int = 8  # requests in flight per event loop
    max_retries: int = 3  # further attempts after a connection error or a 5xx
    backoff: float = 0.25  # first retry delay in seconds, doubled each time
    max_batch_size: int = 64  # texts per request
    max_batch_tokens: int = 16384  # tokens per request
    drops_first_row: bool = False  # the model's pooler drops the first row (BGE-M3)

    def __post_init__(self) -> None:
        key: object = self.api_key
        if key is None:
            key = os.environ.get("VLLM_API_KEY") or None
        if isinstance(key, str):
            key = SecretStr(key)
        if key is not None and not isinstance(key, SecretStr):
            raise TypeError(f"api_key must be a str or SecretStr, not {type(key).__name__}")
        object.__setattr__(self, "api_key", key)
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


class _Failure:
    """The last request that exhausted its retries: requests queued before it fail fast."""

    __slots__ = ("error", "generation")

    def __init__(self) -> None:
        self.generation = 0
        self.error: RemoteEngineError | None = None


async def _cancel_others() -> None:
    """Cancel every other task of the running loop and wait for them (engine shutdown)."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


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
        s = self.settings
        self._http = RemoteHTTP(
            self.url,
            api_key=s.api_key,
            timeout=s.timeout,
            max_retries=s.max_retries,
            backoff=s.backoff,
            max_concurrency=s.max_concurrency,
        )
        self._images = RemoteImages(self._http, self.settings.model_path)
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
        info = await self._ready()
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
        parts = await self._all([self._pool(info, c, generation) for c in chunks])
        return [rows for part in parts for rows in part]

    def submit_images(self, prompts: Sequence[ImagePrompt]) -> Future[list[ImageRows]]:
        """Image prompts' raw rows and expanded ids (:mod:`.remote_images`); returns at once."""
        batch = list(prompts)
        if not batch:
            done: Future[list[ImageRows]] = Future()
            done.set_result([])
            return done
        return asyncio.run_coroutine_threadsafe(self.asubmit_images(batch), self._background_loop())

    async def asubmit_images(self, prompts: Sequence[ImagePrompt]) -> list[ImageRows]:
        """Native async :meth:`submit_images`, on the caller's event loop."""
        batch = list(prompts)
        if not batch:
            return []
        info = await self._ready()
        return await self._all([self._pool_image(info, p) for p in batch])

    async def _ready(self) -> ServerInfo:
        self._check_open()
        if self._info is None:
            await self._discover(poll_until=None)
        assert self._info is not None
        return self._info

    async def _all(self, coros: list[Coroutine[Any, Any, T]]) -> list[T]:
        """Every result in order, or the first failure (in order): never partial results."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
        for task in tasks:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                raise exc
        if any(task.cancelled() for task in tasks):  # pragma: no cover - another task failed
            raise RemoteEngineError(f"vLLM server {self.url}: request cancelled")
        return [task.result() for task in tasks]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the registry then builds a new engine)."""
        return self._closed

    async def ascore(
        self, query: str, documents: list[str], *, truncate: int | None
    ) -> list[float]:
        """The server's own late-interaction scores (``POST /score``) of texts it tokenises."""
        info = await self._ready()
        body = {
            "model": info.model,
            "queries": query,
            "documents": documents,
            "use_activation": True,
            "truncate_prompt_tokens": truncate,
        }
        deadline = asyncio.get_running_loop().time() + self.settings.timeout
        resp = await self._http.request("POST", "/score", body=body, deadline=deadline)
        where = f"vLLM server {self.url}: POST /score"
        return decode_scores(parse_json(resp, where), len(documents), where)

    def score(self, query: str, documents: list[str], *, truncate: int | None) -> list[float]:
        """Sync :meth:`ascore` (on the engine's background loop)."""
        if not documents:
            return []
        return self._run_sync(
            self.ascore(query, documents, truncate=truncate), self.settings.timeout * 3 + 10
        )

    def close(self) -> None:
        """Close every HTTP client this engine opened (one per event loop) and stop the
        background loop; never raises."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and loop.is_running() and thread is not threading.current_thread():
            # Requests still in flight on the background loop end (cancelled), never hang.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_others(), loop).result(timeout=5)
        self._http.clients.close_all()
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout=5)
        if not thread.is_alive() and not loop.is_closed():
            loop.close()

    @property
    def open_clients(self) -> int:
        """How many HTTP clients are open (one per live event loop that used this engine)."""
        return len(self._http.clients)

    # -- the event loops ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RemoteEngineError(f"vLLM server {self.url}: this remote engine was closed")

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            self._check_open()
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
            raise RemoteTimeoutError(
                f"vLLM server {self.url}: no answer within {limit:g} s"
            ) from None

    # -- discovery ------------------------------------------------------------------------

    async def _discover(self, *, poll_until: float | None) -> None:
        loop = asyncio.get_running_loop()
        budget = self.settings.timeout if poll_until is None else poll_until
        deadline = loop.time() + budget
        poll = poll_until is not None
        where = f"vLLM server {self.url}: GET /v1/models"
        resp = await self._http.request("GET", "/v1/models", deadline=deadline, poll=poll)
        payload = parse_json(resp, where)
        cards = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(cards, list) or not all(
            isinstance(c, dict) and isinstance(c.get("id"), str) for c in cards
        ):
            raise RemoteMalformedResponseError(
                f"{where} answered no model list (cards with an id): {str(payload)[:200]}"
            )
        card = self._match_model(cards)
        model_id = str(card["id"])
        root = card.get("root")
        max_len = card.get("max_model_len")
        if max_len is not None and (
            not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1
        ):
            raise RemoteMalformedResponseError(
                f"{where} answered an invalid max_model_len {max_len!r} for {model_id!r}"
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
        raise RemoteModelMismatchError(
            f"vLLM server {self.url} serves {served}, not the model {want!r}: point base_url "
            "at a server started with this model (or --served-model-name matching it)"
        )

    async def _check_tokenizer(self, model_id: str, deadline: float) -> None:
        if self._local_tokenize is None:
            return
        resp = await self._http.request(
            "POST",
            "/tokenize",
            body={"model": model_id, "prompt": PROBE_TEXT, "add_special_tokens": False},
            deadline=deadline,
            accept=(404,),
        )
        if resp.status_code == 404:  # the tokenizer endpoint is optional
            return
        payload = parse_json(resp, f"vLLM server {self.url}: POST /tokenize")
        tokens = payload.get("tokens") if isinstance(payload, dict) else None
        local = self._local_tokenize(PROBE_TEXT)
        if tokens != local:
            raise RemoteModelMismatchError(
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
        where = f"vLLM server {self.url}: POST /pooling"
        start = "--runner pooling --pooler-config.task token_embed"
        resp = await self._http.request(
            "POST", "/pooling", body=body, deadline=deadline, accept=_REJECTED
        )
        if resp.status_code >= 400:
            raise RemoteModelMismatchError(
                f"vLLM server {self.url} does not serve the token_embed pooling task for "
                f"{model_id!r} (start it with {start}): {where} answered "
                f"{resp.status_code}: {error_detail(resp, self._http.scrub)}"
            )
        payload = parse_json(resp, where)
        try:
            data = payload["data"][0]["data"]
        except (KeyError, IndexError, TypeError):
            raise RemoteMalformedResponseError(
                f"{where} answered no data: {str(payload)[:200]}"
            ) from None
        if not isinstance(data, list) or not data or not isinstance(data[0], list):
            raise RemoteModelMismatchError(
                f"vLLM server {self.url} does not serve the token_embed pooling task for "
                f"{model_id!r}: /pooling answered one pooled vector instead of one vector per "
                f"token (start it with {start})"
            )
        try:
            rows = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError):
            raise RemoteMalformedResponseError(
                f"{where}: the probe's rows are not a float matrix"
            ) from None
        expected = len(ids) - (1 if self.settings.drops_first_row else 0)
        if rows.ndim != 2 or rows.shape[0] != expected or rows.shape[1] < 1:
            raise RemoteModelMismatchError(
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
        state = await self._http.clients.get()
        where = f"vLLM server {self.url}: POST /pooling"
        async with state.semaphore:
            failure = self._failure
            if failure.generation != generation and failure.error is not None:
                # The server failed for good after this request was queued: fail fast.
                raise type(failure.error)(str(failure.error))
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
                resp = await self._http.request(
                    "POST", "/pooling", body=body, deadline=deadline, accept=_REJECTED
                )
            except RemoteEngineError as exc:  # the server failed (not this request)
                failure.error = exc
                failure.generation += 1
                raise
            if resp.status_code >= 400:  # this request was refused: not retried
                detail = f"{where} answered {resp.status_code}: "
                detail += error_detail(resp, self._http.scrub)
                if resp.status_code == 404:  # discovery found the model: it is gone now
                    raise RemoteModelMismatchError(f"{detail} (the served model changed?)")
                raise RemoteEngineError(detail)
            payload = None if fmt == "bytes" else parse_json(resp, where)
            drop = 1 if self.settings.drops_first_row else 0
            shapes = [(len(i) - drop, info.dim) for i in ids]
            return decode_rows(resp, payload, shapes, fmt, where)

    async def _pool_image(self, info: ServerInfo, prompt: ImagePrompt) -> ImageRows:
        state = await self._http.clients.get()
        async with state.semaphore:
            return await self._images.rows(info.model, info.dim, prompt, self.settings.timeout)
