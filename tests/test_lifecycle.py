"""Shared engine lifecycles: reference counting, ``close()``, context managers.

Closing one Encoder (or adapter) releases its own reference only: another Encoder of the same
settings keeps working on the same engine, without a restart. The engine stops when its last
reference goes; ``shutdown_engines()`` stops everything. The registry's counting is checked
with stand-in engines (no second vLLM engine is started); the sharing with the session's real
engine, and the adapters as context managers, on the real engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, ClassVar

import numpy as np
import pytest

from vllm_retrieval import Encoder, EngineError, shutdown_remote_engines
from vllm_retrieval.encoding.backends import SharedEngine, registry

# Engine settings no other test uses, so stand-in engines never meet the session's real one.
ODD: dict[str, Any] = {"engine_kwargs": {"max_num_seqs": 3}}


class FakeEngine:
    """Stands in for SharedEngine / RemoteEngine: counts starts and stops."""

    made: ClassVar[list[FakeEngine]] = []
    fail_start = False

    def __init__(self, settings: Any, **_: Any) -> None:
        self.settings = settings
        self.stops = 0
        FakeEngine.made.append(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        if FakeEngine.fail_start:
            self.stops += 1  # a failed start leaves a dead engine
            raise EngineError("could not start (stand-in)")

    @property
    def alive(self) -> bool:
        return self.stops == 0

    @property
    def closed(self) -> bool:
        return self.stops > 0

    def close(self) -> None:
        self.stops += 1

    def submit(self, ids: Any) -> Future[list[Any]]:
        fut: Future[list[Any]] = Future()
        fut.set_result([np.ones((len(i), 4), dtype=np.float32) for i in ids])
        return fut


@pytest.fixture
def fake_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeEngine]]:
    FakeEngine.made = []
    FakeEngine.fail_start = False
    monkeypatch.setattr(registry, "SharedEngine", FakeEngine)
    monkeypatch.setattr(registry, "RemoteEngine", FakeEngine)
    yield FakeEngine
    for engine in FakeEngine.made:  # nothing of the stand-ins stays registered
        engine.stops += 1
        if not hasattr(engine.settings, "base_url"):
            registry.release_engine(engine.settings)
    shutdown_remote_engines()


def refs(enc: Encoder) -> int:
    return registry.engine_references(enc.engine_settings)


def test_close_releases_only_its_own_reference(fake_engines: type[FakeEngine]) -> None:
    a, b = Encoder(**ODD), Encoder(batch_size=5, **ODD)
    assert a.start().engine is b.start().engine
    (engine,) = fake_engines.made
    assert refs(a) == 2
    a.close()
    assert refs(a) == 1 and engine.stops == 0  # b still holds it: nothing stopped
    assert b.engine is engine and b.holds_engine and not a.holds_engine
    a.close()  # idempotent: a second close is a no-op
    assert refs(a) == 1 and engine.stops == 0
    assert a.engine is engine  # used after close: a new reference on the same engine
    assert refs(a) == 2 and len(fake_engines.made) == 1
    a.close()
    b.close()  # the last reference: the engine stops, once
    assert refs(a) == 0 and engine.stops == 1
    assert b.engine is not engine and len(fake_engines.made) == 2  # a fresh one on demand
    b.close()
    assert fake_engines.made[1].stops == 1


def test_encoder_is_a_context_manager(fake_engines: type[FakeEngine]) -> None:
    keeper = Encoder(**ODD).start()
    with Encoder(**ODD) as enc:
        assert enc.start().engine is keeper.engine and refs(enc) == 2
    assert refs(keeper) == 1 and not enc.holds_engine and keeper.holds_engine
    keeper.close()
    assert fake_engines.made[0].stops == 1


def test_a_copy_holds_its_own_reference(fake_engines: type[FakeEngine]) -> None:
    a = Encoder(**ODD).start()
    with a.model_copy(update={"batch_size": 2}) as b:
        assert b.engine is a.engine and refs(a) == 2
    assert refs(a) == 1 and a.holds_engine and not b.holds_engine
    assert fake_engines.made[0].stops == 0
    a.close()
    assert fake_engines.made[0].stops == 1


def test_explicit_stop_whatever_the_references(fake_engines: type[FakeEngine]) -> None:
    # release_engine(settings) stops one engine as shutdown_engines() stops them all (which
    # would stop the session's engine here too).
    a, b = Encoder(**ODD).start(), Encoder(**ODD).start()
    old: Any = a.engine
    registry.release_engine(a.engine_settings)
    assert old.stops == 1 and not a.holds_engine and refs(a) == 0
    assert a.engine is not old and refs(a) == 1  # the next call acquires a new engine
    b.close()
    assert old.stops == 1 and refs(a) == 1  # a stale reference is not counted on the new one
    a.close()
    assert fake_engines.made[1].stops == 1


def test_failed_start_holds_no_reference(fake_engines: type[FakeEngine]) -> None:
    fake_engines.fail_start = True
    enc = Encoder(**ODD)
    with pytest.raises(EngineError, match="stand-in"):
        enc.start()
    assert refs(enc) == 0 and not enc.holds_engine
    fake_engines.fail_start = False
    assert enc.start().holds_engine and refs(enc) == 1
    enc.close()


def test_remote_engines_are_counted_too(fake_engines: type[FakeEngine]) -> None:
    a = Encoder(base_url="http://127.0.0.1:9/", timeout=1.0)
    b = Encoder(base_url="http://127.0.0.1:9", timeout=1.0, batch_size=3)
    assert a.engine is b.engine
    (engine,) = fake_engines.made
    settings = engine.settings
    assert registry.engine_references(settings) == 2
    a.close()
    assert engine.stops == 0 and b.engine is engine
    b.close()  # the last one: the remote engine closes its HTTP clients
    assert engine.stops == 1 and registry.engine_references(settings) == 0
    b.close()
    assert engine.stops == 1


def test_threads_share_one_reference_per_encoder(fake_engines: type[FakeEngine]) -> None:
    enc = Encoder(**ODD)

    async def many() -> None:
        await asyncio.gather(*(asyncio.to_thread(lambda: enc.engine) for _ in range(16)))

    asyncio.run(many())
    assert refs(enc) == 1 and len(fake_engines.made) == 1
    enc.close()
    assert refs(enc) == 0


# -- on the session's real engine ------------------------------------------------------------


@pytest.fixture
def counted_starts(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every SharedEngine made while the test runs (there should be none)."""
    made: list[Any] = []
    real = getattr(registry, "SharedEngine")  # noqa: B009 - patched below

    def counting(settings: Any) -> Any:
        made.append(settings)
        return real(settings)

    monkeypatch.setattr(registry, "SharedEngine", counting)
    return made


