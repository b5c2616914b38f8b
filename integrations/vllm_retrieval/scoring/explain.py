"""Why a document won: the token-level alignment behind a MaxSim score (heatmap data)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ..encoding import Encoder, LoadedItem, check_items, check_text
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
    #: For an image document: the best patch's ``(row, column)`` in the image's patch grid
    #: (None for text tokens and the image's start/end markers).
    patch: tuple[int, int] | None = None


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
    #: For an image document: ``(rows, columns)`` of its patch grid (see ``TokenMatch.patch``).
    grid: tuple[int, int] | None = None


def _patches(encoder: Encoder, ids: list[int], image: Any) -> tuple[list[Any], tuple[int, int]]:
    """Each document row's ``(row, column)`` in the image's patch grid (None off the grid)."""
    assert encoder.model_profile.vision_ids is not None
    pad = encoder.model_profile.vision_ids[1]
    rows, cols = encoder.image_grid(image)
    where: list[Any] = []
    k = 0
    for token in ids:
        if token == pad:
            where.append((k // cols, k % cols))
            k += 1
        else:
            where.append(None)
    if k != rows * cols:
        raise ValueError(f"the image has {k} patch rows, not the {rows}x{cols} grid expected")
    return where, (rows, cols)


def explain(encoder: Encoder, query: str, document: Any, *, normalize: bool = False) -> Explanation:
    """Per query token: its text, the best document token, its position, the similarity.

    Positions index the encoder's token rows (special tokens included where the model
    keeps them). ``similarities`` is the full ``[Q, T]`` matrix for a heatmap. A
    vision-language encoder also explains an image (or a text+image item): each match then
    names its patch's ``(row, column)`` in the image's grid, to draw over the image.
    """
    query = check_text(query, "query", allow_blank=False)
    q = encoder.encode([query], is_query=True)[0]
    patches: list[Any] = []
    grid = None
    if isinstance(document, str) or not encoder.model_profile.takes_images:
        d = encoder.encode([check_text(document, "document")])[0]
    else:
        item = check_items([document], "document")[0]
        d = encoder.encode_items([item])[0]
        if isinstance(item, LoadedItem):
            patches, grid = _patches(encoder, d.token_ids, item.image)
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
            patch=patches[int(j)] if patches else None,
        )
        for i, j in enumerate(best)
    ]
    score = float(maxsim(q.tokens, [d.tokens], normalize=normalize)[0])
    return Explanation(score, matches, q_tokens, d_tokens, sims.astype(np.float32), grid)
