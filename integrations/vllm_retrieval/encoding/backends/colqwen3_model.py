"""``ColQwen3WithBias``: vLLM's ColQwen3 late-interaction model, projection bias included.

Imported only by vLLM (registered in :mod:`.vllm_plugin`). Two fixes over vLLM 0.32's
``ColQwen3Model``, both about the ``custom_text_proj`` linear layer of ColPali-style
checkpoints (ColPali-engine and TomoroAI train it with a bias):

* with ``embed_dim`` (or ``dims``/``dim``...) in config.json vLLM builds the layer without a
  bias and drops the trained one without a word; here the layer gets a bias when the profile
  found one in the checkpoint (the ``vllm_retrieval_projection_bias`` config flag);
* without a declared dimension vLLM creates the layer when it meets the weight, and a bias
  read before it (safetensors names are sorted: ``bias`` < ``weight``) is lost, which fails
  the load; here projection biases are loaded after their weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from vllm.model_executor.models.colqwen3 import ColQwen3Model

from .vllm_plugin import COLQWEN3_BIAS_FLAG

__all__ = ["ColQwen3WithBias"]


class ColQwen3WithBias(ColQwen3Model):
    def __init__(self, *, vllm_config: Any, prefix: str = "model") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config = vllm_config.model_config.hf_config
        proj = self.custom_text_proj
        if getattr(config, COLQWEN3_BIAS_FLAG, False) and proj is not None and proj.bias is None:
            self.custom_text_proj = nn.Linear(
                proj.in_features, proj.out_features, bias=True, dtype=proj.weight.dtype
            )

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        ordered = sorted(
            weights, key=lambda nw: self._is_proj_weight(nw[0]) and nw[0].endswith("bias")
        )
        loaded: set[str] = super().load_weights(ordered)
        return loaded
