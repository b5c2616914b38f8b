"""``QueryPlan``: the one place where search modes and fusions are defined.

A plan is built once per search from the caller's ``mode``/``k``/``candidates``/``fusion``/
``fuse``/``weights`` (validated here) and the store's state (BM25 or not). Its
:meth:`QueryPlan.tree` is the Qdrant query as data — which named vector each stage searches,
how deep, with which search parameters, over which prefetched candidates — and each backend
renders that tree with its own API (:mod:`.backends.edge`, :mod:`.backends.client`): the modes
are written once.

Modes (filters apply at every stage):

``dense``   cosine on the dense vector (HNSW).
``bm25``    BM25 on the lexical sparse vector (IDF kept by Qdrant; :mod:`.lexical`).
``maxsim``  exhaustive MaxSim (sum over query tokens of the best document-token cosine).
``hybrid``  MaxSim rerank of a candidate pool: the union of ``candidates`` from the dense
            vector, the token index's postings (once built) and BM25 (once built).
``fusion``  (default) fusion of ranked lists, ``fuse`` of ``dense``, ``bm25``, ``maxsim``
            (``maxsim`` is ``hybrid``'s reranked pool, or exhaustive without any index):
            ``fusion="dbsf"`` (default) distribution-based score fusion (each list's scores
            normalised by its mean +- 3 sd, then summed); ``"weighted"`` sums each list's
            min-max normalised scores times ``weights``; ``"rrf"`` (weighted)
            reciprocal-rank fusion, k=60. The default, DBSF of MaxSim, BM25 and dense, was
            chosen on SciFact's training judgements (``benchmarks/lexical.py``); without
            BM25 (a store built before it, or ``search_encoded`` without ``text=``) it is the
            MaxSim list alone: ``hybrid``.

Qdrant fuses natively by RRF (with weights) and DBSF. Its formula queries can weight prefetch
scores (``$score[i]``) but cannot normalise them per query (no list statistics), so for
``"weighted"`` the backends run the lists in Qdrant (one batch) and :func:`weighted_fusion`
combines them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from ..errors import StoreError, StoreMismatchError
from .manifest import BM25, CENTROIDS, DENSE, TOKENS
from .records import check_positive

__all__ = [
    "DEFAULT_FUSE",
    "DEFAULT_FUSION",
    "DEFAULT_MODE",
    "FUSIONS",
    "MODES",
    "SIGNALS",
    "Fuse",
    "Fusion",
    "Mode",
    "Params",
    "QueryPlan",
    "Search",
    "Signal",
    "weighted_fusion",
]

Mode = Literal["dense", "bm25", "maxsim", "hybrid", "fusion"]
MODES: tuple[str, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "fusion"
FloatArray = npt.NDArray[np.float32]
Fusion = Literal["weighted", "rrf", "dbsf"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
#: The ranked lists a fusion can combine.
Signal = Literal["dense", "bm25", "maxsim"]
SIGNALS: tuple[str, ...] = get_args(Signal)
#: Without ``weights``; with them, "weighted" (SciFact train: benchmarks/lexical.py).
DEFAULT_FUSION: Fusion = "dbsf"
DEFAULT_FUSE: tuple[Signal, ...] = ("maxsim", "bm25", "dense")
RRF_K = 60
_VECTOR = {"dense": DENSE, "bm25": BM25, "maxsim": TOKENS}

#: Search parameters of a stage, rendered per backend (and per compression):
#: ``dense`` HNSW with ``ef = max(candidates, 64)``; ``exact`` exhaustive on the original
#: vectors; ``rerank`` scoring a prefetched pool on the originals (MaxSim on quantised codes
#: is no faster for a few hundred candidates); ``quantized`` a deep MaxSim list on the codes,
#: rescored on the originals; ``None`` the engine's defaults.
Params = Literal["dense", "exact", "rerank", "quantized"] | None


@dataclass(frozen=True)
class Search:
    """Nearest neighbours on one named vector, optionally over prefetched candidates."""

    vector: str  # DENSE, TOKENS, CENTROIDS or BM25
    limit: int
    params: Params = None
    prefetch: tuple[Search, ...] = ()


@dataclass(frozen=True)
class Fuse:
    """Fusion of the prefetched lists (``weights`` per list, ``None``: equal)."""

    fusion: Fusion
    limit: int
    prefetch: tuple[Search, ...]
    weights: tuple[float, ...] | None = None


Stage = Search | Fuse


def check_mode(mode: Any) -> Mode:
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r} (choose {', '.join(MODES)})")
    return mode  # type: ignore[no-any-return]


def check_fusion(fusion: Any) -> Fusion:
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r} (choose {' or '.join(map(repr, FUSIONS))})")
    return fusion  # type: ignore[no-any-return]


def check_fuse(fuse: Any) -> tuple[Signal, ...]:
    """The lists to fuse: a non-empty sequence of distinct names from ``SIGNALS``."""
    if isinstance(fuse, str) or not isinstance(fuse, Sequence):
        raise TypeError(f"fuse must be a list of {', '.join(SIGNALS)}, got {fuse!r}")
    out = tuple(fuse)
    bad = [s for s in out if s not in SIGNALS]
    if bad or not out or len(set(out)) != len(out):
        raise ValueError(
            f"fuse must name distinct lists among {', '.join(SIGNALS)}, got {list(out)!r}"
        )
    return out


def check_weights(weights: Any, n: int) -> tuple[float, ...]:
    """``n`` finite weights ``>= 0`` with a positive sum."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a list of {n} numbers, got {weights!r}")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float, np.number)):
            raise TypeError(f"weights must be numbers, got {w!r}")
        out.append(float(w))
    if len(out) != n:
        raise ValueError(f"got {len(out)} weights for {n} fused lists")
    if not all(math.isfinite(w) and w >= 0 for w in out) or sum(out) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {out}")
    return tuple(out)


