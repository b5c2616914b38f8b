"""Packed documents: ``[total_tokens, d]`` + offsets, never padded; validation of inputs.

Every MaxSim in the project takes documents as :class:`PackedDocs` (or a list it packs once):
one matrix of every document's token rows back to back and int64 ``offsets`` of length
``n + 1`` (document ``i`` is rows ``offsets[i]:offsets[i + 1]``). Storage is fp32, fp16, bf16
(torch) or int8 with one fp32 scale per row; scoring always accumulates in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["PackedDocs", "StorageDtype", "pack"]

StorageDtype = Literal["float32", "float16", "bfloat16", "int8"]
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def _np_float(dtype: np.dtype[Any]) -> bool:
    """fp16/fp32/fp64 numpy dtypes, in either byte order."""
    return dtype.kind == "f" and dtype.itemsize in (2, 4, 8)


def _torch() -> Any:
    from ..errors import require

    return require("torch", "cpu")


def _is_torch(x: Any) -> bool:
    """True for a torch tensor, without importing torch when it is not loaded yet."""
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "dtype") and hasattr(x, "device")


def _kind(x: Any, what: str) -> str:
    """``"float"`` or ``"int8"`` for an accepted array; raises TypeError otherwise."""
    if _is_torch(x):
        torch = _torch()
        if x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            return "float"
        if x.dtype == torch.int8:
            return "int8"
        raise TypeError(f"{what} has dtype {x.dtype}; expected a floating dtype")
    if isinstance(x, np.ndarray):
        if _np_float(x.dtype):
            return "float"
        if x.dtype == np.int8:
            return "int8"
        raise TypeError(f"{what} has dtype {x.dtype}; expected a floating dtype")
    raise TypeError(f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _all_finite(x: Any) -> bool:
    if _is_torch(x):
        torch = _torch()
        if not x.dtype.is_floating_point:
            return True
        return bool(torch.isfinite(x).all().item())
    if x.dtype.kind != "f":
        return True
    # A sum is NaN/inf iff some element is (barring fp overflow, which is no better).
    with np.errstate(all="ignore"):
        return bool(np.isfinite(x.sum(dtype=np.float64)))


def _check_matrix(x: Any, what: str, *, allow_int8: bool = False) -> None:
    kind = _kind(x, what)
    if kind == "int8" and not allow_int8:
        raise TypeError(f"{what} has dtype {x.dtype}; expected a floating dtype")
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D [tokens, dim], got shape {tuple(x.shape)}")
    if kind == "float" and not _all_finite(x):
        raise ValueError(f"{what} contains NaN or inf")


@dataclass(frozen=True)
class PackedDocs:
    """``n`` documents packed (never padded) into one matrix.

    Attributes:
        vectors: ``[total_tokens, d]`` token vectors of all documents, back to back; numpy
            fp32/fp16/fp64/int8 or a torch tensor (fp32/fp16/bf16/fp64/int8, CPU or CUDA).
        offsets: ``[n + 1]`` int64; document ``i`` is ``vectors[offsets[i]:offsets[i + 1]]``;
            ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == total_tokens``. Equal
            neighbours are a zero-token document.
        scales: ``[total_tokens]`` fp32, required for (and only for) int8 ``vectors``: row ``j``
            stands for ``scales[j] * vectors[j]``.

    Construction validates everything once (shapes, dtypes, offsets, finiteness), so scoring
    a stored corpus repeatedly costs no further checks.
    """

    vectors: Any
    offsets: IntArray
    scales: FloatArray | None = None

    def __post_init__(self) -> None:
        vec = self.vectors
        kind = _kind(vec, "PackedDocs.vectors")
        if vec.ndim != 2:
            raise ValueError(
                f"PackedDocs.vectors must be 2-D [total_tokens, dim], got {tuple(vec.shape)}"
            )
        if kind == "float" and not _all_finite(vec):
            raise ValueError("PackedDocs.vectors contains NaN or inf")
        try:
            raw = np.asarray(self.offsets)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"PackedDocs.offsets is not array-like: {exc}") from exc
        if raw.dtype.kind not in "iu":
            raise TypeError(f"PackedDocs.offsets must be integers, got dtype {raw.dtype}")
        off = np.ascontiguousarray(raw, dtype=np.int64)
        if off.ndim != 1 or off.size < 1:
            raise ValueError("PackedDocs.offsets must be 1-D with n + 1 >= 1 entries")
        total = int(vec.shape[0])
        if off[0] != 0:
            raise ValueError(f"PackedDocs.offsets[0] must be 0, got {int(off[0])}")
        if off[-1] != total:
            raise ValueError(
                f"PackedDocs.offsets[-1] ({int(off[-1])}) != number of token rows ({total})"
            )
        if off.size > 1 and bool((np.diff(off) < 0).any()):
            raise ValueError("PackedDocs.offsets must be non-decreasing")
        object.__setattr__(self, "offsets", off)
        if kind == "int8":
            if self.scales is None:
                raise ValueError("int8 PackedDocs.vectors need per-token fp32 scales")
            sc = np.ascontiguousarray(np.asarray(self.scales), dtype=np.float32)
            if sc.shape != (total,):
                raise ValueError(f"PackedDocs.scales must have shape ({total},), got {sc.shape}")
            if not bool(np.isfinite(sc).all()):
                raise ValueError("PackedDocs.scales contains NaN or inf")
            object.__setattr__(self, "scales", sc)
        elif self.scales is not None:
            raise ValueError("PackedDocs.scales is only for int8 vectors")

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def dim(self) -> int:
        """Width ``d`` of the token vectors."""
        return int(self.vectors.shape[1])

    @property
    def total_tokens(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def lengths(self) -> IntArray:
        """``[n]`` tokens per document."""
        return np.diff(self.offsets)

    def document(self, i: int) -> FloatArray:
        """Document ``i``'s token vectors ``[T_i, d]`` as fp32 numpy (dequantised)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"document {i} out of range for {n} documents")
        i %= n
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        rows = _to_numpy_f32(self.vectors[lo:hi])
        if self.scales is not None:
            rows = rows * self.scales[lo:hi, None]
        return rows


