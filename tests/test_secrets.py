"""The remote API key is a secret: never in a repr, str, JSON dump, log line or error message.

The key is a ``pydantic.SecretStr`` in ``EncoderSettings`` (so in the Encoder and both
adapters) and in ``RemoteSettings``; it is read only to build the ``Authorization`` header.
Without ``api_key``, a remote encoder uses ``$VLLM_API_KEY``. The server here is the stub
vLLM server of ``test_remote_faults`` (no model runs).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from test_remote_faults import DIM, Stub, serve_stub
from vllm_retrieval import Encoder
from vllm_retrieval.encoding import RemoteSettings, shutdown_remote_engines
from vllm_retrieval.encoding.profiles import default_model_path
from vllm_retrieval.errors import RemoteAuthError

KEY = "sk-secret-123"
NOWHERE = "http://127.0.0.1:9"  # nothing is sent there: no test here starts that engine


@pytest.fixture(autouse=True)
def _close_remote_engines() -> Iterator[None]:
    yield
    shutdown_remote_engines()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return Encoder(base_url=NOWHERE).tokenizer


@pytest.fixture
def stub(tokenizer: Any) -> Iterator[tuple[Stub, str]]:
    with serve_stub(tokenizer) as served:
        yield served


def _renderings(obj: object, *extra: Callable[[], str]) -> list[str]:
    out = [repr(obj), str(obj), f"{obj}", f"{obj!r}"]
    dump = getattr(obj, "model_dump_json", None)
    if dump is not None:
        out.append(dump())
    return out + [fn() for fn in extra]


def _assert_hidden(texts: list[str], key: str = KEY) -> None:
    for text in texts:
        assert key not in text, text


# -- never rendered ----------------------------------------------------------------------------


def test_encoder_hides_the_key() -> None:
    enc = Encoder(base_url=NOWHERE, api_key=KEY)
    assert isinstance(enc.api_key, SecretStr)
    assert enc.api_key.get_secret_value() == KEY  # a plain str is accepted and kept
    _assert_hidden(_renderings(enc, lambda: str(enc.model_dump())))
    assert Encoder(base_url=NOWHERE, api_key=SecretStr(KEY)).api_key == enc.api_key


def test_langchain_embeddings_hide_the_key() -> None:
    pytest.importorskip("langchain_core")
    from vllm_retrieval.langchain import VLLMEmbeddings

    emb = VLLMEmbeddings(base_url=NOWHERE, api_key=KEY)
    _assert_hidden(_renderings(emb) + _renderings(emb.core_encoder))
    assert emb.core_encoder.api_key is not None
    assert emb.core_encoder.api_key.get_secret_value() == KEY  # it reaches the Encoder


def test_llama_index_embedding_hides_the_key() -> None:
    pytest.importorskip("llama_index.core")
    from vllm_retrieval.llama_index import VLLMEmbedding

    emb = VLLMEmbedding(base_url=NOWHERE, api_key=KEY)
    _assert_hidden(_renderings(emb, emb.to_json, lambda: str(emb.to_dict())))
    _assert_hidden(_renderings(emb.encoder))
    assert emb.encoder.api_key is not None
    assert emb.encoder.api_key.get_secret_value() == KEY


def test_remote_settings_and_engine_hide_the_key() -> None:
    settings = RemoteSettings(base_url=NOWHERE, model_path=default_model_path(), api_key=KEY)
    assert isinstance(settings.api_key, SecretStr)
    _assert_hidden(_renderings(settings))
    engine = Encoder(base_url=NOWHERE, api_key=KEY).remote_engine()  # no request is made
    _assert_hidden(_renderings(engine, lambda: repr(engine.settings), lambda: str(vars(engine))))
    # Equal keys share one engine; another key is another engine.
    other = RemoteSettings(base_url=NOWHERE, model_path=default_model_path(), api_key="x")
    same = RemoteSettings(base_url=NOWHERE, model_path=default_model_path(), api_key=KEY)
    assert same == settings and hash(same) == hash(settings) and other != settings


# -- never in errors or logs -------------------------------------------------------------------


@pytest.mark.parametrize("echo", [False, True], ids=["plain-401", "401-quoting-the-key"])
def test_a_wrong_key_is_a_typed_error_without_the_key(
    stub: tuple[Stub, str], caplog: pytest.LogCaptureFixture, echo: bool
) -> None:
    state, url = stub
    state.api_key = "the-right-key"
    state.echo_auth = echo  # a server (or proxy) that quotes the header it refused
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RemoteAuthError) as info:
        Encoder(base_url=url, api_key=KEY, timeout=5.0).start()
    err = info.value
    assert "401" in str(err) and url in str(err)
    assert f"Bearer {KEY}" in state.auth_seen  # the key was sent...
    text = "".join(traceback.format_exception(err))
    _assert_hidden([str(err), repr(err), text, caplog.text])  # ...and is shown nowhere
    if echo:
        assert "Bearer **********" in str(err)


def test_the_right_key_works_and_logs_stay_clean(
    stub: tuple[Stub, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, url = stub
    state.api_key = KEY
    caplog.set_level(logging.DEBUG)
    enc = Encoder(base_url=url, api_key=KEY, timeout=5.0)
    assert enc.embed_query("hi").shape == (DIM,)
    assert set(state.auth_seen) == {f"Bearer {KEY}"}
    _assert_hidden([caplog.text])


# -- the environment fallback ------------------------------------------------------------------


def test_vllm_api_key_from_the_environment(
    stub: tuple[Stub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = stub
    state.api_key = "sk-env-456"
    monkeypatch.setenv("VLLM_API_KEY", "sk-env-456")
    enc = Encoder(base_url=url, timeout=5.0)  # no api_key: $VLLM_API_KEY
    assert enc.embed_query("hi").shape == (DIM,)
    assert set(state.auth_seen) == {"Bearer sk-env-456"}
    engine = enc.remote_engine()
    _assert_hidden(_renderings(engine.settings) + _renderings(enc), key="sk-env-456")
    # An explicit key wins over the environment.
    with pytest.raises(RemoteAuthError):
        Encoder(base_url=url, api_key="another", timeout=5.0).start()
    assert state.auth_seen[-1] == "Bearer another"


def test_no_key_sends_no_header(stub: tuple[Stub, str], monkeypatch: pytest.MonkeyPatch) -> None:
    state, url = stub
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert Encoder(base_url=url, timeout=5.0).embed_query("hi").shape == (DIM,)
    monkeypatch.setenv("VLLM_API_KEY", "sk-env-456")
    # An empty key opts out of the environment's.
    assert Encoder(base_url=url, api_key="", timeout=5.0).embed_query("hi").shape == (DIM,)
    assert set(state.auth_seen) == {None}
