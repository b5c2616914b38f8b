"""The MaxSim function family: exact late-interaction scores over packed documents.

``score(q, d) = Σ_i max_j q_i · d_j`` — a **sum** over the query's token vectors ``q_i`` of the
best dot product with any of the document's token vectors ``d_j`` (ColBERT, vLLM, PyLate).
``normalize=True`` divides by the query length ``Q`` (a separate, named option).

Documents are stored **packed**, never padded: one ``[total_tokens, d]`` matrix plus int64
``offsets`` of length ``n + 1`` (document ``i`` is rows ``offsets[i]:offsets[i + 1]``), see
:class:`PackedDocs` and :func:`pack`. Storage may be fp32, fp16, bf16 (torch) or int8 with one
fp32 scale per token row; every dot product is accumulated in fp32 whatever the storage.

On the CPU the corpus is scored by a fused C kernel (``_maxsim_kernel``, built with the
package; AVX2+FMA chosen at run time, a portable loop elsewhere): for each document a register
block of document tokens × query tokens is accumulated in fp32 over ``d`` and folded into the
running maximum, so no similarity matrix is ever written to memory and there is no padding.
fp16/bf16/int8 documents are widened one document at a time. The documents are split by token
count between ``os.sched_getaffinity`` threads (``VLLM_RETRIEVAL_MAXSIM_THREADS`` overrides);
the kernel releases the GIL. Memory beyond the inputs is the ``[n, Q_total]`` result.

A **list** of documents is not packed for the kernel: one C pass over the list takes each numpy
fp32/fp16 array's address and length (a table of pointers), so the kernel reads every document
where it lies, with no concatenation copy; CPU torch tensors are read in place too, and only a
document that needs converting (fp64, byte-swapped, non-contiguous rows) is copied, alone. The
kernel finds NaN/inf as it scores (a non-finite value makes its dot products non-finite), so a
list costs no validation pass in Python. Other lists (CUDA, no kernel) are packed once.

Without the compiled kernel (no C compiler at install time), on CUDA, or for fp64 documents,
the corpus is scored in tiles of whole rows: each tile is converted to fp32, multiplied by all
query token vectors at once (one GEMM, ``[Q_total, tile]``), reduced to one max per
(query token, document) with a segmented max, and merged into a running ``[Q_total, n]``
maximum. Memory is bounded by the tile (``Q_total × tile_tokens`` floats), never
``Q × total_tokens``. With torch installed the GEMM runs in torch (MKL) for numpy inputs too;
without torch a pure-numpy kernel does the same work. :func:`kernel_info` names the path.

Conventions, the same for every function here:

* Inputs are numpy arrays or torch tensors (CPU or CUDA); results are numpy ``float32`` /
  ``int64`` arrays on the host.
* A document with **zero tokens** scores ``-inf`` (max over an empty set): it never outranks a
  real document and sorts last in :func:`maxsim_topk`.
* An **empty document list** is not an error: the result is empty (shape ``[0]`` /
  ``[m, 0]``).
* Bad input raises: ``TypeError`` for a non-array or a non-floating dtype (ints, bools,
  objects), ``ValueError`` for wrong rank, dimension mismatch, an empty query, NaN/inf values
  or inconsistent offsets.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .packing import (
    PackedDocs,
    _as_packed,
    _check_matrix,
    _check_query,
    _doc_table,
    _is_torch,
    _to_numpy_f32,
    _torch,
    pack,
)

__all__ = [
    "PackedDocs",
    "alignment",
    "kernel_info",
    "maxsim",
    "maxsim_batch",
    "maxsim_reference",
    "maxsim_topk",
    "pack",
]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: Scores for ``Q_total × tile_tokens`` fp32 values per tile (the memory bound of one step).
DEFAULT_TILE_ELEMENTS = 1 << 19

_native: ModuleType | None
try:  # the fused C kernel; absent when the package was installed without a C compiler
    from . import _maxsim_kernel as _native
except ImportError:  # pragma: no cover - depends on the build
    _native = None

#: Which CPU kernel scores documents: ``"auto"`` (native if built, else GEMM), ``"portable"``
#: (native without SIMD) or ``"gemm"`` (tiled torch/numpy GEMM). For tests and benchmarks.
_cpu_kernel: Literal["auto", "portable", "gemm"] = "auto"

#: Use torch (MKL GEMM, F16C/bf16 conversion) for numpy inputs too when it is installed; the
#: pure-numpy kernel is the fallback without torch (tests switch this off to cover it).
PREFER_TORCH = True


def _torch_available() -> bool:
    if not PREFER_TORCH:
        return False
    try:
        _torch()
    except ImportError:  # pragma: no cover - torch is present wherever vLLM is
        return False
    return True


def _tile_rows(q_total: int, tile_tokens: int | None) -> int:
    if tile_tokens is not None:
        if tile_tokens <= 0:
            raise ValueError(f"tile_tokens must be positive, got {tile_tokens}")
        return int(tile_tokens)
    return max(256, DEFAULT_TILE_ELEMENTS // max(q_total, 1))


def _segment_plan(offsets: IntArray, start: int, stop: int) -> tuple[IntArray, IntArray] | None:
    """Documents with rows in ``[start, stop)``: (their indices, local segment starts)."""
    lo = int(np.searchsorted(offsets, start, side="right")) - 1
    hi = int(np.searchsorted(offsets, stop, side="left"))
    idx = np.arange(lo, hi, dtype=np.int64)
    begins = offsets[lo:hi]
    ends = offsets[lo + 1 : hi + 1]
    nonempty = ends > begins
    if not nonempty.all():
        idx, begins = idx[nonempty], begins[nonempty]
    if idx.size == 0:
        return None
    local = np.maximum(begins, start) - start
    return idx, local


def kernel_info() -> str:
    """Which kernel scores documents on the CPU, e.g. ``"native avx2+fma, 2 threads"``."""
    if _native is not None and _cpu_kernel != "gemm":
        simd = "portable" if _cpu_kernel == "portable" else _native.simd()
        return f"native {simd}, {_native_threads()} threads"
    if _torch_available():
        return f"gemm (torch, {_torch().get_num_threads()} threads)"
    return "gemm (numpy)"


def _native_threads() -> int:
    env = os.environ.get("VLLM_RETRIEVAL_MAXSIM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(
                f"VLLM_RETRIEVAL_MAXSIM_THREADS must be an integer, got {env!r}"
            ) from None
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _get_pool(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="maxsim")
            _pool_size = threads
        return _pool


#: Below this many multiply-adds a call runs on the calling thread alone.
_PARALLEL_MIN_WORK = 1 << 24


def _native_docs(vec: Any) -> tuple[Any, int] | None:
    """The document rows as a C-contiguous host array and the kernel's dtype code."""
    if _is_torch(vec):
        torch = _torch()
        if vec.device.type != "cpu":
            return None
        if vec.dtype == torch.bfloat16:
            return vec.contiguous().view(torch.int16).numpy(), 2
        codes = {torch.float32: 0, torch.float16: 1, torch.int8: 3}
        if vec.dtype not in codes:
            return None
        return vec.contiguous().numpy(), codes[vec.dtype]
    codes_np = {np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.int8): 3}
    code = codes_np.get(np.asarray(vec).dtype)
    if code is None:
        return None
    return np.ascontiguousarray(vec), code


