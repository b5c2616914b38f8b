"""HTTP for the remote backend: one client per event loop, bounded retries, typed errors.

* :class:`LoopClients` keeps one ``httpx.AsyncClient`` (and the semaphore that bounds the
  requests in flight) per event loop. A client is closed when its loop shuts down
  (``asyncio.run``, ``asyncio.Runner``, ``loop.shutdown_asyncgens()``: a small async
  generator bound to the loop closes it) or when the engine closes
  (:meth:`LoopClients.close_all`), so repeated ``asyncio.run`` calls leave no socket open.
* :meth:`RemoteHTTP.request` is one exchange bounded by a deadline, retried with exponential
  backoff on transport errors and 5xx answers only; every failure is a
  :class:`~vllm_retrieval.errors.RemoteEngineError` subclass chosen by the exception type or
  the HTTP status (:func:`.remote_wire.transport_error`, :func:`.remote_wire.status_error`),
  never by the text of a message.
* The API key is read (``get_secret_value``) only in :func:`_auth`, which builds the
  ``Authorization`` header and the scrubber that keeps the key out of error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from ...errors import RemoteEngineError, RemoteTimeoutError
from .remote_wire import status_error, transport_error

__all__ = ["LoopClients", "LoopState", "RemoteHTTP"]

Scrub = Callable[[str], str]


def _auth(api_key: SecretStr | None) -> tuple[dict[str, str], Scrub]:
    """The ``Authorization`` header for ``api_key`` and a scrubber that masks the key in text."""
    value = api_key.get_secret_value() if api_key is not None else ""
    if not value:
        return {}, str
    mask = "*" * 10

    def scrub(text: str) -> str:
        return text.replace(value, mask)

    return {"Authorization": f"Bearer {value}"}, scrub


@dataclass(eq=False)
class LoopState:
    """The client and the in-flight bound of one event loop."""

    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    guard: AsyncIterator[None] | None = field(default=None, repr=False)


async def _close_with_loop(
    states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState], state: LoopState
) -> AsyncIterator[None]:
    """Bound to the loop it first runs on: the loop's ``shutdown_asyncgens`` closes the client."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await state.client.aclose()
        with contextlib.suppress(RuntimeError, KeyError):
            loop = asyncio.get_running_loop()
            if states.get(loop) is state:
                del states[loop]


class LoopClients:
    """One ``httpx.AsyncClient`` per event loop, closed with its loop or by :meth:`close_all`."""

    def __init__(self, make_client: Callable[[], httpx.AsyncClient], concurrency: int) -> None:
        self._make = make_client
        self._concurrency = concurrency
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._closing: set[asyncio.Future[Any]] = set()

    def __len__(self) -> int:
        """How many clients are open (one per live event loop that used the engine)."""
        return sum(1 for s in list(self._states.values()) if not s.client.is_closed)

    async def get(self) -> LoopState:
        """The running loop's client and semaphore (made on its first use)."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is not None and not state.client.is_closed:
            return state
        state = LoopState(client=self._make(), semaphore=asyncio.Semaphore(self._concurrency))
        guard = _close_with_loop(self._states, state)
        state.guard = guard
        with self._lock:
            for old in [lp for lp in list(self._states) if lp.is_closed()]:
                self._states.pop(old, None)  # loops closed without shutdown_asyncgens
            self._states[loop] = state
        await guard.__anext__()  # runs to its yield at once: registered with this loop
        return state

    def close_all(self, timeout: float = 5.0) -> None:
        """Close every client, each on its own loop; never raises."""
        with self._lock:
            items = list(self._states.items())
            self._states.clear()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, state in items:
            if state.client.is_closed or loop.is_closed():
                continue
            coro = state.client.aclose()
            try:
                if loop is current:  # called from sync code on this loop: close in a task
                    task = loop.create_task(coro)
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
                elif loop.is_running():
                    asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
                else:
                    loop.run_until_complete(coro)
            except Exception:  # closing must not raise
                coro.close()


class RemoteHTTP:
    """Requests to one server: per-loop clients, a deadline, retries and typed errors."""

    def __init__(
        self,
        url: str,
        *,
        api_key: SecretStr | None,
        timeout: float,
        max_retries: int,
        backoff: float,
        max_concurrency: int,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.scrub: Scrub = _auth(api_key)[1]
        n = max_concurrency

        def make_client() -> httpx.AsyncClient:
            headers = {"User-Agent": "vllm-retrieval", **_auth(api_key)[0]}
            return httpx.AsyncClient(
                base_url=url,
                headers=headers,
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_connections=n + 2, max_keepalive_connections=n + 2),
                trust_env=False,
            )

        self.clients = LoopClients(make_client, n)

    def __repr__(self) -> str:
        return f"RemoteHTTP({self.url!r})"

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        deadline: float,
        poll: bool = False,
        accept: Collection[int] = (),
    ) -> httpx.Response:
        """One HTTP exchange: retried on transport errors and 5xx, bounded by ``deadline``.

        ``poll`` retries connection errors until the deadline (a server still starting).
        Answers with a status in ``accept`` are returned for the caller to judge; other 4xx
        raise at once (401/403: :class:`~vllm_retrieval.errors.RemoteAuthError`).
        """
        loop = asyncio.get_running_loop()
        client = (await self.clients.get()).client
        where = f"vLLM server {self.url}: {method} {path}"
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RemoteTimeoutError(f"{where} timed out (timeout={self.timeout:g} s)")
            try:
                resp = await asyncio.wait_for(
                    client.request(
                        method, path, json=body, timeout=httpx.Timeout(max(remaining, 0.01))
                    ),
                    timeout=remaining,
                )
            except (asyncio.TimeoutError, httpx.TimeoutException):
                raise RemoteTimeoutError(
                    f"{where} got no complete answer within the timeout ({self.timeout:g} s)"
                ) from None
            except httpx.TransportError as exc:
                last: RemoteEngineError = transport_error(exc, where, self.scrub)
            else:
                if resp.status_code < 400 or resp.status_code in accept:
                    return resp
                last = status_error(resp, where, self.scrub)
                if resp.status_code < 500:
                    raise last
            attempt += 1
            if attempt > self.max_retries and not poll:
                raise type(last)(f"{last} (after {attempt} attempts)")
            delay = self.backoff * 2 ** min(attempt - 1, 6)
            if poll:
                delay = min(delay, 1.0)
            if loop.time() + delay >= deadline:
                raise type(last)(f"{last} (retried until the timeout, {self.timeout:g} s)")
            await asyncio.sleep(delay)
