"""Scoring: the MaxSim function family, the reranker built on it, and explanations.

* :mod:`.packing` — packed documents (``[total_tokens, d]`` + offsets) and input checks;
* :mod:`.maxsim` — exact MaxSim (single pair, one query × many, many × many, top-k) on the
  fused C kernel (:mod:`._maxsim_kernel`) or tiled GEMMs, CPU or CUDA;
* :mod:`.reranker` — ``MaxSimReranker`` over the shared Encoder;
* :mod:`.explain` — the token alignment behind a score (heatmaps);
* :mod:`.server` — a remote server's own ``/score``, for comparison.
"""

from .explain import Explanation, TokenMatch, explain

# ``maxsim`` (the function) is exported by ``vllm_retrieval``, not here: it would shadow the
# ``scoring.maxsim`` module.
from .maxsim import alignment, kernel_info, maxsim_batch, maxsim_reference, maxsim_topk
from .packing import PackedDocs, StorageDtype, pack
from .reranker import MaxSimReranker, RerankResult
from .server import remote_score

__all__ = [
    "Explanation",
    "MaxSimReranker",
    "PackedDocs",
    "RerankResult",
    "StorageDtype",
    "TokenMatch",
    "alignment",
    "explain",
    "kernel_info",
    "maxsim_batch",
    "maxsim_reference",
    "maxsim_topk",
    "pack",
    "remote_score",
]