def test_closing_one_encoder_leaves_the_other_working(
    encoder: Encoder, counted_starts: list[Any]
) -> None:
    engine = encoder.engine
    assert isinstance(engine, SharedEngine)
    base = refs(encoder)
    a, b = Encoder(), Encoder(batch_size=3)
    assert a.engine is b.engine is engine and refs(encoder) == base + 2
    a.close()
    assert refs(encoder) == base + 1
    expected = encoder.embed_query("statins lower cholesterol")
    np.testing.assert_allclose(b.embed_query("statins lower cholesterol"), expected, atol=1e-6)
    assert b.engine is engine and encoder.engine is engine and engine.alive
    a.close()
    np.testing.assert_allclose(a.embed_query("statins lower cholesterol"), expected, atol=1e-6)
    assert a.engine is engine and refs(encoder) == base + 2
    a.close()
    b.close()
    assert refs(encoder) == base and engine.alive  # the session's encoder still holds it
    assert counted_starts == []  # nothing was restarted


def _lc_adapters(encoder: Encoder, store: Any) -> list[tuple[Callable[[], Any], bool]]:
    from vllm_retrieval.langchain import (
        VLLMEmbeddings,
        VLLMMaxSimReranker,
        VLLMMultiVectorRetriever,
        VLLMMultiVectorStore,
    )

    return [
        (lambda: VLLMEmbeddings(), True),
        (lambda: VLLMEmbeddings(encoder=encoder), False),
        (lambda: VLLMMaxSimReranker(), True),
        (lambda: VLLMMaxSimReranker(encoder=encoder), False),
        (lambda: VLLMMultiVectorRetriever(store=store), False),
        (lambda: VLLMMultiVectorStore(), True),
        (lambda: VLLMMultiVectorStore(encoder=encoder), False),
    ]


def _li_adapters(encoder: Encoder, store: Any) -> list[tuple[Callable[[], Any], bool]]:
    from llama_index.core.schema import TextNode

    from vllm_retrieval.llama_index import (
        VLLMEmbedding,
        VLLMMaxSimRerank,
        VLLMMultiVectorRetriever,
        VLLMMultiVectorStore,
    )

    nodes = [TextNode(id_="n1", text="Statins lower LDL cholesterol.")]
    return [
        (lambda: VLLMEmbedding(), True),
        (lambda: VLLMEmbedding(encoder=encoder), False),
        (lambda: VLLMEmbedding(encoder=encoder, query_instruction="query: "), True),  # derived here
        (lambda: VLLMMaxSimRerank(), True),
        (lambda: VLLMMaxSimRerank(encoder=encoder), False),
        (lambda: VLLMMultiVectorRetriever(store), False),
        (lambda: VLLMMultiVectorRetriever.from_documents(nodes), True),
        (lambda: VLLMMultiVectorStore(), True),
        (lambda: VLLMMultiVectorStore(encoder=encoder), False),
    ]


def _adapter_encoder(adapter: Any) -> Encoder:
    for name in ("core_encoder", "encoder"):
        enc = getattr(adapter, name, None)
        if isinstance(enc, Encoder):
            return enc
    for name in ("reranker", "core_reranker"):
        rr = getattr(adapter, name, None)
        if rr is not None and isinstance(getattr(rr, "encoder", None), Encoder):
            return rr.encoder  # type: ignore[no-any-return]
    store = getattr(adapter, "store", None)  # an empty store is falsy: no `or` here
    if store is None:
        store = adapter.client
    return store.encoder  # type: ignore[no-any-return,union-attr]


@pytest.mark.parametrize("framework", ["langchain", "llama_index"])
def test_adapters_are_context_managers(
    encoder: Encoder, counted_starts: list[Any], framework: str
) -> None:
    from vllm_retrieval.store import MultiVectorStore

    engine = encoder.engine
    assert isinstance(engine, SharedEngine)
    base = refs(encoder)
    store = MultiVectorStore(location=":memory:", encoder=encoder)
    try:
        make = _lc_adapters if framework == "langchain" else _li_adapters
        for factory, owns in make(encoder, store):  # made one at a time: refs are counted
            adapter = factory()
            enc = _adapter_encoder(adapter)
            with adapter as same:
                assert same is adapter
                assert enc.engine is engine  # joins the one engine
                during = refs(encoder)
            after = refs(encoder)
            assert after == base, (type(adapter).__name__, during, after)
            # An encoder made here is released; one passed in (the session's) still holds.
            assert enc.holds_engine is (not owns), type(adapter).__name__
            adapter.close()  # idempotent
            assert refs(encoder) == base and encoder.holds_engine
        assert len(store) == 0 and encoder.embed_query("still served").shape == (384,)
    finally:
        store.close()
    assert engine.alive and counted_starts == []
