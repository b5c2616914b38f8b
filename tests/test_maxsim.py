"""The MaxSim function family against a float64 reference, for every dtype and layout."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vllm_retrieval.scoring.maxsim as ms
from vllm_retrieval.scoring.maxsim import (
    PackedDocs,
    alignment,
    maxsim,
    maxsim_batch,
    maxsim_reference,
    maxsim_topk,
    pack,
)

DTYPES = ["float32", "float16", "bfloat16", "int8"]
LAYOUTS = ["list-numpy", "list-torch", "packed-numpy", "packed-torch"]
#: CPU kernels: the fused C kernel with SIMD ("auto"), without SIMD, and the tiled GEMM.
KERNELS = ["auto", "portable", "gemm"]


@contextlib.contextmanager
def _kernel(name: str) -> Iterator[None]:
    old = ms._cpu_kernel
    ms._cpu_kernel = name  # type: ignore[assignment]
    try:
        yield
    finally:
        ms._cpu_kernel = old


def _ref(q: np.ndarray, docs: list[np.ndarray], normalize: bool = False) -> np.ndarray:
    """Float64 MaxSim, written out independently of the package."""
    q64 = q.astype(np.float64)
    out = []
    for d in docs:
        if d.shape[0] == 0:
            out.append(-np.inf)
        else:
            out.append((q64 @ d.astype(np.float64).T).max(axis=1).sum())
    res = np.array(out, dtype=np.float64)
    return res / q.shape[0] if normalize else res


def _stored(docs: list[np.ndarray], dtype: str) -> list[np.ndarray]:
    """What a storage dtype keeps of each document (the values the kernel must reproduce)."""
    if dtype == "float32":
        return [d.astype(np.float32) for d in docs]
    if dtype == "float16":
        return [d.astype(np.float16).astype(np.float32) for d in docs]
    if dtype == "bfloat16":
        return [torch.from_numpy(d).to(torch.bfloat16).float().numpy() for d in docs]
    packed = pack(docs, dtype="int8")
    return [packed.document(i) for i in range(len(packed))]


def _magnitude(q: np.ndarray, docs: list[np.ndarray]) -> float:
    """Σ_i |q_i| · max_j |d_j|: the scale of any MaxSim error."""
    qn = np.linalg.norm(q.astype(np.float64), axis=1)
    dn = max((float(np.linalg.norm(d, axis=1).max()) for d in docs if d.shape[0]), default=0.0)
    return float(qn.sum()) * dn


def _tolerance(q: np.ndarray, docs: list[np.ndarray]) -> float:
    """fp32-accumulation error bound: a few fp32 ulps of the magnitude, times sqrt(d)."""
    return 1e-6 * _magnitude(q, docs) * max(1, q.shape[1]) ** 0.5 + 1e-6


def _assert_matches_stored_reference(
    got: np.ndarray, q: np.ndarray, docs: list[np.ndarray], dtype: str, rtol: float = 1e-5
) -> np.ndarray:
    """``got`` equals float64 MaxSim of what ``dtype`` stores (``-inf`` exactly for empty
    documents); returns the mask of non-empty documents."""
    stored = _stored(docs, dtype)
    expected = _ref(q, stored)
    empty = np.isneginf(expected)
    assert np.array_equal(np.isneginf(got), empty)
    np.testing.assert_allclose(got[~empty], expected[~empty], rtol=rtol, atol=_tolerance(q, stored))
    return ~empty


def _layout(docs: list[np.ndarray], dtype: str, layout: str) -> Any:
    if layout.startswith("packed"):
        p = pack(docs if layout.endswith("numpy") else [torch.from_numpy(d) for d in docs],
                 dtype=dtype)  # fmt: skip
        return p
    # Lists: the caller's own storage (int8 has no list form; it is packed with scales).
    if dtype == "int8":
        return pack(docs, dtype="int8")
    if layout.endswith("torch"):
        tdt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        return [torch.from_numpy(d).to(tdt[dtype]) for d in docs]
    if dtype == "bfloat16":
        return [torch.from_numpy(d).to(torch.bfloat16) for d in docs]
    return [d.astype(dtype) for d in docs]


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, list[np.ndarray]]:
    seed = draw(st.integers(0, 2**32 - 1))
    dim = draw(st.integers(1, 40))
    qlen = draw(st.integers(1, 12))
    lengths = draw(st.lists(st.integers(0, 30), min_size=1, max_size=12))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 1e-3, 30.0]))
    q = (rng.standard_normal((qlen, dim)) * scale).astype(np.float32)
    docs = [rng.standard_normal((t, dim)).astype(np.float32) for t in lengths]
    if draw(st.booleans()):  # unit rows, as the encoder gives
        docs = [d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6) for d in docs]
    return q, docs


@settings(max_examples=80, deadline=None)
@given(
    problems(),
    st.sampled_from(DTYPES),
    st.sampled_from(LAYOUTS),
    st.sampled_from([None, 1, 3, 17]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(KERNELS),
)
def test_maxsim_matches_float64_reference(
    problem: tuple[np.ndarray, list[np.ndarray]],
    dtype: str,
    layout: str,
    tile: int | None,
    normalize: bool,
    torch_query: bool,
    kernel: str,
) -> None:
    q, docs = problem
    stored = _stored(docs, dtype)
    expected = _ref(q, stored, normalize)
    query: Any = torch.from_numpy(q) if torch_query else q
    with _kernel(kernel):
        got = maxsim(query, _layout(docs, dtype, layout), normalize=normalize, tile_tokens=tile)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (len(docs),)
    empty = np.array([d.shape[0] == 0 for d in docs])
    assert np.all(np.isneginf(got[empty]))
    tol = _tolerance(q, stored) / (q.shape[0] if normalize else 1)
    np.testing.assert_allclose(got[~empty], expected[~empty], rtol=1e-5, atol=tol)
    # The stored values are close to the originals: |q·(d~ - d)| <= |q| |d~ - d|.
    rel = {"float32": 1e-6, "float16": 2**-11, "bfloat16": 2**-8, "int8": 1 / 254}[dtype]
    rel *= q.shape[1] ** 0.5 if dtype == "int8" else 1.0
    bound = rel * _magnitude(q, docs) / (q.shape[0] if normalize else 1) + tol
    orig = _ref(q, docs, normalize)
    np.testing.assert_allclose(got[~empty], orig[~empty], rtol=0, atol=bound)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(problems(), min_size=1, max_size=4),
    st.sampled_from(DTYPES),
    st.booleans(),
    st.sampled_from(KERNELS),
)
def test_batch_equals_single(
    probs: list[tuple[np.ndarray, list[np.ndarray]]], dtype: str, normalize: bool, kernel: str
) -> None:
    dim = probs[0][0].shape[1]
    docs = probs[0][1]
    queries = [
        q[:, :dim] if q.shape[1] >= dim else np.resize(q, (q.shape[0], dim)) for q, _ in probs
    ]
    packed = pack(docs, dtype=dtype)  # type: ignore[arg-type]
    with _kernel(kernel):
        batch = maxsim_batch(queries, packed, normalize=normalize, tile_tokens=7)
    assert batch.shape == (len(queries), len(docs)) and batch.dtype == np.float32
    for k, q in enumerate(queries):
        single = maxsim(q, packed, normalize=normalize)
        tol = _tolerance(q, _stored(docs, dtype))
        np.testing.assert_allclose(batch[k], single, rtol=1e-5, atol=tol)


@settings(max_examples=30, deadline=None)
@given(problems(), st.integers(1, 15), st.booleans())
def test_topk_equals_sort(problem: tuple[np.ndarray, list[np.ndarray]], k: int, ties: bool) -> None:
    q, docs = problem
    if ties and len(docs) > 1:
        docs = docs + docs  # exact duplicates: ties must go to the lower index
    scores = maxsim(q, docs)
    idx, top = maxsim_topk(q, docs, k)
    order = np.lexsort((np.arange(len(docs)), -scores.astype(np.float64)))[: min(k, len(docs))]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(top, scores[order])
    assert idx.dtype == np.int64 and top.dtype == np.float32


@settings(max_examples=20, deadline=None)
@given(problems(), st.sampled_from(["float32", "float16", "int8"]), st.sampled_from([None, 2, 9]))
def test_pure_numpy_kernel(
    problem: tuple[np.ndarray, list[np.ndarray]], dtype: str, tile: int | None
) -> None:
    """Without torch (and without the C kernel) the numpy GEMM runs; same scores."""
    q, docs = problem
    packed = pack(docs, dtype=dtype)  # type: ignore[arg-type]
    with _kernel("gemm"):
        with_torch = maxsim(q, packed, tile_tokens=tile)
        old, ms.PREFER_TORCH = ms.PREFER_TORCH, False
        try:
            without = maxsim(q, packed, tile_tokens=tile)
        finally:
            ms.PREFER_TORCH = old
    nonempty = _assert_matches_stored_reference(without, q, docs, dtype)
    tol = _tolerance(q, _stored(docs, dtype))
    np.testing.assert_allclose(without[nonempty], with_torch[nonempty], rtol=1e-5, atol=tol)


def test_sum_not_mean_and_normalize_option() -> None:
    q = np.eye(3, 4, dtype=np.float32)
    d = np.eye(4, dtype=np.float32)[:2]  # matches query tokens 0 and 1 exactly
    assert maxsim(q, [d])[0] == pytest.approx(2.0)
    assert maxsim(q, [d], normalize=True)[0] == pytest.approx(2.0 / 3.0)


def test_zero_token_documents_score_minus_inf_and_rank_last() -> None:
    q = np.ones((2, 3), dtype=np.float32)
    docs = [np.zeros((0, 3), np.float32), -np.ones((1, 3), np.float32)]
    scores = maxsim(q, docs)
    assert np.isneginf(scores[0]) and scores[1] == pytest.approx(-6.0)
    idx, _ = maxsim_topk(q, docs, 2)
    assert idx.tolist() == [1, 0]
    only_empty = pack([np.zeros((0, 3), np.float32)] * 3)
    assert np.isneginf(maxsim(q, only_empty)).all()


def test_empty_document_list_gives_empty_result() -> None:
    q = np.ones((2, 3), dtype=np.float32)
    assert maxsim(q, []).shape == (0,)
    assert maxsim_batch([q, q], []).shape == (2, 0)
    idx, sc = maxsim_topk(q, [], 5)
    assert idx.shape == (0,) and sc.shape == (0,)
    empty = PackedDocs(np.zeros((0, 3), np.float32), np.zeros(1, np.int64))
    assert len(empty) == 0 and maxsim(q, empty).shape == (0,)


def test_torch_and_numpy_agree_and_torch_dtypes() -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    docs = [rng.standard_normal((t, 16)).astype(np.float32) for t in (4, 9, 1)]
    a = maxsim(q, docs)
    b = maxsim(torch.from_numpy(q).to(torch.float64), [torch.from_numpy(d) for d in docs])
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_alignment_is_consistent_with_maxsim() -> None:
    rng = np.random.default_rng(2)
    q = rng.standard_normal((6, 8)).astype(np.float32)
    d = rng.standard_normal((11, 8)).astype(np.float32)
    rows, sims = alignment(q, d)
    assert rows.dtype == np.int64 and sims.dtype == np.float32 and rows.shape == (6,)
    full = q @ d.T
    np.testing.assert_array_equal(rows, full.argmax(axis=1))
    assert float(sims.sum()) == pytest.approx(float(maxsim(q, [d])[0]), rel=1e-5)
    dup = np.concatenate([d[:1], d[:1]])  # a tie: the lower row wins
    assert (alignment(q, dup)[0] == 0).all()
    with pytest.raises(ValueError, match="no token"):
        alignment(q, d[:0])


def test_reference_helper_agrees() -> None:
    rng = np.random.default_rng(3)
    q = rng.standard_normal((3, 5)).astype(np.float32)
    docs = [rng.standard_normal((t, 5)).astype(np.float32) for t in (2, 0, 4)]
    np.testing.assert_allclose(maxsim_reference(q, docs), _ref(q, docs))
    np.testing.assert_allclose(maxsim_reference(q, pack(docs)), _ref(q, docs), rtol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_large_corpus_is_tiled_and_exact(kernel: str) -> None:
    """Many tiles, documents straddling tile edges, and a top-10 equal to float64's."""
    rng = np.random.default_rng(4)
    lengths = rng.integers(20, 301, size=300)
    total = int(lengths.sum())
    vec = rng.standard_normal((total, 32)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    q = rng.standard_normal((8, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    packed = PackedDocs(vec, offsets)
    ref = maxsim_reference(q, packed)
    with _kernel(kernel):
        got = maxsim(q, packed, tile_tokens=1000)
        idx, _ = maxsim_topk(q, packed, 10)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(idx, np.argsort(-ref, kind="stable")[:10])


# -- the fused C kernel -------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("cc") is None, reason="built only where a C compiler exists")
def test_native_kernel_is_built_and_chosen() -> None:
    """`make` installs with a C compiler: the fused kernel must exist and be the default."""
    assert ms._native is not None, "vllm_retrieval.scoring._maxsim_kernel was not built"
    assert ms.kernel_info().startswith("native")
    assert ms._native.simd() in {"avx2+fma", "portable"}


@pytest.mark.skipif(ms._native is None, reason="the C kernel is not built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qlen", [1, 8, 32, 45, 100])
def test_native_threads_and_query_blocks(
    dtype: str, qlen: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents split between threads and every query-block width (32-wide blocks and the
    8-wide tail) give the float64 scores; threaded and single-thread results are identical."""
    rng = np.random.default_rng(qlen)
    lengths = rng.integers(0, 70, size=200)
    lengths[::17] = 0
    docs = [rng.standard_normal((int(t), 48)).astype(np.float32) for t in lengths]
    q = rng.standard_normal((qlen, 48)).astype(np.float32)
    packed = pack(docs, dtype=dtype)  # type: ignore[arg-type]
    monkeypatch.setenv("VLLM_RETRIEVAL_MAXSIM_THREADS", "1")
    single = maxsim(q, packed)
    monkeypatch.setenv("VLLM_RETRIEVAL_MAXSIM_THREADS", "3")
    monkeypatch.setattr(ms, "_PARALLEL_MIN_WORK", 0)
    threaded = maxsim(q, packed)
    np.testing.assert_array_equal(threaded, single)
    _assert_matches_stored_reference(threaded, q, docs, dtype)


def test_bad_thread_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_RETRIEVAL_MAXSIM_THREADS", "many")
    if ms._native is None:
        pytest.skip("the C kernel is not built")
    with pytest.raises(ValueError, match="VLLM_RETRIEVAL_MAXSIM_THREADS"):
        maxsim(np.ones((2, 3), np.float32), [np.ones((4, 3), np.float32)])


# -- bad input ----------------------------------------------------------------------------


def test_bad_input_raises_clear_errors() -> None:
    q = np.ones((2, 3), dtype=np.float32)
    d = [np.ones((4, 3), dtype=np.float32)]
    with pytest.raises(ValueError, match="dimension mismatch"):
        maxsim(q, [np.ones((4, 5), np.float32)])
    with pytest.raises(ValueError, match="no token vectors"):
        maxsim(q[:0], d)
    with pytest.raises(ValueError, match="2-D"):
        maxsim(q[0], d)
    with pytest.raises(ValueError, match="NaN or inf"):
        maxsim(np.array([[np.nan, 0, 0]], np.float32), d)
    with pytest.raises(ValueError, match="NaN or inf"):
        maxsim(q, [np.array([[np.inf, 0, 0]], np.float32)])
    with pytest.raises(ValueError, match="NaN or inf"):
        maxsim(torch.from_numpy(q), [torch.tensor([[0.0, float("nan"), 0.0]])])
    with pytest.raises(TypeError, match="floating"):
        maxsim(q.astype(np.int64), d)
    with pytest.raises(TypeError, match="floating"):
        maxsim(q, [np.ones((2, 3), dtype=object)])
    with pytest.raises(TypeError, match="floating"):
        maxsim(q, [np.ones((2, 3), dtype=np.int32)])
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        maxsim([[1.0, 2.0, 3.0]], d)
    with pytest.raises(TypeError, match="not a single array"):
        maxsim(q, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="mix"):
        maxsim(q, [d[0], torch.from_numpy(d[0])])
    with pytest.raises(ValueError, match="dim"):
        maxsim(q, [np.ones((2, 3), np.float32), np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError, match="positive"):
        maxsim_topk(q, d, 0)
    with pytest.raises(ValueError, match="queries is empty"):
        maxsim_batch([], d)
    with pytest.raises(ValueError, match="tile_tokens"):
        maxsim(q, d, tile_tokens=0)
    with pytest.raises(ValueError, match="storage dtype"):
        pack(d, dtype="float8")  # type: ignore[arg-type]


def test_inconsistent_packed_docs_are_rejected() -> None:
    vec = np.ones((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"offsets\[-1\]"):
        PackedDocs(vec, np.array([0, 2, 4]))
    with pytest.raises(ValueError, match=r"offsets\[0\]"):
        PackedDocs(vec, np.array([1, 5]))
    with pytest.raises(ValueError, match="non-decreasing"):
        PackedDocs(vec, np.array([0, 3, 2, 5]))
    with pytest.raises(TypeError, match="integers"):
        PackedDocs(vec, np.array([0.0, 5.0]))
    with pytest.raises(ValueError, match="1-D"):
        PackedDocs(vec, np.array([[0, 5]]))
    with pytest.raises(ValueError, match="scales"):
        PackedDocs(vec.astype(np.int8), np.array([0, 5]))
    with pytest.raises(ValueError, match="only for int8"):
        PackedDocs(vec, np.array([0, 5]), np.ones(5, np.float32))
    with pytest.raises(ValueError, match="shape"):
        PackedDocs(vec.astype(np.int8), np.array([0, 5]), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        PackedDocs(np.full((5, 3), np.nan, np.float32), np.array([0, 5]))
    with pytest.raises(TypeError, match="floating"):
        PackedDocs(vec.astype(np.int64), np.array([0, 5]))
    ok = PackedDocs(vec, [0, 2, 2, 5])  # type: ignore[arg-type]
    assert len(ok) == 3 and ok.offsets.dtype == np.int64 and ok.lengths.tolist() == [2, 0, 3]


@settings(max_examples=20, deadline=None)
@given(problems(), st.sampled_from(DTYPES), st.sampled_from([1, 5, 64]))
def test_device_scatter_kernel_on_cpu(
    problem: tuple[np.ndarray, list[np.ndarray]], dtype: str, tile: int
) -> None:
    """The CUDA kernel (scatter_reduce amax) is device-agnostic: check it on the CPU."""
    from vllm_retrieval.scoring.maxsim import _max_matrix_scatter

    q, docs = problem
    packed = pack([torch.from_numpy(d) for d in docs], dtype=dtype)  # type: ignore[arg-type]
    got = _max_matrix_scatter(
        torch.from_numpy(q), packed.vectors, packed.offsets, packed.scales, tile
    )
    scores = got.numpy().astype(np.float64).sum(axis=0)
    _assert_matches_stored_reference(scores, q, docs, dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_reference(dtype: str) -> None:
    rng = np.random.default_rng(5)
    q = rng.standard_normal((7, 64)).astype(np.float32)
    docs = [rng.standard_normal((int(t), 64)).astype(np.float32) for t in rng.integers(0, 90, 50)]
    packed = pack([torch.from_numpy(d).cuda() for d in docs], dtype=dtype)  # type: ignore[arg-type]
    assert packed.vectors.is_cuda
    got = maxsim(torch.from_numpy(q).cuda(), packed, tile_tokens=333)
    nonempty = _assert_matches_stored_reference(got, q, docs, dtype, rtol=1e-4)
    batch = maxsim_batch([torch.from_numpy(q).cuda(), q[:2]], packed)
    np.testing.assert_allclose(batch[0][nonempty], got[nonempty], rtol=1e-5, atol=1e-4)


# -- lists of documents read in place (no packing) ----------------------------------------


def _awkward_docs(rng: np.random.Generator, dim: int) -> tuple[list[Any], list[np.ndarray]]:
    """A numpy list of mixed dtypes and layouts, and the fp32 values each document holds."""
    base = [rng.standard_normal((int(t), dim)).astype(np.float32) for t in (5, 0, 17, 1, 40, 9)]
    wide = rng.standard_normal((30, 2 * dim)).astype(np.float32)
    docs: list[Any] = [
        base[0],  # fp32, read in place
        base[1],  # zero tokens
        base[2].astype(np.float16),  # fp16, widened by the kernel
        base[3].astype(np.float64),  # fp64: a fp32 copy of this document alone
        base[4][::2],  # rows not contiguous
        wide[:, ::2],  # columns strided
        np.asfortranarray(base[5]),  # column-major
        base[5].astype(">f4"),  # byte-swapped
        base[4][3:4],  # one row of a larger array
    ]
    values = [np.asarray(d, dtype=np.float32) for d in docs]
    values[2] = base[2].astype(np.float16).astype(np.float32)
    return docs, values


@pytest.mark.parametrize("kernel", KERNELS)
def test_list_of_mixed_dtypes_and_views_matches_reference(kernel: str) -> None:
    rng = np.random.default_rng(11)
    q = rng.standard_normal((7, 24)).astype(np.float32)
    docs, values = _awkward_docs(rng, 24)
    with _kernel(kernel):
        got = maxsim(q, docs)
        as_tuple = maxsim(q, tuple(docs))
    expected = _ref(q, values)
    assert np.isneginf(got[1]) and np.isneginf(expected[1])
    keep = ~np.isneginf(expected)
    np.testing.assert_allclose(got[keep], expected[keep], rtol=1e-5, atol=_tolerance(q, values))
    np.testing.assert_array_equal(as_tuple, got)
    np.testing.assert_allclose(maxsim_reference(q, docs)[keep], expected[keep], rtol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_list_of_torch_tensors_matches_reference(kernel: str) -> None:
    rng = np.random.default_rng(12)
    q = rng.standard_normal((9, 16)).astype(np.float32)
    base = [torch.from_numpy(rng.standard_normal((int(t), 16)).astype(np.float32)) for t in
            (6, 0, 13, 1, 30, 8, 4)]  # fmt: skip
    docs = [
        base[0],
        base[1],
        base[2].to(torch.float16),
        base[3].to(torch.bfloat16),
        base[4][::3],  # not contiguous
        base[5].to(torch.float64),
        base[6].clone().requires_grad_(True),
    ]
    values = [d.detach().float().numpy() for d in docs]
    with _kernel(kernel):
        got = maxsim(torch.from_numpy(q), docs)
        batch = maxsim_batch([q, q[:3]], docs)
    expected = _ref(q, values)
    keep = ~np.isneginf(expected)
    assert np.array_equal(np.isneginf(got), ~keep)
    np.testing.assert_allclose(got[keep], expected[keep], rtol=1e-5, atol=_tolerance(q, values))
    np.testing.assert_allclose(batch[0], got, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batch[1][keep], _ref(q[:3], values)[keep], rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(ms._native is None, reason="the C kernel is not built")
def test_list_is_read_in_place_not_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32/fp16 numpy and torch lists go to the kernel as they are: nothing is packed."""

    def no_packing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the list was packed")

    monkeypatch.setattr(ms, "_as_packed", no_packing)
    rng = np.random.default_rng(13)
    q = rng.standard_normal((4, 8)).astype(np.float32)
    docs = [rng.standard_normal((int(t), 8)).astype(np.float32) for t in (3, 0, 11)]
    docs.append(docs[2].astype(np.float16))
    np.testing.assert_allclose(maxsim(q, docs)[[0, 2]], _ref(q, docs)[[0, 2]], rtol=1e-5)
    tdocs = [torch.from_numpy(d) for d in docs]
    np.testing.assert_allclose(maxsim(q, tdocs), maxsim(q, docs), rtol=1e-6)


@pytest.mark.skipif(ms._native is None, reason="the C kernel is not built")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 5, 149])
@pytest.mark.parametrize("threads", ["1", "3"])
def test_list_nan_is_found_by_the_kernel(
    bad: float, where: int, threads: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first document holding a NaN/inf is named, whichever thread scores it; fp16 and
    torch documents too; a finite value whose products overflow is no error."""
    monkeypatch.setenv("VLLM_RETRIEVAL_MAXSIM_THREADS", threads)
    monkeypatch.setattr(ms, "_PARALLEL_MIN_WORK", 0)
    rng = np.random.default_rng(where)
    q = rng.standard_normal((40, 16)).astype(np.float32)
    docs = [rng.standard_normal((int(t), 16)).astype(np.float32) for t in rng.integers(1, 9, 150)]
    for i in (where, 149):  # and a later one: the first is reported
        docs[i] = docs[i].copy()
        docs[i][-1, 3] = bad
    for kernel in ("auto", "portable"):
        with _kernel(kernel), pytest.raises(ValueError, match=rf"docs\[{where}\] contains NaN"):
            maxsim(q, docs)
    half = [d.astype(np.float16) for d in docs]
    with pytest.raises(ValueError, match=rf"docs\[{where}\] contains NaN"):
        maxsim(q, half)
    bf16 = [torch.from_numpy(d).to(torch.bfloat16) for d in docs]
    with pytest.raises(ValueError, match=rf"docs\[{where}\] contains NaN"):
        maxsim(q, bf16)
    huge = [np.full((2, 16), 3e38, np.float32), np.ones((1, 16), np.float32)]
    scores = maxsim(np.full((1, 16), 10.0, np.float32), huge)
    assert scores[0] == np.inf and scores[1] == pytest.approx(160.0)


def test_list_without_the_kernel_is_packed_and_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the C kernel a list is packed and scored by the GEMM (torch, or numpy alone)."""
    monkeypatch.setattr(ms, "_native", None)
    rng = np.random.default_rng(14)
    q = rng.standard_normal((5, 24)).astype(np.float32)
    docs, values = _awkward_docs(rng, 24)
    expected = _ref(q, values)
    keep = ~np.isneginf(expected)
    for prefer_torch in (True, False):
        monkeypatch.setattr(ms, "PREFER_TORCH", prefer_torch)
        assert ms.kernel_info().startswith("gemm")
        got = maxsim(q, docs)
        np.testing.assert_allclose(got[keep], expected[keep], rtol=1e-5, atol=_tolerance(q, values))
        with pytest.raises(ValueError, match=r"docs\[1\] contains NaN"):
            maxsim(q, [docs[0], np.full((2, 24), np.nan, np.float32)])


def test_list_bad_input_keeps_the_packing_errors() -> None:
    """Lists the kernel cannot read are packed, which raises the precise error."""
    q = np.ones((2, 3), dtype=np.float32)
    ok = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="mix"):
        maxsim(q, [torch.from_numpy(ok), ok])
    with pytest.raises(TypeError, match="floating"):
        maxsim(q, [ok, torch.ones((2, 3), dtype=torch.int32)])
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        maxsim(q, [ok, [[1.0, 2.0, 3.0]]])
    with pytest.raises(ValueError, match="2-D"):
        maxsim(q, [ok, np.ones(3, np.float32)])
    with pytest.raises(ValueError, match=r"docs\[1\] has dim 4, docs\[0\] has 3"):
        maxsim(q, [ok, np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError, match="dimension mismatch"):
        maxsim(q, [torch.ones((2, 5)), torch.ones((1, 5))])
    with pytest.raises(ValueError, match=r"docs\[0\] contains NaN"):  # before the bad dtype
        maxsim(q, [np.full((1, 3), np.nan, np.float32), ok.astype(np.int16)])