def _query_block(q: Any) -> tuple[FloatArray, int, int, int]:
    """The query as the kernel's ``qT [d, Qp]`` fp32 (zero columns up to ``Qp % 8 == 0``)."""
    q32 = _to_numpy_f32(q)
    q_total, d = q32.shape
    qp = -(-q_total // 8) * 8
    q_t = np.zeros((d, qp), dtype=np.float32)
    q_t[:, :q_total] = q32.T
    return q_t, q_total, d, qp


def _split(run: Callable[[int, int], Any], offsets: IntArray, work: int) -> list[Any]:
    """``run(lo, hi)`` over the documents, in threads for large work: the results in order."""
    n = offsets.size - 1
    threads = _native_threads()
    if threads == 1 or work < _PARALLEL_MIN_WORK or n < 2:
        return [run(0, n)]
    # Chunks of about equal token counts, several per thread so that a thread slowed down by
    # other processes does not hold the rest back.
    total = int(offsets[-1])
    chunks = min(n, threads * 8)
    bounds = np.searchsorted(offsets, np.linspace(0, total, chunks + 1)[1:-1], side="left")
    edges = np.unique(np.concatenate([[0], bounds, [n]])).astype(np.int64)
    pool = _get_pool(threads)
    futures = [pool.submit(run, int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]
    return [f.result() for f in futures]


def _native_applies(q: Any) -> bool:
    return _native is not None and _cpu_kernel != "gemm" and not _on_device(q)


def _on_device(x: Any) -> bool:
    return _is_torch(x) and x.device.type != "cpu"


def _max_matrix_native(q: Any, packed: PackedDocs) -> FloatArray | None:
    """``[Q_total, n]`` maxima from the fused C kernel, or ``None`` if it does not apply."""
    if not _native_applies(q):
        return None
    docs = _native_docs(packed.vectors)
    if docs is None:
        return None
    vec, kind = docs
    q_t, q_total, d, qp = _query_block(q)
    out = np.empty((len(packed), qp), dtype=np.float32)
    simd = _cpu_kernel != "portable"
    scales = packed.scales

    def run(lo: int, hi: int) -> None:
        assert _native is not None
        _native.max_matrix(q_t, d, qp, vec, kind, scales, packed.offsets, lo, hi, out[lo:hi], simd)

    _split(run, packed.offsets, packed.total_tokens * qp * d)
    return out[:, :q_total].T


def _max_matrix_list(q: Any, docs: Sequence[Any]) -> FloatArray | None:
    """``[Q_total, n]`` maxima of a list of documents read where they lie (no packing), or
    ``None`` when the list must be packed (no kernel, CUDA, a document to reject or convert
    that :func:`_doc_table` leaves to :func:`pack`). NaN/inf raise as :func:`pack` would."""
    if not _native_applies(q) or not hasattr(_native, "max_matrix_ptrs"):
        return None  # (a kernel built from an older source has only the packed entry point)
    table = _doc_table(docs, int(q.shape[1]), _native)
    if table is None:
        return None
    q_t, q_total, d, qp = _query_block(q)
    out = np.empty((len(docs), qp), dtype=np.float32)
    simd = _cpu_kernel != "portable"

    def run(lo: int, hi: int) -> int:
        assert _native is not None
        return int(
            _native.max_matrix_ptrs(
                q_t, d, qp, table.ptrs, table.lengths, table.kinds, lo, hi, out[lo:hi], simd
            )
        )

    offsets = table.offsets
    bad = [i for i in _split(run, offsets, int(offsets[-1]) * qp * d) if i >= 0]
    if bad:
        raise ValueError(f"docs[{min(bad)}] contains NaN or inf")
    return out[:, :q_total].T


def _max_matrix(q: Any, packed: PackedDocs, tile_tokens: int | None) -> Any:
    """``M[k, i] = max_j q_k · d_ij`` as ``[Q_total, n]`` fp32 (``-inf`` for empty docs).

    On the CPU (numpy or torch inputs) the result is a numpy array; on CUDA (documents or
    query on a GPU, the other side is moved there) it is a torch tensor on that device.
    """
    q_total = int(q.shape[0])
    rows = _tile_rows(q_total, tile_tokens)  # validates tile_tokens whichever kernel runs
    native = _max_matrix_native(q, packed)
    if native is not None:
        return native
    n = len(packed)
    vec = packed.vectors
    offsets = packed.offsets
    total = packed.total_tokens
    scales = packed.scales
    if not _is_torch(vec) and not _is_torch(q) and not _torch_available():
        qf = np.ascontiguousarray(q, dtype=np.float32)
        out = np.full((q_total, n), -np.inf, dtype=np.float32)
        for start in range(0, total, rows):
            stop = min(start + rows, total)
            plan = _segment_plan(offsets, start, stop)
            if plan is None:
                continue
            tile = vec[start:stop]
            if tile.dtype != np.float32:
                tile = tile.astype(np.float32)
            sims = qf @ tile.T  # [Q_total, tile]
            if scales is not None:
                sims *= scales[start:stop]
            idx, local = plan
            part = np.maximum.reduceat(sims, local, axis=1)
            np.maximum(out[:, idx], part, out=part)
            out[:, idx] = part
        return out
    torch = _torch()
    device = vec.device if _is_torch(vec) else (q.device if _is_torch(q) else torch.device("cpu"))
    if not _is_torch(vec):
        vec = torch.from_numpy(np.ascontiguousarray(vec))
    qt = q if _is_torch(q) else torch.from_numpy(np.ascontiguousarray(q))
    with torch.no_grad():
        qt = qt.detach().to(device=device, dtype=torch.float32).contiguous()
        vec = vec.detach().to(device)
        if device.type != "cpu":
            return _max_matrix_scatter(qt, vec, offsets, scales, rows)
        out_np = np.full((q_total, n), -np.inf, dtype=np.float32)
        sc_t = torch.from_numpy(scales) if scales is not None else None
        buf = torch.empty(q_total * min(rows, max(total, 1)), dtype=torch.float32)
        for start in range(0, total, rows):
            stop = min(start + rows, total)
            plan = _segment_plan(offsets, start, stop)
            if plan is None:
                continue
            tile = vec[start:stop]
            if tile.dtype != torch.float32:
                tile = tile.float()
            sims = buf[: q_total * (stop - start)].view(q_total, stop - start)
            torch.mm(qt, tile.T, out=sims)
            if sc_t is not None:
                sims.mul_(sc_t[start:stop])
            idx, local = plan
            part = np.maximum.reduceat(sims.numpy(), local, axis=1)
            np.maximum(out_np[:, idx], part, out=part)
            out_np[:, idx] = part
    return out_np


def _max_matrix_scatter(
    qt: Any, vec: Any, offsets: IntArray, scales: FloatArray | None, rows: int
) -> Any:
    """Device-side ``[Q_total, n]`` maxima (used on CUDA; any torch device works).

    Each tile's ``[Q_total, tile]`` similarities are folded into the output with one
    ``scatter_reduce(amax)`` keyed by the document id of every token row.
    """
    torch = _torch()
    device = vec.device
    n = offsets.size - 1
    total = int(vec.shape[0])
    out = torch.full((qt.shape[0], n), -math.inf, dtype=torch.float32, device=device)
    if total == 0:
        return out
    lengths = torch.from_numpy(np.diff(offsets)).to(device)
    doc_of_row = torch.repeat_interleave(torch.arange(n, device=device), lengths)
    sc_t = torch.from_numpy(scales).to(device) if scales is not None else None
    for start in range(0, total, rows):
        stop = min(start + rows, total)
        tile = vec[start:stop]
        if tile.dtype != torch.float32:
            tile = tile.float()
        sims = torch.mm(qt, tile.T)
        if sc_t is not None:
            sims.mul_(sc_t[start:stop])
        index = doc_of_row[start:stop].expand(qt.shape[0], stop - start)
        out.scatter_reduce_(1, index, sims, reduce="amax", include_self=True)
    return out


def _stack_queries(queries: Sequence[Any]) -> tuple[Any, IntArray]:
    if any(_is_torch(q) for q in queries):
        torch = _torch()
        device = next(q.device for q in queries if _is_torch(q))
        parts = [
            (q if _is_torch(q) else torch.from_numpy(np.asarray(q))).to(device, torch.float32)
            for q in queries
        ]
        stacked: Any = torch.cat(parts, dim=0)
    else:
        stacked = np.concatenate([np.asarray(q, dtype=np.float32) for q in queries], axis=0)
    qoff = np.zeros(len(queries) + 1, dtype=np.int64)
    np.cumsum([int(q.shape[0]) for q in queries], out=qoff[1:])
    return stacked, qoff


def _sum_segments(m: Any, qoff: IntArray, normalize: bool) -> FloatArray:
    """``[Q_total, n]`` maxima → ``[m, n]`` fp32 scores (sum, or mean if ``normalize``)."""
    mat = _to_numpy_f32(m) if _is_torch(m) else m
    n = mat.shape[1]
    if n == 0:
        return np.zeros((qoff.size - 1, 0), dtype=np.float32)
    # Sum in fp64 so that a long query adds no error of its own; -inf stays -inf.
    scores = np.add.reduceat(mat.astype(np.float64), qoff[:-1], axis=0)
    if normalize:
        scores /= np.diff(qoff)[:, None]
    return scores.astype(np.float32)


# -- public API ---------------------------------------------------------------------------


def maxsim_batch(
    queries: Sequence[Any],
    docs: Sequence[Any] | PackedDocs,
    *,
    normalize: bool = False,
    tile_tokens: int | None = None,
) -> FloatArray:
    """Scores of ``m`` queries against ``n`` documents in one pass over the documents.

    Args:
        queries: ``m`` query matrices ``[Q_k, d]`` (numpy or torch, floating).
        docs: ``n`` documents ``[T_i, d]`` or :class:`PackedDocs`.
        normalize: divide each query's score by its ``Q_k``.
        tile_tokens: document rows per tile of the GEMM path (default: ``2**19 / Q_total``);
            the fused CPU kernel needs no tiles.

    Returns:
        ``[m, n]`` float32; ``-inf`` for zero-token documents; ``[m, 0]`` for no documents.
    """
    if _is_torch(queries) or isinstance(queries, np.ndarray):
        raise TypeError("queries must be a sequence of [Q, d] arrays; use maxsim() for one")
    queries = list(queries)
    if not queries:
        raise ValueError("queries is empty")
    for k, q in enumerate(queries):
        _check_query(q, f"queries[{k}]")
    dim = int(queries[0].shape[1])
    for k, q in enumerate(queries):
        if int(q.shape[1]) != dim:
            raise ValueError(f"queries[{k}] has dim {int(q.shape[1])}, queries[0] has {dim}")
    if (
        not isinstance(docs, PackedDocs)
        and isinstance(docs, Sequence)
        and not isinstance(docs, (str, bytes))
        and len(docs) == 0
    ):
        return np.zeros((len(queries), 0), dtype=np.float32)
    if isinstance(docs, (list, tuple)) and docs:
        # A list of arrays: read in place by the C kernel (no packing copy) when it applies.
        stacked, qoff = _stack_queries(queries)
        _tile_rows(int(stacked.shape[0]), tile_tokens)  # validated whichever kernel runs
        m = _max_matrix_list(stacked, docs)
        if m is not None:
            return _sum_segments(m, qoff, normalize)
    packed = _as_packed(docs)
    if packed.dim != dim:
        raise ValueError(f"dimension mismatch: queries have d={dim}, documents d={packed.dim}")
    stacked, qoff = _stack_queries(queries)
    if len(packed) == 0:
        return np.zeros((len(queries), 0), dtype=np.float32)
    return _sum_segments(_max_matrix(stacked, packed, tile_tokens), qoff, normalize)


def maxsim(
    query: Any,
    docs: Sequence[Any] | PackedDocs,
    *,
    normalize: bool = False,
    tile_tokens: int | None = None,
) -> FloatArray:
    """MaxSim of one query ``[Q, d]`` against ``n`` documents.

    Returns:
        ``[n]`` float32: ``Σ_i max_j q_i · d_j`` (divided by ``Q`` if ``normalize``);
        ``-inf`` for zero-token documents; shape ``[0]`` for an empty document list.
    """
    _check_query(query)
    scores: FloatArray = maxsim_batch([query], docs, normalize=normalize, tile_tokens=tile_tokens)
    return np.ascontiguousarray(scores[0], dtype=np.float32)


def maxsim_topk(
    query: Any,
    docs: Sequence[Any] | PackedDocs,
    k: int,
    *,
    normalize: bool = False,
    tile_tokens: int | None = None,
) -> tuple[IntArray, FloatArray]:
    """The ``k`` best documents: ``(indices [k'] int64, scores [k'] float32)``, best first.

    ``k' = min(k, n)``; ties go to the lower index; zero-token documents (``-inf``) come last.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    scores = maxsim(query, docs, normalize=normalize, tile_tokens=tile_tokens)
    return _topk(scores, int(k))


def _topk(scores: FloatArray, k: int) -> tuple[IntArray, FloatArray]:
    n = scores.size
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    neg = -scores
    if k < n:
        # Candidates: everything at least as good as the k-th best (keeps all ties).
        kth = np.partition(neg, k - 1)[k - 1]
        cand = np.flatnonzero(neg <= kth)
    else:
        cand = np.arange(n)
    order = cand[np.argsort(neg[cand], kind="stable")][:k]
    return order.astype(np.int64), scores[order].astype(np.float32)


def alignment(query: Any, doc: Any) -> tuple[IntArray, FloatArray]:
    """For each query token, the best-matching document row and its similarity.

    Args:
        query: ``[Q, d]``; doc: ``[T, d]`` with ``T >= 1`` (fp32 math whatever the dtype).

    Returns:
        ``(rows [Q] int64, sims [Q] float32)``; ``sims.sum()`` is the MaxSim score. Ties go to
        the lower row.
    """
    _check_query(query)
    _check_matrix(doc, "doc")
    if int(doc.shape[0]) == 0:
        raise ValueError("doc has no token vectors; alignment needs at least one")
    if int(doc.shape[1]) != int(query.shape[1]):
        raise ValueError(
            f"dimension mismatch: query d={int(query.shape[1])}, doc d={int(doc.shape[1])}"
        )
    sims = _to_numpy_f32(query) @ _to_numpy_f32(doc).T
    rows = sims.argmax(axis=1).astype(np.int64)
    return rows, sims[np.arange(sims.shape[0]), rows].astype(np.float32)


def maxsim_reference(
    query: Any, docs: Sequence[Any] | PackedDocs, *, normalize: bool = False
) -> npt.NDArray[np.float64]:
    """Slow float64 reference (one document at a time): for tests and benchmarks."""
    packed = docs if isinstance(docs, PackedDocs) else None
    q = _to_numpy_f32(query).astype(np.float64) if _is_torch(query) else np.asarray(query)
    q = q.astype(np.float64)
    n = len(packed) if packed is not None else len(docs)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        if packed is not None:
            lo, hi = int(packed.offsets[i]), int(packed.offsets[i + 1])
            d = _to_numpy_f32(packed.vectors[lo:hi]).astype(np.float64)
            if packed.scales is not None:
                d = d * packed.scales[lo:hi, None].astype(np.float64)
        else:
            assert not isinstance(docs, PackedDocs)
            d = _to_numpy_f32(docs[i]).astype(np.float64)
        out[i] = -np.inf if d.shape[0] == 0 else float((q @ d.T).max(axis=1).sum())
    if normalize:
        out /= q.shape[0]
    return out
