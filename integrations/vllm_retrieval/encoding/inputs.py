"""The one validator of encoder inputs: texts, images and text+image items.

Every entry point that takes inputs (the Encoder, the store, the reranker, the adapters
through them) validates with these functions, so a bad input gets the same typed error
everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .images import MultimodalItem, is_image, load_image

__all__ = ["LoadedItem", "check_images", "check_items", "check_text", "check_texts"]


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


def _as_list(value: Any, what: str, kind: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or is_image(value) or isinstance(value, MultimodalItem):
        raise TypeError(f"{what} must be a list of {kind}, not a single {type(value).__name__}")
    if not isinstance(value, Sequence):
        if not isinstance(value, Iterable):
            raise TypeError(f"{what} must be a list of {kind}, got {type(value).__name__}")
        value = list(value)
    return list(value)


def check_images(value: Any, what: str = "images") -> list[Any]:
    """``value`` as a list of RGB ``PIL`` images (each a PIL image, path, bytes or data URI).

    Raises:
        TypeError: a single image instead of a list, or an item of no image type.
        ImageError: an item that cannot be read (missing, damaged, zero size).
    """
    return [
        load_image(img, f"{what}[{i}]") for i, img in enumerate(_as_list(value, what, "images"))
    ]


@dataclass(frozen=True)
class LoadedItem:
    """A validated item with an image: the decoded RGB image and the text beside it, if any."""

    image: Any
    text: str | None = None


def check_items(value: Any, what: str = "items") -> list[str | LoadedItem]:
    """``value`` as a list of texts (``str``) and image items (:class:`LoadedItem`).

    Items are ``str``, images (PIL image, path-like object, bytes) or :class:`MultimodalItem`
    (a text, an image or both). A ``str`` is always a text; pass a path as a ``Path`` or in a
    ``MultimodalItem(image=...)`` to mean an image file.
    """
    out: list[str | LoadedItem] = []
    for i, item in enumerate(_as_list(value, what, "texts or images")):
        where = f"{what}[{i}]"
        if isinstance(item, str):
            out.append(check_text(item, where))
        elif isinstance(item, LoadedItem):  # already validated
            out.append(item)
        elif isinstance(item, MultimodalItem):
            text = None if item.text is None else check_text(item.text, f"{where}.text")
            if item.image is None:
                out.append(check_text(text, where))
            else:
                out.append(LoadedItem(load_image(item.image, f"{where}.image"), text))
        else:
            out.append(LoadedItem(load_image(item, where)))
    return out
