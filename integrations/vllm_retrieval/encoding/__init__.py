"""Encoding: texts to dense and token vectors from one forward pass of a shared engine.

* :mod:`.settings` — ``EncoderSettings``, the one definition of an encoder's settings;
* :mod:`.inputs` — the one validator of inputs (texts; images and text+image items from
  :mod:`.images`);
* :mod:`.profiles` — what a model needs (pooling, prompts, ColBERT markers, projection),
  and :mod:`.vlm` for vision-language models (Qwen-VL family, Jina embeddings v4);
* :mod:`.encoder` — the ``Encoder``: tokenise, submit to the engine, pool and select rows;
* :mod:`.backends` — the ``EngineBackend`` protocol, in-process vLLM, remote ``vllm serve``
  and the registry that shares one engine per settings per process.
"""

from .backends import (
    EngineBackend,
    EngineSettings,
    RemoteEngine,
    RemoteSettings,
    shutdown_engines,
    shutdown_remote_engines,
)
from .encoder import EncodedText, Encoder
from .images import ImageError, MultimodalItem, load_image
from .inputs import LoadedItem, check_images, check_items, check_text, check_texts
from .profiles import (
    DEFAULT_MODEL,
    PROFILES,
    ModelProfile,
    Pooling,
    default_model_path,
    load_profile,
    matryoshka_dims,
    resolve_model_path,
)
from .settings import ENCODER_FIELDS, EncoderSettings

__all__ = [
    "DEFAULT_MODEL",
    "ENCODER_FIELDS",
    "PROFILES",
    "EncodedText",
    "Encoder",
    "EncoderSettings",
    "EngineBackend",
    "EngineSettings",
    "ImageError",
    "LoadedItem",
    "ModelProfile",
    "MultimodalItem",
    "Pooling",
    "RemoteEngine",
    "RemoteSettings",
    "check_images",
    "check_items",
    "check_text",
    "check_texts",
    "default_model_path",
    "load_image",
    "load_profile",
    "matryoshka_dims",
    "resolve_model_path",
    "shutdown_engines",
    "shutdown_remote_engines",
]
