"""The seam between the Encoder and whatever runs the model: the ``EngineBackend`` protocol.

A backend takes token-id lists (the Encoder tokenises: prefixes, ColBERT markers, truncation)
and returns each text's raw ``[rows, dim]`` float32 rows from the ``token_embed`` task without
activation; the Encoder pools the dense vector and selects and normalises the token rows.
Backends: :mod:`.local` (an in-process vLLM engine) and :mod:`.remote` (a ``vllm serve``
fleet). A new way to run the model is a new module implementing this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["EngineBackend", "ImagePrompt", "ImageRows", "MultimodalBackend", "RowsArray"]

RowsArray = npt.NDArray[np.float32]


@runtime_checkable
class EngineBackend(Protocol):
    """What the Encoder needs from an engine: in-process or remote."""

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the engine can encode (raises EngineError if it cannot)."""
        ...

    def submit(self, ids: Sequence[list[int]]) -> Future[list[RowsArray]]:
        """Raw ``[rows, dim]`` float32 arrays (token_embed, no activation), one per id list."""
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...


@dataclass(frozen=True)
class ImagePrompt:
    """A vision-language prompt: token ids with one image placeholder token per image, and
    the images (RGB ``PIL`` images) that the model's processor expands them into."""

    token_ids: list[int]
    images: tuple[Any, ...]


@dataclass(frozen=True)
class ImageRows:
    """The raw rows of an image prompt and the *expanded* token ids they belong to (one
    placeholder becomes one row per merged image patch)."""

    rows: RowsArray
    token_ids: list[int]


@runtime_checkable
class MultimodalBackend(EngineBackend, Protocol):
    """A backend that also takes images."""

    def submit_images(self, prompts: Sequence[ImagePrompt]) -> Future[list[ImageRows]]:
        """Raw rows and expanded ids, one per prompt (token_embed, no activation)."""
        ...
