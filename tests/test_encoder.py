"""The core encoder on the real vLLM CPU engine with the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from vllm_retrieval import Encoder
from vllm_retrieval.encoding.backends import get_engine
from vllm_retrieval.encoding.profiles import load_profile
from vllm_retrieval.errors import require

LONG = " ".join(["retrieval"] * 2000)


@pytest.fixture(scope="module")
def docs(scifact_sample: dict[str, object]) -> list[str]:
    corpus = scifact_sample["corpus"]
    assert isinstance(corpus, dict)
    return [*list(corpus.values())[:24], "short", "Hello, world!", LONG]


@pytest.fixture(scope="module")
def st_model(encoder: Encoder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(encoder.model_path, device="cpu")


def _rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def test_import_is_light() -> None:
    code = (
        "import sys, vllm_retrieval;"
        "bad = [m for m in ('vllm', 'torch', 'langchain_core', 'llama_index', 'transformers')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_missing_extra_is_named() -> None:
    with pytest.raises(ImportError, match=r"vllm-retrieval\[qdrant\]"):
        require("a_module_that_is_not_installed", "qdrant")


def test_dense_matches_sentence_transformers(encoder: Encoder, st_model, docs: list[str]) -> None:
    ours = encoder.embed_documents(docs)
    ref = st_model.encode(docs, normalize_embeddings=True, batch_size=8)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (len(docs), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert _rowwise_cos(ours, ref).min() >= 0.9999


def test_tokens_match_sentence_transformers(encoder: Encoder, st_model, docs: list[str]) -> None:
    ours = encoder.embed_documents_tokens(docs)
    ref = st_model.encode(docs, output_value="token_embeddings", batch_size=8)
    assert len(ours) == len(docs)
    for mine, theirs in zip(ours, ref, strict=True):
        theirs = theirs.float().numpy()
        assert mine.dtype == np.float32 and mine.shape == theirs.shape
        np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
        assert _rowwise_cos(mine, theirs).min() >= 0.9999


def test_encode_documents_is_one_pass_equal_to_separate_calls(
    encoder: Encoder, docs: list[str]
) -> None:
    dense, tokens = encoder.encode_documents(docs)
    np.testing.assert_allclose(dense, encoder.embed_documents(docs), atol=1e-6)
    for a, b in zip(tokens, encoder.embed_documents_tokens(docs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Each text is one engine request: token rows = the ids the engine saw.
    ids = encoder.token_ids(docs, is_query=False)
    assert [t.shape[0] for t in tokens] == [len(i) for i in ids]


def test_query_methods(encoder: Encoder) -> None:
    q = encoder.embed_query("What causes cancer?")
    assert q.shape == (384,) and q.dtype == np.float32
    np.testing.assert_allclose(q, encoder.embed_documents(["What causes cancer?"])[0], atol=1e-6)
    qt = encoder.embed_query_tokens("What causes cancer?")
    assert qt.ndim == 2 and qt.shape[1] == 384
    assert encoder.dimension == 384


def test_prefixes_are_applied(encoder: Encoder) -> None:
    prefixed = Encoder(query_prefix="query: ", document_prefix="passage: ")
    assert prefixed.engine is encoder.engine  # same settings -> same shared engine
    np.testing.assert_allclose(
        prefixed.embed_query("a cat"), encoder.embed_documents(["query: a cat"])[0], atol=1e-6
    )
    np.testing.assert_allclose(
        prefixed.embed_documents(["a cat"])[0],
        encoder.embed_documents(["passage: a cat"])[0],
        atol=1e-6,
    )


def test_long_inputs_are_truncated_not_rejected(encoder: Encoder) -> None:
    tokens = encoder.embed_documents_tokens([LONG])[0]
    assert tokens.shape == (256, 384)  # the model's sentence-transformers max_seq_length
    short = Encoder(max_length=32)
    assert short.embed_documents_tokens([LONG])[0].shape == (32, 384)


def test_empty_list_gives_empty_results(encoder: Encoder) -> None:
    assert encoder.embed_documents([]).shape == (0, 0)
    assert encoder.embed_documents_tokens([]) == []
    dense, tokens = encoder.encode_documents([])
    assert dense.shape[0] == 0 and tokens == []


@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        (["ok", ""], ValueError, r"texts\[1\] is an empty string"),
        (["ok", None], TypeError, r"texts\[1\] must be a str, got NoneType"),
        ([3], TypeError, r"texts\[0\] must be a str, got int"),
        ("a single string", TypeError, "list of strings"),
        (None, TypeError, "list of strings"),
    ],
)
def test_bad_document_inputs(encoder: Encoder, bad: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        encoder.embed_documents(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("bad", "exc"), [("", ValueError), (None, TypeError), (1, TypeError)])
def test_bad_query_inputs(encoder: Encoder, bad: object, exc: type) -> None:
    with pytest.raises(exc, match="query"):
        encoder.embed_query(bad)  # type: ignore[arg-type]
    with pytest.raises(exc, match="query"):
        asyncio.run(encoder.aembed_query_tokens(bad))  # type: ignore[arg-type]


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="extra"):
        Encoder(modle="typo")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="greater than 0"):
        Encoder(batch_size=0)
    with pytest.raises(ValueError, match="exceeds the model's limit"):
        Encoder(max_length=100_000)


def test_engine_is_shared_per_settings(encoder: Encoder) -> None:
    other = Encoder(batch_size=3, show_progress=True)
    assert other.engine is encoder.engine
    assert get_engine(encoder.engine_settings) is encoder.engine


def test_progress_bar_and_small_batches(encoder: Encoder, docs: list[str], capsys) -> None:
    chatty = Encoder(batch_size=4, show_progress=True)
    np.testing.assert_allclose(
        chatty.embed_documents(docs), encoder.embed_documents(docs), atol=1e-6
    )
    assert "Encoding" in capsys.readouterr().err


def test_threads_and_tasks_match_serial_results(encoder: Encoder, docs: list[str]) -> None:
    texts = [f"{d} [{i}]" for i, d in enumerate(docs * 2)]
    serial = [encoder.encode_documents([t]) for t in texts]
    results: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(worker, len(texts), 8):
                results[i] = encoder.encode_documents([texts[i]])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

    async def many() -> list[tuple[np.ndarray, list[np.ndarray]]]:
        return await asyncio.gather(*(encoder.aencode_documents([t]) for t in texts[:32]))

    async_results = asyncio.run(many())
    for i, (dense, tokens) in enumerate(serial):
        np.testing.assert_allclose(results[i][0], dense, atol=1e-5)
        np.testing.assert_allclose(results[i][1][0], tokens[0], atol=1e-5)
        if i < 32:
            np.testing.assert_allclose(async_results[i][0], dense, atol=1e-5)
            np.testing.assert_allclose(async_results[i][1][0], tokens[0], atol=1e-5)


def test_async_does_not_block_the_event_loop(encoder: Encoder, docs: list[str]) -> None:
    async def main() -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await encoder.aembed_documents(docs * 4)
        done.set()
        await task
        return ticks

    assert asyncio.run(main()) > 3


# -- profiles -------------------------------------------------------------------------------


def _write_model_dir(tmp: Path, pooling: dict[str, bool]) -> Path:
    import json

    (tmp / "1_Pooling").mkdir(parents=True)
    (tmp / "config.json").write_text(
        json.dumps({"architectures": ["BertModel"], "max_position_embeddings": 512})
    )
    (tmp / "modules.json").write_text(
        json.dumps(
            [
                {"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (tmp / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return tmp


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"pooling_mode_cls_token": True}, "cls"),
        ({"pooling_mode_mean_tokens": True}, "mean"),
        ({"pooling_mode_max_tokens": True}, "max"),
        ({"pooling_mode_lasttoken": True}, "last"),
    ],
)
def test_profile_pooling_from_sentence_transformers_config(
    tmp_path: Path, flags: dict[str, bool], expected: str
) -> None:
    profile = load_profile(str(_write_model_dir(tmp_path, flags)))
    assert profile.kind == "sentence-transformers" and profile.pooling == expected
    assert load_profile(str(tmp_path), pooling="cls").pooling == "cls"


def test_profile_pooling_math() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], dtype=np.float32)
    from vllm_retrieval.encoding.profiles import ModelProfile

    def unit(v: list[float]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        return a / np.linalg.norm(a)

    np.testing.assert_allclose(
        ModelProfile("sentence-transformers", "mean").pool(rows), unit([4, 3]), rtol=1e-6
    )
    np.testing.assert_allclose(
        ModelProfile("sentence-transformers", "cls").pool(rows), unit([1, 0]), rtol=1e-6
    )
    np.testing.assert_allclose(
        ModelProfile("sentence-transformers", "max").pool(rows), unit([3, 2]), rtol=1e-6
    )
    np.testing.assert_allclose(
        ModelProfile("sentence-transformers", "last").pool(rows), unit([3, 1]), rtol=1e-6
    )


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config\.json"):
        load_profile(str(tmp_path))


def test_engine_start_failure_is_typed(tmp_path: Path) -> None:
    from vllm_retrieval import EngineError

    model = _write_model_dir(tmp_path / "broken", {"pooling_mode_mean_tokens": True})
    (model / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    (model / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    enc = Encoder(model=str(model))
    with pytest.raises(EngineError, match="could not start vLLM"):
        enc.embed_documents(["hello"])


def test_dtype_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vllm_retrieval.encoding.backends.local as engine_mod

    def cpu(name: str, vendor: str, flags: str) -> str:
        path = tmp_path / name
        path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu {flags}\n")
        return str(path)

    intel, amd = "GenuineIntel", "AuthenticAMD"
    assert engine_mod.fast_bf16_cpu(cpu("spr", intel, "avx512f avx512_bf16 amx_bf16 amx_tile"))
    assert engine_mod.fast_bf16_cpu(cpu("zen4", amd, "avx2 avx512f avx512_bf16"))
    # Intel's AVX-512 BF16 without AMX is slower than float32 in vLLM: not chosen.
    assert not engine_mod.fast_bf16_cpu(cpu("cpx", intel, "avx2 avx512f avx512_bf16"))
    assert not engine_mod.fast_bf16_cpu(cpu("zen3", amd, "sse avx2 fma f16c"))
    assert not engine_mod.fast_bf16_cpu(str(tmp_path / "missing"))

    resolve = engine_mod.resolve_dtype
    monkeypatch.delenv(engine_mod.DTYPE_ENV, raising=False)
    monkeypatch.setattr(engine_mod, "fast_bf16_cpu", lambda cpuinfo="": True)
    assert resolve(None, cuda=False) == resolve("auto", cuda=False) == "bfloat16"
    assert resolve(None, cuda=True) == "auto"  # GPU: the model's dtype, vLLM's choice
    assert resolve("float16", cuda=False) == "float16"  # explicit choices pass through
    monkeypatch.setattr(engine_mod, "fast_bf16_cpu", lambda cpuinfo="": False)
    assert resolve(None, cuda=False) == "float32"
    monkeypatch.setenv(engine_mod.DTYPE_ENV, "bfloat16")
    assert resolve(None, cuda=False) == "bfloat16"
    assert resolve("float32", cuda=False) == "float32"
    # Engines are keyed by the resolved dtype: the default and its explicit twin share one.
    assert Encoder().engine_settings == Encoder(dtype="bfloat16").engine_settings
    assert Encoder().engine_settings != Encoder(dtype="float32").engine_settings


def test_bfloat16_engine_stays_close_to_float32(
    encoder: Encoder, st_model, docs: list[str]
) -> None:
    """The CPU default where bf16 units exist: near-float32 vectors from a bf16 engine."""
    texts = docs[:12]
    enc = Encoder(dtype="bfloat16")
    assert enc.engine_settings.dtype == "bfloat16" != encoder.engine_settings.dtype
    try:
        dense, tokens = enc.encode_documents(texts)
    finally:
        enc.close()
    ref_dense = st_model.encode(texts, normalize_embeddings=True)
    ref_tokens = st_model.encode(texts, output_value="token_embeddings")
    assert dense.dtype == np.float32 and dense.shape == ref_dense.shape
    assert _rowwise_cos(dense, ref_dense).min() >= 0.9995
    for mine, theirs in zip(tokens, ref_tokens, strict=True):
        assert mine.shape == tuple(theirs.shape)
        assert _rowwise_cos(mine, theirs.float().numpy()).min() >= 0.999
