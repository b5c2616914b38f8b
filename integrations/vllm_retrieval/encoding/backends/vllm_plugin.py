"""vLLM plugin (entry point ``vllm.general_plugins``): the model classes our profiles need.

vLLM loads every ``vllm.general_plugins`` entry point in each of its processes (the engine
core and workers too), so a model registered here is found wherever vLLM builds it: in
process, in vLLM's engine process, or in a ``vllm serve`` with vllm-retrieval installed.
Registration is by name and lazy: nothing heavier than vLLM's registry is imported here.

``VLLMRetrievalColQwen3``: vLLM's ``ColQwen3Model`` with its projection bias kept. vLLM 0.32
builds ``custom_text_proj`` without a bias when config.json declares ``embed_dim`` (the
trained bias is then silently ignored), and fails to load a biased projection when it does
not (the bias is read before the weight). See :mod:`.colqwen3_model`.
"""

from __future__ import annotations

__all__ = ["COLQWEN3_ARCH", "COLQWEN3_BIAS_FLAG", "register"]

COLQWEN3_ARCH = "VLLMRetrievalColQwen3"
# Set (through ``hf_overrides``) when the checkpoint's projection has a bias.
COLQWEN3_BIAS_FLAG = "vllm_retrieval_projection_bias"


def register() -> None:
    """Register our model classes with vLLM (idempotent: vLLM may call it many times)."""
    from vllm import ModelRegistry

    if COLQWEN3_ARCH not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            COLQWEN3_ARCH, "vllm_retrieval.encoding.backends.colqwen3_model:ColQwen3WithBias"
        )
