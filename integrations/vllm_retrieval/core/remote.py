"""Remote vLLM backend (issue 8): placeholder until the httpx client lands."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .encoder import Encoder
    from .engine import EngineBackend


def get_remote_engine(encoder: Encoder) -> EngineBackend:
    raise NotImplementedError("the remote vLLM backend is not implemented yet")
