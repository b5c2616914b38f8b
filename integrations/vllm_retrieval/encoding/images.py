"""Images as encoder inputs: loading, validation and the text+image item.

An image is a ``PIL.Image.Image``, a file path, the file's bytes, or a ``data:`` URI. Each is
decoded fully here (so a truncated file fails now, with a typed error, not inside the engine),
converted to RGB (RGBA, LA, P, L, CMYK, I;16, ...), and handed to the model's processor, which
resizes it to the model's pixel limits: large images are resized, never rejected.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import VLLMRetrievalError, require

__all__ = ["ImageError", "MultimodalItem", "is_image", "load_image"]


class ImageError(VLLMRetrievalError, ValueError):
    """An image could not be read: missing, not an image, truncated, or of zero size."""


@dataclass(frozen=True)
class MultimodalItem:
    """One input of a vision-language model: a text, an image, or a text with an image."""

    text: str | None = None
    image: Any = None

    def __post_init__(self) -> None:
        if self.text is None and self.image is None:
            raise ValueError("a MultimodalItem needs a text, an image, or both")


def is_image(value: Any) -> bool:
    """Whether ``value`` is an in-memory image (a ``PIL.Image.Image``)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow ships with the images extra
        return False
    return isinstance(value, Image.Image)


def _open(value: Any, what: str) -> Any:
    pil = require("PIL.Image", "images")
    if is_image(value):
        return value
    if isinstance(value, str) and value.startswith("data:"):
        header, _, payload = value.partition(",")
        if ";base64" not in header:
            raise ImageError(f"{what}: only base64 data: URIs are supported")
        try:
            value = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"{what}: the data: URI is not valid base64 ({exc})") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not len(value):
            raise ImageError(f"{what}: zero bytes")
        source: Any = io.BytesIO(bytes(value))
    elif isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise ImageError(f"{what}: no image file at {str(path)!r}")
        source = path
    else:
        raise TypeError(
            f"{what} must be a PIL image, a path, bytes or a data: URI, got {type(value).__name__}"
        )
    try:
        return pil.open(source)
    except Exception as exc:  # PIL raises several types for unreadable data
        raise ImageError(f"{what}: not a readable image ({exc})") from None


def load_image(value: Any, what: str = "image") -> Any:
    """``value`` decoded to an RGB ``PIL.Image.Image`` (see the module doc).

    Raises:
        TypeError: not an image type at all.
        ImageError: missing file, undecodable or truncated data, zero width or height.
    """
    img = _open(value, what)
    try:
        img.load()
    except Exception as exc:
        raise ImageError(f"{what}: the image data is truncated or damaged ({exc})") from None
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{what}: the image has zero size ({img.width}x{img.height})")
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            flat = require("PIL.Image", "images").new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            img = flat
        elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
            img = img.point(lambda v: v * (1 / 256)).convert("L").convert("RGB")
        else:
            img = img.convert("RGB")
    return img