@dataclass(frozen=True)
class QueryPlan:
    """A validated search request; :meth:`tree` is the query every backend renders."""

    mode: Mode
    k: int
    candidates: int
    fusion: Fusion = DEFAULT_FUSION
    nprobe: int | None = None
    fuse: tuple[Signal, ...] = ("maxsim",)
    weights: tuple[float, ...] | None = None
    lexical: bool = False  # the BM25 query vector is available (store has BM25, text given)

    @classmethod
    def create(
        cls,
        mode: Any = None,
        k: Any = 10,
        candidates: Any = 200,
        fusion: Any = None,
        nprobe: Any = None,
        fuse: Any = None,
        weights: Any = None,
        *,
        lexical: str | None = "this search has no BM25",
    ) -> QueryPlan:
        """Validate the caller's settings (``TypeError``/``ValueError`` naming the bad one).

        ``lexical`` is ``None`` when BM25 can be used, otherwise why not (the message of the
        ``StoreError`` raised when the mode needs BM25). ``None`` settings take the defaults:
        ``mode`` :data:`DEFAULT_MODE`; for ``fusion`` the lists :data:`DEFAULT_FUSE` (the
        ``maxsim`` list alone without BM25), and :data:`DEFAULT_FUSION` without ``weights``,
        ``"weighted"`` with them (equal weights for ``"weighted"`` without them).
        """
        k = check_positive(k)
        mode = check_mode(DEFAULT_MODE if mode is None else mode)
        if fusion is None:
            fusion = DEFAULT_FUSION if weights is None else "weighted"
        fusion = check_fusion(fusion)
        candidates = check_positive(candidates, "candidates")
        nprobe = None if nprobe is None else check_positive(nprobe, "nprobe")
        if fuse is None:
            fuse = DEFAULT_FUSE if lexical is None else ("maxsim",)
        fuse = check_fuse(fuse)
        if weights is not None:
            weights = check_weights(weights, len(fuse))
            if fusion == "dbsf":
                raise ValueError("fusion='dbsf' takes no weights (use 'weighted' or 'rrf')")
        needs_bm25 = mode == "bm25" or (mode == "fusion" and "bm25" in fuse)
        if needs_bm25 and lexical is not None:
            raise StoreError(f"mode {mode!r} needs BM25: {lexical}")
        return cls(mode, k, max(candidates, k), fusion, nprobe, fuse, weights, lexical is None)

    @property
    def _signals(self) -> tuple[str, ...]:
        if self.mode == "fusion":
            return self.fuse
        return (self.mode,) if self.mode != "hybrid" else ("maxsim",)

    @property
    def needs_dense(self) -> bool:
        return "dense" in self._signals or (
            self.mode in ("hybrid", "fusion") and "maxsim" in self._signals
        )

    @property
    def needs_tokens(self) -> bool:
        return "maxsim" in self._signals

    @property
    def needs_bm25(self) -> bool:
        """Whether the BM25 query vector is searched (a list, or part of hybrid's pool)."""
        return self.lexical and (
            "bm25" in self._signals or (self.mode != "maxsim" and "maxsim" in self._signals)
        )

    @property
    def uses_token_index(self) -> bool:
        """Whether the token index's postings join the candidates (when one is built)."""
        return self.mode in ("hybrid", "fusion") and "maxsim" in self._signals

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
        if self.mode == "bm25":
            return Search(BM25, self.k)
        if self.mode == "maxsim":
            return Search(TOKENS, self.k, "exact")
        pool: tuple[Search, ...] = (Search(DENSE, n, "dense"),)
        if token_index:
            pool += (Search(CENTROIDS, n),)
        if self.lexical:
            pool += (Search(BM25, n),)
        if self.mode == "hybrid" or self.fuse == ("maxsim",):
            return Search(TOKENS, self.k, "rerank", pool)
        lists = []
        for signal in self.fuse:
            if signal != "maxsim":
                lists.append(Search(_VECTOR[signal], n, "dense" if signal == "dense" else None))
            elif len(pool) > 1:  # candidates beyond the dense vector's: rerank the pool
                lists.append(Search(TOKENS, n, "rerank", pool))
            else:
                lists.append(Search(TOKENS, n, "quantized"))
        if len(lists) == 1:  # one list: itself, scores unchanged
            return replace(lists[0], limit=self.k)
        return Fuse(self.fusion, self.k, tuple(lists), self.weights)


def weighted_fusion(
    lists: Sequence[Sequence[tuple[Any, float]]], weights: Sequence[float] | None, limit: int
) -> list[tuple[Any, float]]:
    """``(id, score)`` best first: the sum over lists of ``weight * (s - min) / (max - min)``
    (each list's own minimum and maximum; a list whose scores are all equal gives 1; a
    document missing from a list gets 0 from it). Ties keep first-seen order."""
    weights = weights or [1.0] * len(lists)
    fused: dict[Any, float] = {}
    for rows, w in zip(lists, weights, strict=True):
        if not rows:
            continue
        scores = [s for _, s in rows]
        lo, hi = min(scores), max(scores)
        span = hi - lo
        for pid, s in rows:
            norm = (s - lo) / span if span > 0 else 1.0
            fused[pid] = fused.get(pid, 0.0) + w * norm
    return sorted(fused.items(), key=lambda x: -x[1])[:limit]
