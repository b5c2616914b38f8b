from typing import Any

def max_matrix(
    qT: Any,
    d: int,
    Qp: int,
    vec: Any,
    kind: int,
    scales: Any,
    offsets: Any,
    lo: int,
    hi: int,
    out: Any,
    simd: bool = ...,
    /,
) -> None: ...
def max_matrix_ptrs(
    qT: Any,
    d: int,
    Qp: int,
    ptrs: Any,
    lens: Any,
    kinds: Any,
    lo: int,
    hi: int,
    out: Any,
    simd: bool = ...,
    /,
) -> int: ...
def scan_docs(docs: Any, d: int, ndarray: type, ptrs: Any, lens: Any, kinds: Any, /) -> int: ...
def simd() -> str: ...
