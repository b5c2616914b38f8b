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
def simd() -> str: ...
