"""One engine per settings per process, reference-counted: the local and remote registries.

Every :class:`~vllm_retrieval.encoding.encoder.Encoder` with equal engine settings gets the
same engine from here, so all adapters of a process share one vLLM engine (or one HTTP client
pool per server).

**Lifecycle.** An Encoder *acquires* the engine on first use and holds one reference (an
:class:`EngineLease`); ``Encoder.close()`` releases that reference only. The engine stops
when its last reference is released, so closing one Encoder (or adapter) never stops an
engine that another still holds, and an engine nobody holds does not outlive its users in a
long-running service. :func:`shutdown_engines` and :func:`shutdown_remote_engines` are the
explicit process-wide stop (whatever the references); an Encoder used after either acquires
a fresh engine on its next call. :func:`get_engine` and :func:`get_remote_engine` hand out an
engine *without* taking a reference: it lives until its holders have all released it, or
until the shutdown functions.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from .local import EngineSettings, SharedEngine
from .remote import RemoteEngine, RemoteSettings

__all__ = [
    "EngineLease",
    "acquire_engine",
    "acquire_remote_engine",
    "engine_references",
    "get_engine",
    "get_remote_engine",
    "release_engine",
    "shutdown_engines",
    "shutdown_remote_engines",
]

E = TypeVar("E")
K = TypeVar("K", bound=Hashable)

_LOCK = threading.Lock()  # guards both registries and every lease
_ATEXIT_REGISTERED = False


class EngineLease(Generic[E]):
    """One holder's reference to a shared engine; :meth:`release` is idempotent."""

    __slots__ = ("_registry", "_released", "engine", "key")

    def __init__(self, registry: _Registry[Any, E], key: Hashable, engine: E) -> None:
        self._registry = registry
        self.key = key
        self.engine = engine
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    @property
    def active(self) -> bool:
        """Held, and its engine still running (not stopped by a shutdown, not crashed)."""
        return not self._released and self._registry.usable(self.engine)

    def release(self) -> None:
        """Give the reference back; the engine stops if it was the last one."""
        self._registry.release(self)


class _Slot(Generic[E]):
    __slots__ = ("engine", "refs")

    def __init__(self, engine: E) -> None:
        self.engine = engine
        self.refs = 0


class _Registry(Generic[K, E]):
    """Engines by settings, each with the number of leases held on it."""

    def __init__(self, usable: Callable[[E], bool], stop: Callable[[E], None]) -> None:
        self.usable = usable
        self._stop = stop
        self._slots: dict[K, _Slot[E]] = {}

    def _slot(self, key: K, make: Callable[[], E]) -> _Slot[E]:
        """The slot of ``key`` (caller holds ``_LOCK``); a stopped engine is replaced."""
        slot = self._slots.get(key)
        if slot is None or not self.usable(slot.engine):
            slot = _Slot(make())
            self._slots[key] = slot
        return slot

    def get(self, key: K, make: Callable[[], E]) -> E:
        with _LOCK:
            return self._slot(key, make).engine

    def acquire(self, key: K, make: Callable[[], E]) -> EngineLease[E]:
        with _LOCK:
            slot = self._slot(key, make)
            slot.refs += 1
            return EngineLease(self, key, slot.engine)

    def release(self, lease: EngineLease[E]) -> None:
        stopping: E | None = None
        with _LOCK:
            if lease._released:
                return
            lease._released = True
            key: K = lease.key  # type: ignore[assignment]
            slot = self._slots.get(key)
            # A lease on an engine already replaced or shut down has nothing left to count.
            if slot is not None and slot.engine is lease.engine:
                slot.refs -= 1
                if slot.refs <= 0:
                    del self._slots[key]
                    stopping = slot.engine
        if stopping is not None:
            self._stop(stopping)

    def references(self, key: K) -> int:
        with _LOCK:
            slot = self._slots.get(key)
            return 0 if slot is None else slot.refs

    def pop(self, key: K) -> E | None:
        with _LOCK:
            slot = self._slots.pop(key, None)
        return None if slot is None else slot.engine

    def shutdown(self) -> None:
        with _LOCK:
            engines = [s.engine for s in self._slots.values()]
            self._slots.clear()
        for engine in engines:
            self._stop(engine)


