"""One engine per settings per process: the registries of local and remote engines.

Every :class:`~vllm_retrieval.encoding.encoder.Encoder` with equal engine settings gets the
same engine from here, so all adapters of a process share one vLLM engine (or one HTTP client
pool per server).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable

from .local import EngineSettings, SharedEngine
from .remote import RemoteEngine, RemoteSettings

__all__ = [
    "get_engine",
    "get_remote_engine",
    "release_engine",
    "shutdown_engines",
    "shutdown_remote_engines",
]

_ENGINES: dict[EngineSettings, SharedEngine] = {}
_REMOTE: dict[RemoteSettings, RemoteEngine] = {}
_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def get_engine(settings: EngineSettings) -> SharedEngine:
    """The process-wide in-process engine for ``settings``, started on first use."""
    global _ATEXIT_REGISTERED
    with _LOCK:
        if not _ATEXIT_REGISTERED:
            atexit.register(shutdown_engines)
            _ATEXIT_REGISTERED = True
        engine = _ENGINES.get(settings)
        if engine is None or not engine.alive:
            engine = SharedEngine(settings)
            _ENGINES[settings] = engine
        return engine


def release_engine(settings: EngineSettings) -> None:
    """Stop the engine for ``settings`` (if any); Encoders using it start a new one on demand."""
    with _LOCK:
        engine = _ENGINES.pop(settings, None)
    if engine is not None:
        engine.close()


def shutdown_engines() -> None:
    """Stop every in-process engine of this process (tests, apps that swap models)."""
    with _LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.close()


def get_remote_engine(
    settings: RemoteSettings,
    *,
    probe_ids: list[int] | None = None,
    local_tokenize: Callable[[str], list[int]] | None = None,
) -> RemoteEngine:
    """The process-wide remote engine for ``settings`` (server, model, key, transfer, ...).

    Discovery happens on :meth:`RemoteEngine.wait_ready`. ``Encoder.remote_engine()`` builds
    the settings and the tokenizer checks from an ``Encoder(base_url=...)``.
    """
    with _LOCK:
        engine = _REMOTE.get(settings)
        if engine is None or engine.closed:
            engine = RemoteEngine(settings, probe_ids=probe_ids, local_tokenize=local_tokenize)
            _REMOTE[settings] = engine
        return engine


def shutdown_remote_engines() -> None:
    """Close every remote engine of this process (HTTP clients and background loops)."""
    with _LOCK:
        engines = list(_REMOTE.values())
        _REMOTE.clear()
    for engine in engines:
        engine.close()