def _to_numpy_f32(x: Any) -> FloatArray:
    if _is_torch(x):
        return np.asarray(x.detach().to("cpu").float().numpy(), dtype=np.float32)
    return np.asarray(x, dtype=np.float32)


_TORCH_NAMES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "int8": "int8"}


def _quantize_int8(rows: Any) -> tuple[Any, FloatArray]:
    """Symmetric per-row int8: ``rows ≈ scales[:, None] * q``."""
    if _is_torch(rows):
        torch = _torch()
        r = rows.float()
        amax = r.abs().amax(dim=1) if r.shape[0] else torch.zeros(0, device=r.device)
        scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        q = torch.round(r / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return q, np.asarray(scale.cpu().numpy(), dtype=np.float32)
    r = np.asarray(rows, dtype=np.float32)
    amax = np.abs(r).max(axis=1) if r.shape[0] else np.zeros(0, np.float32)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(r / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def pack(docs: Sequence[Any], *, dtype: StorageDtype | None = "float32") -> PackedDocs:
    """Pack a list of ``[T_i, d]`` arrays into :class:`PackedDocs` (no padding).

    Args:
        docs: numpy arrays or torch tensors (all of one kind, one device), floating dtype.
            ``[0, d]`` arrays are zero-token documents.
        dtype: storage dtype: ``"float32"`` (default), ``"float16"``, ``"bfloat16"`` (needs
            torch; the result holds a torch tensor) or ``"int8"`` (per-token fp32 scales).
            ``None`` keeps the inputs' dtype.

    Raises:
        TypeError: non-array documents, mixed numpy/torch, non-floating dtypes.
        ValueError: wrong rank, differing dims, NaN/inf.
    """
    if dtype is not None and dtype not in _TORCH_NAMES:
        raise ValueError(f"unknown storage dtype {dtype!r}; expected one of {list(_TORCH_NAMES)}")
    if isinstance(docs, PackedDocs):
        raise TypeError("docs are already packed")
    if _is_torch(docs) or isinstance(docs, np.ndarray):
        raise TypeError("docs must be a sequence of [T_i, d] arrays, not a single array")
    docs = list(docs)
    if not docs:
        raise ValueError("cannot pack an empty document list (the dimension is unknown)")
    use_torch = _is_torch(docs[0])
    dim = int(docs[0].shape[1]) if getattr(docs[0], "ndim", 0) == 2 else -1
    for i, doc in enumerate(docs):
        _check_matrix(doc, f"docs[{i}]")
        if _is_torch(doc) != use_torch:
            raise TypeError("docs mix numpy arrays and torch tensors")
        if int(doc.shape[1]) != dim:
            raise ValueError(f"docs[{i}] has dim {int(doc.shape[1])}, docs[0] has {dim}")
    lengths = np.fromiter((int(d.shape[0]) for d in docs), dtype=np.int64, count=len(docs))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if use_torch:
        torch = _torch()
        device = docs[0].device
        if any(d.device != device for d in docs):
            raise ValueError("docs are on different devices")
        cat = torch.cat([d.reshape(-1, dim) for d in docs], dim=0)
        if dtype == "int8":
            q, scales = _quantize_int8(cat)
            return PackedDocs(q, offsets, scales)
        if dtype is not None:
            cat = cat.to(getattr(torch, _TORCH_NAMES[dtype]))
        return PackedDocs(cat.contiguous(), offsets)
    cat_np = np.concatenate([np.asarray(d).reshape(-1, dim) for d in docs], axis=0)
    if not cat_np.dtype.isnative:
        cat_np = cat_np.astype(cat_np.dtype.newbyteorder("="))
    if dtype == "int8":
        q_np, scales = _quantize_int8(cat_np)
        return PackedDocs(q_np, offsets, scales)
    if dtype == "bfloat16":
        torch = _torch()
        return PackedDocs(torch.from_numpy(cat_np.astype(np.float32)).to(torch.bfloat16), offsets)
    if dtype is not None:
        cat_np = cat_np.astype(np.dtype(dtype), copy=False)
    return PackedDocs(np.ascontiguousarray(cat_np), offsets)


# -- validation of queries and documents --------------------------------------------------


def _check_query(query: Any, what: str = "query") -> None:
    _check_matrix(query, what)
    if int(query.shape[0]) == 0:
        raise ValueError(f"{what} has no token vectors (shape {tuple(query.shape)})")


def _as_packed(docs: Any) -> PackedDocs:
    if isinstance(docs, PackedDocs):
        return docs
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
        if _is_torch(docs) or isinstance(docs, np.ndarray):
            raise TypeError(
                "docs must be a sequence of [T_i, d] arrays or PackedDocs, not a single array"
            )
        raise TypeError(f"docs must be a sequence of arrays or PackedDocs, got {type(docs)}")
    # Keep the caller's dtype (fp16/bf16 inputs are not widened in memory; math is fp32).
    return pack(docs, dtype=None)


# -- the kernel ---------------------------------------------------------------------------


# -- documents read in place (the list path of the C kernel) ------------------------------


@dataclass(frozen=True)
class _DocTable:
    """A list of documents as the C kernel reads them where they lie, without copies.

    ``ptrs`` / ``lengths`` / ``kinds`` (``[n]`` int64 / int64 / int8: 0 fp32, 1 fp16,
    2 bf16 bits) address each document's rows; ``keep`` holds the arrays those addresses point
    into (the caller's own, plus a converted copy for the few documents that needed one).
    """

    ptrs: IntArray
    lengths: IntArray
    kinds: npt.NDArray[np.int8]
    keep: list[Any]

    @property
    def offsets(self) -> IntArray:
        off = np.zeros(self.lengths.size + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=off[1:])
        return off


def _doc_table(docs: Sequence[Any], dim: int, native: Any) -> _DocTable | None:
    """The kernel's view of a list of documents, or ``None`` when the list must be packed.

    One C pass (``native.scan_docs``) takes the address, length and dtype of every numpy
    float32/float16 ``[T, dim]`` array with contiguous rows. The rest are converted one by one
    (numpy float64, byte-swapped or non-contiguous: a fp32 copy of that document only; CPU torch
    tensors: read in place, fp64 or non-contiguous ones copied). ``None`` (pack instead, which
    raises the precise error or handles the case) for anything else: non-arrays, wrong rank or
    width, non-floating dtypes, numpy and torch mixed, CUDA tensors. NaN/inf are found by the
    kernel as it scores.
    """
    docs = list(docs)  # a snapshot: the table's arrays stay alive whatever the caller does
    n = len(docs)
    ptrs = np.empty(n, dtype=np.int64)
    lengths = np.empty(n, dtype=np.int64)
    kinds = np.empty(n, dtype=np.int8)
    keep: list[Any] = [docs]
    left = native.scan_docs(docs, dim, np.ndarray, ptrs, lengths, kinds)
    if left and _is_torch(docs[0]):
        if left != n or not _torch_entries(docs, dim, ptrs, lengths, kinds, keep):
            return None  # numpy and torch mixed (pack() says so), or a tensor to reject
    elif left:
        for i in np.flatnonzero(kinds < 0).tolist():
            entry = _numpy_entry(docs[i], dim)
            if entry is None:
                return None
            arr, ptrs[i], lengths[i], kinds[i] = entry
            keep.append(arr)
    return _DocTable(ptrs, lengths, kinds, keep)


def _torch_entries(
    docs: Sequence[Any],
    dim: int,
    ptrs: IntArray,
    lengths: IntArray,
    kinds: npt.NDArray[np.int8],
    keep: list[Any],
) -> bool:
    """Fill the table for a list of CPU torch tensors (in place; fp64 or non-contiguous ones
    are copied); False for anything :func:`pack` must handle or reject."""
    torch = _torch()
    f32, f16, bf16, f64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
    for i, t in enumerate(docs):
        if not _is_torch(t) or t.dim() != 2 or not t.is_cpu:
            return False
        rows, width = t.shape
        dt = t.dtype
        if width != dim:
            return False
        if dt is f32 or dt is f64:
            kinds[i] = 0
        elif dt is f16:
            kinds[i] = 1
        elif dt is bf16:
            kinds[i] = 2
        else:
            return False
        if dt is f64 or not t.is_contiguous():
            t = t.detach().to(f32 if dt is f64 else dt).contiguous()
            keep.append(t)
        ptrs[i] = t.data_ptr()
        lengths[i] = rows
    return True


def _numpy_entry(doc: Any, dim: int) -> tuple[Any, int, int, int] | None:
    """``(copy, address, rows, kind)`` of a numpy document the C scan left over: float64,
    byte-swapped or with non-contiguous rows (``None``: :func:`pack` handles or rejects it)."""
    if not isinstance(doc, np.ndarray):
        return None
    if not _np_float(doc.dtype) or doc.ndim != 2 or doc.shape[1] != dim:
        return None
    wide = np.float16 if doc.dtype.itemsize == 2 else np.float32
    arr = np.ascontiguousarray(doc, dtype=wide)
    return arr, int(arr.ctypes.data), int(arr.shape[0]), 1 if wide is np.float16 else 0
