"""Image documents: what the store keeps of an image (a reference, not the pixels) and how a
batch of images becomes documents with one forward pass each.

An image document's payload is its caption (``""`` without one) as the text, and the caller's
metadata plus ``metadata["image"]``: the file path or ``data:`` URI it came from. In-memory
images (PIL, bytes) keep no reference unless ``keep_pixels=True`` stores them as a PNG
``data:`` URI, or the caller's metadata already names one.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..encoding import MultimodalItem, check_images, check_text

if TYPE_CHECKING:
    from ..encoding import Encoder

__all__ = ["IMAGE_KEY", "encode_image_batches", "image_reference"]

FloatArray = npt.NDArray[np.float32]
IMAGE_KEY = "image"


def image_reference(image: Any, loaded: Any, keep_pixels: bool) -> str | None:
    """The reference stored for ``image`` (its path or URI; a PNG data URI if asked)."""
    if isinstance(image, (str, os.PathLike)) and not str(image).startswith("data:"):
        return os.path.abspath(os.fspath(image))
    if keep_pixels:
        if isinstance(image, str):  # a data: URI already
            return image
        buf = io.BytesIO()
        loaded.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return None


def encode_image_batches(
    encoder: Encoder,
    images: Sequence[Any],
    metadatas: list[dict[str, Any]],
    captions: Sequence[str | None] | None,
    *,
    keep_pixels: bool,
    batch_size: int,
) -> Iterator[tuple[int, list[str], FloatArray, list[FloatArray], list[dict[str, Any]]]]:
    """``(start, texts, dense, tokens, metadatas)`` per batch of ``batch_size`` images."""
    if captions is not None:
        captions = list(captions)
        if len(captions) != len(images):
            raise ValueError(f"got {len(captions)} captions for {len(images)} images")
        for i, c in enumerate(captions):
            if c is not None:
                check_text(c, f"captions[{i}]")
    for s in range(0, len(images), batch_size):
        batch = list(images[s : s + batch_size])
        loaded = check_images(batch, "images")
        caps = [None] * len(batch) if captions is None else captions[s : s + batch_size]
        items = [
            MultimodalItem(text=c, image=img) if c else img
            for c, img in zip(caps, loaded, strict=True)
        ]
        dense, tokens = encoder.encode_documents(items)
        metas = []
        for i, (raw, img) in enumerate(zip(batch, loaded, strict=True)):
            meta = dict(metadatas[s + i])
            ref = image_reference(raw, img, keep_pixels)
            if ref is not None and IMAGE_KEY not in meta:
                meta[IMAGE_KEY] = ref
            metas.append(meta)
        yield s, [c or "" for c in caps], dense, tokens, metas
