"""``QueryPlan``: the one place where search modes are defined.

A plan is built once per search from the caller's ``mode``/``k``/``candidates``/``fusion``
(validated here) and the store's state (a token index or not). Its :meth:`QueryPlan.tree` is
the Qdrant query as data — which named vector each stage searches, how deep, with which
search parameters, over which prefetched candidates — and each backend renders that tree
with its own API (:mod:`.backends.edge`, :mod:`.backends.client`): the modes are written once.

Modes (filters apply at every stage):

``dense``   cosine on the dense vector (HNSW).
``maxsim``  exhaustive MaxSim (sum over query tokens of the best document-token cosine).
``hybrid``  (default) MaxSim rerank of a candidate pool: the dense prefetch of ``candidates``
            plus, once a token index is built, ``candidates`` from its centroid postings.
``fusion``  rank fusion of the dense list and a MaxSim list — the exhaustive MaxSim list, or
            with a token index, ``hybrid``'s reranked pool — by reciprocal rank
            (``fusion="rrf"``, k=60) or by distribution-based score normalisation
            (``fusion="dbsf"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from ..errors import StoreMismatchError
from .manifest import CENTROIDS, DENSE, TOKENS
from .records import check_positive

__all__ = ["FUSIONS", "MODES", "Fuse", "Fusion", "Mode", "Params", "QueryPlan", "Search"]

Mode = Literal["dense", "maxsim", "hybrid", "fusion"]
MODES: tuple[str, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "hybrid"
FloatArray = npt.NDArray[np.float32]
Fusion = Literal["rrf", "dbsf"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
RRF_K = 60

#: Search parameters of a stage, rendered per backend (and per compression):
#: ``dense`` HNSW with ``ef = max(candidates, 64)``; ``exact`` exhaustive on the original
#: vectors; ``rerank`` scoring a prefetched pool on the originals (MaxSim on quantised codes
#: is no faster for a few hundred candidates); ``quantized`` a deep MaxSim list on the codes,
#: rescored on the originals; ``None`` the engine's defaults.
Params = Literal["dense", "exact", "rerank", "quantized"] | None


@dataclass(frozen=True)
class Search:
    """Nearest neighbours on one named vector, optionally over prefetched candidates."""

    vector: str  # DENSE, TOKENS or CENTROIDS
    limit: int
    params: Params = None
    prefetch: tuple[Search, ...] = ()


@dataclass(frozen=True)
class Fuse:
    """Rank fusion of the prefetched lists."""

    fusion: Fusion
    limit: int
    prefetch: tuple[Search, ...]


Stage = Search | Fuse


def check_mode(mode: Any) -> Mode:
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r} (choose {', '.join(MODES)})")
    return mode  # type: ignore[no-any-return]


def check_fusion(fusion: Any) -> Fusion:
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r} (choose {' or '.join(map(repr, FUSIONS))})")
    return fusion  # type: ignore[no-any-return]


@dataclass(frozen=True)
class QueryPlan:
    """A validated search request; :meth:`tree` is the query every backend renders."""

    mode: Mode
    k: int
    candidates: int
    fusion: Fusion = "rrf"
    nprobe: int | None = None

    @classmethod
    def create(
        cls,
        mode: Any = DEFAULT_MODE,
        k: Any = 10,
        candidates: Any = 200,
        fusion: Any = "rrf",
        nprobe: Any = None,
    ) -> QueryPlan:
        """Validate the caller's settings (``TypeError``/``ValueError`` naming the bad one)."""
        k = check_positive(k)
        mode = check_mode(mode)
        fusion = check_fusion(fusion)
        candidates = check_positive(candidates, "candidates")
        nprobe = None if nprobe is None else check_positive(nprobe, "nprobe")
        return cls(mode, k, max(candidates, k), fusion, nprobe)

    @property
    def needs_dense(self) -> bool:
        return self.mode != "maxsim"

    @property
    def needs_tokens(self) -> bool:
        return self.mode != "dense"

    @property
    def uses_token_index(self) -> bool:
        """Whether the token index's postings join the candidates (when one is built)."""
        return self.mode in ("hybrid", "fusion")

    def query_vectors(
        self, dense: Any, tokens: Any, dim: int
    ) -> tuple[FloatArray | None, FloatArray | None]:
        """The query's dense vector ``[dim]`` and token vectors ``[Q, dim]``, as this mode
        needs them (``ValueError`` if one is missing, ``StoreMismatchError`` if misshapen)."""
        q_dense = q_tok = None
        if self.needs_dense:
            if dense is None:
                raise ValueError(f"mode {self.mode!r} needs the dense query vector")
            q_dense = np.asarray(dense, dtype=np.float32).reshape(-1)
            if q_dense.shape[0] != dim:
                raise StoreMismatchError(f"query has {q_dense.shape[0]} dims, the store has {dim}")
        if self.needs_tokens:
            if tokens is None:
                raise ValueError(f"mode {self.mode!r} needs the query token vectors")
            q_tok = np.asarray(tokens, dtype=np.float32)
            if q_tok.ndim != 2 or q_tok.shape[0] == 0 or q_tok.shape[1] != dim:
                raise StoreMismatchError(
                    f"query tokens must be [Q>0, {dim}], got {list(q_tok.shape)}"
                )
        return q_dense, q_tok

    def tree(self, *, token_index: bool) -> Stage:
        """The query: the top stage, its prefetches nested (``token_index``: postings exist)."""
        n = self.candidates
        if self.mode == "dense":
            return Search(DENSE, self.k, "dense")
        if self.mode == "maxsim":
            return Search(TOKENS, self.k, "exact")
        dense = Search(DENSE, n, "dense")
        pool = (dense, Search(CENTROIDS, n)) if token_index else (dense,)
        if self.mode == "hybrid":
            return Search(TOKENS, self.k, "rerank", pool)
        maxsim_list = (
            Search(TOKENS, n, "rerank", pool) if token_index else Search(TOKENS, n, "quantized")
        )
        return Fuse(self.fusion, self.k, (dense, maxsim_list))
