"""Engine backends behind the Encoder: the protocol, in-process vLLM, remote ``vllm serve``."""

from .base import EngineBackend, RowsArray
from .local import EngineSettings, SharedEngine, fast_bf16_cpu, resolve_dtype
from .registry import (
    get_engine,
    get_remote_engine,
    release_engine,
    shutdown_engines,
    shutdown_remote_engines,
)
from .remote import RemoteEngine, RemoteSettings, ServerInfo, Transfer

__all__ = [
    "EngineBackend",
    "EngineSettings",
    "RemoteEngine",
    "RemoteSettings",
    "RowsArray",
    "ServerInfo",
    "SharedEngine",
    "Transfer",
    "fast_bf16_cpu",
    "get_engine",
    "get_remote_engine",
    "release_engine",
    "resolve_dtype",
    "shutdown_engines",
    "shutdown_remote_engines",
]
