"""The one validator of encoder inputs (texts today; images join here).

Every entry point that takes texts (the Encoder, the store, the reranker, the adapters through
them) validates with these functions, so a bad input gets the same typed error everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["check_text", "check_texts"]


def check_texts(value: Any, what: str = "texts", *, allow_empty: bool = False) -> list[str]:
    """``value`` as a list of strings.

    Raises:
        TypeError: a single ``str``/``bytes`` instead of a list, a non-iterable, or an item
            that is not a ``str``.
        ValueError: an empty string, unless ``allow_empty`` (e.g. documents a reranker scores
            as having no tokens).
    """
    if isinstance(value, (str, bytes)):
        one = "string" if isinstance(value, str) else "bytes object"
        raise TypeError(f"{what} must be a list of strings, not a single {one}")
    if not isinstance(value, Sequence):
        if not isinstance(value, Iterable):
            raise TypeError(f"{what} must be a list of strings, got {type(value).__name__}")
        value = list(value)
    out: list[str] = []
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(text).__name__}")
        if text == "" and not allow_empty:
            raise ValueError(f"{what}[{i}] is an empty string")
        out.append(text)
    return out


def check_text(value: Any, what: str = "text", *, allow_blank: bool = True) -> str:
    """``value`` as one non-empty string (``allow_blank=False`` also refuses whitespace only).

    Raises:
        TypeError: not a ``str``.
        ValueError: empty (or blank when ``allow_blank`` is false).
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if value == "" or (not allow_blank and not value.strip()):
        raise ValueError(f"{what} is empty")
    return value