def _local_usable(engine: SharedEngine) -> bool:
    return engine.alive


def _remote_usable(engine: RemoteEngine) -> bool:
    return not engine.closed


def _stop(engine: SharedEngine | RemoteEngine) -> None:
    engine.close()


_LOCAL: _Registry[EngineSettings, SharedEngine] = _Registry(_local_usable, _stop)
_REMOTE: _Registry[RemoteSettings, RemoteEngine] = _Registry(_remote_usable, _stop)


def _register_atexit() -> None:
    global _ATEXIT_REGISTERED
    with _LOCK:
        if _ATEXIT_REGISTERED:
            return
        _ATEXIT_REGISTERED = True
    atexit.register(shutdown_engines)


def _local_factory(settings: EngineSettings) -> Callable[[], SharedEngine]:
    _register_atexit()
    return lambda: SharedEngine(settings)


def acquire_engine(settings: EngineSettings) -> EngineLease[SharedEngine]:
    """A reference to the process-wide in-process engine for ``settings`` (started on first
    use); the engine stops when the last reference is released."""
    return _LOCAL.acquire(settings, _local_factory(settings))


def get_engine(settings: EngineSettings) -> SharedEngine:
    """The process-wide in-process engine for ``settings``, without taking a reference."""
    return _LOCAL.get(settings, _local_factory(settings))


def engine_references(settings: EngineSettings | RemoteSettings) -> int:
    """How many references (Encoders, mostly) hold the engine of ``settings`` now."""
    if isinstance(settings, RemoteSettings):
        return _REMOTE.references(settings)
    return _LOCAL.references(settings)


def release_engine(settings: EngineSettings) -> None:
    """Stop the engine for ``settings`` now, whoever holds it (Encoders using it start a new
    one on their next call). ``Encoder.close()`` does not call this: it releases its own
    reference only."""
    engine = _LOCAL.pop(settings)
    if engine is not None:
        engine.close()


def shutdown_engines() -> None:
    """Stop every in-process engine of this process, whatever the references (tests, apps
    that swap models, process exit); Encoders start a new one on their next call."""
    _LOCAL.shutdown()


def _remote_factory(
    settings: RemoteSettings,
    probe_ids: list[int] | None,
    local_tokenize: Callable[[str], list[int]] | None,
) -> Callable[[], RemoteEngine]:
    return lambda: RemoteEngine(settings, probe_ids=probe_ids, local_tokenize=local_tokenize)


def acquire_remote_engine(
    settings: RemoteSettings,
    *,
    probe_ids: list[int] | None = None,
    local_tokenize: Callable[[str], list[int]] | None = None,
) -> EngineLease[RemoteEngine]:
    """A reference to the process-wide remote engine for ``settings``; its HTTP clients are
    closed when the last reference is released."""
    return _REMOTE.acquire(settings, _remote_factory(settings, probe_ids, local_tokenize))


def get_remote_engine(
    settings: RemoteSettings,
    *,
    probe_ids: list[int] | None = None,
    local_tokenize: Callable[[str], list[int]] | None = None,
) -> RemoteEngine:
    """The process-wide remote engine for ``settings`` (server, model, key, transfer, ...),
    without taking a reference.

    Discovery happens on :meth:`RemoteEngine.wait_ready`. ``Encoder.remote_engine()`` builds
    the settings and the tokenizer checks from an ``Encoder(base_url=...)``.
    """
    return _REMOTE.get(settings, _remote_factory(settings, probe_ids, local_tokenize))


def shutdown_remote_engines() -> None:
    """Close every remote engine of this process (HTTP clients and background loops)."""
    _REMOTE.shutdown()
