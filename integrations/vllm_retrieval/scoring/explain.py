"""Why a document won: the token-level alignment behind a MaxSim score (heatmap data)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..encoding import Encoder, check_text
from .maxsim import maxsim

__all__ = ["Explanation", "TokenMatch", "explain"]

FloatArray = npt.NDArray[np.float32]


class TokenMatch(NamedTuple):
    """The best document token for one query token (one row of an explanation)."""

    query_token: str
    query_position: int
    document_token: str
    document_position: int
    similarity: float


class Explanation(NamedTuple):
    """Why a document scored what it did: the data for a MaxSim heatmap.

    ``similarities`` is ``[Q, T]`` float32 (query tokens × document tokens, cosine);
    ``matches[i]`` is the row-wise argmax of row ``i``; ``score`` is the reranker's score
    (``Σ matches.similarity``, divided by ``Q`` when the reranker normalises).
    """

    score: float
    matches: list[TokenMatch]
    query_tokens: list[str]
    document_tokens: list[str]
    similarities: FloatArray


def explain(encoder: Encoder, query: str, document: str, *, normalize: bool = False) -> Explanation:
    """Per query token: its text, the best document token, its position, the similarity.

    Positions index the encoder's token rows (special tokens included where the model
    keeps them). ``similarities`` is the full ``[Q, T]`` matrix for a heatmap.
    """
    query = check_text(query, "query", allow_blank=False)
    document = check_text(document, "document")
    q = encoder.encode([query], is_query=True)[0]
    d = encoder.encode([document])[0]
    q_tokens = encoder.token_texts(q.token_ids)
    d_tokens = encoder.token_texts(d.token_ids)
    sims = (
        np.ascontiguousarray(q.tokens, dtype=np.float32)
        @ np.ascontiguousarray(d.tokens, dtype=np.float32).T
    )
    best = sims.argmax(axis=1)
    matches = [
        TokenMatch(
            query_token=q_tokens[i],
            query_position=i,
            document_token=d_tokens[int(j)],
            document_position=int(j),
            similarity=float(sims[i, j]),
        )
        for i, j in enumerate(best)
    ]
    score = float(maxsim(q.tokens, [d.tokens], normalize=normalize)[0])
    return Explanation(score, matches, q_tokens, d_tokens, sims.astype(np.float32))
