"""MaxSim computed by a remote ``vllm serve`` (its ``/score`` endpoint), for comparison."""

from __future__ import annotations

from collections.abc import Sequence

from ..encoding import Encoder, RemoteEngine, check_text, check_texts

__all__ = ["remote_score"]


def remote_score(encoder: Encoder, query: str, documents: Sequence[str]) -> list[float]:
    """MaxSim scores of ``documents`` for ``query`` computed by the server's ``/score``.

    The server tokenises the texts itself (with the model's special tokens and no ColBERT
    markers) and scores with normalised token vectors (``use_activation=true``): for plain
    models this equals the local MaxSim of the encoder's token vectors; for ColBERT models,
    whose markers and ``[MASK]`` expansion only the client adds, prefer local MaxSim.

    All scores or an error, never a partial list: failures are typed
    :class:`~vllm_retrieval.errors.RemoteEngineError` subclasses (``RemoteUnreachableError``,
    ``RemoteTimeoutError``, ``RemoteAuthError``, ``RemoteModelMismatchError``, and
    ``RemoteMalformedResponseError`` for an answer with missing, duplicate or out-of-range
    items), never a bare ``KeyError``.
    """
    query = check_text(query, "query")
    docs = check_texts(documents, "documents")
    engine = encoder.engine
    if not isinstance(engine, RemoteEngine):
        raise ValueError("remote_score needs an Encoder(base_url=...)")
    prof = encoder.model_profile
    return engine.score(
        prof.query_prefix + query,
        [prof.document_prefix + d for d in docs],
        truncate=prof.max_length,
    )
