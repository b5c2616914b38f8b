"""Documents already in the store, named by string ids: their core ids and token vectors.

Frameworks name documents by strings (LangChain ids, LlamaIndex node ids); the store takes
``str`` or ``int`` ids and keeps the two apart (``12`` and ``"12"`` are different documents).
These functions find the document a string id names — the ``str`` id, else the ``int`` it
spells canonically (``"12"`` → ``12``, never ``"012"``) — so that a document written with an
``int`` id is found, replaced and deleted under its string form. An id that names both raises
``ValueError``. :func:`stored_tokens` lets a reranker score candidates that came from the store
on their stored token vectors instead of encoding them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .records import DocId, SearchHit

if TYPE_CHECKING:
    from .store import MultiVectorStore

__all__ = ["ids_for_write", "lookup", "resolve_ids", "stored_tokens"]

FloatArray = npt.NDArray[np.float32]
_MAX_INT_ID = 2**63 - 1


def _key(doc_id: Any) -> str:
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise TypeError(f"ids must be str (or int), got {type(doc_id).__name__}: {doc_id!r}")
    return str(doc_id)


def _int_form(key: str) -> int | None:
    """The int id ``key`` spells canonically (``"12"`` → 12; ``"012"``, ``"-1"`` → None)."""
    if not (key.isascii() and key.isdigit()):
        return None
    value = int(key)
    return value if str(value) == key and value <= _MAX_INT_ID else None


def lookup(
    store: MultiVectorStore, ids: Sequence[Any], *, ambiguous: str = "raise"
) -> list[SearchHit | None]:
    """The stored document each id names (``None``: not stored), in one read.

    ``ambiguous="raise"`` raises ``ValueError`` for an id that names both a ``str`` and an
    ``int`` document; ``"skip"`` gives ``None`` for it.
    """
    keys = [_key(i) for i in ids]
    probes: dict[tuple[type, DocId], None] = {}
    for key in keys:
        probes[(str, key)] = None
        number = _int_form(key)
        if number is not None:
            probes[(int, number)] = None
    found: dict[tuple[type, DocId], SearchHit] = {}
    if probes:
        for hit in store.get([value for _, value in probes]):
            found[(type(hit.id), hit.id)] = hit
    out: list[SearchHit | None] = []
    for key in keys:
        as_str = found.get((str, key))
        number = _int_form(key)
        as_int = found.get((int, number)) if number is not None else None
        if as_str is not None and as_int is not None:
            if ambiguous == "raise":
                raise ValueError(
                    f"id {key!r} names two documents, the str id {key!r} and the int id "
                    f"{number}; address one of them through the core MultiVectorStore"
                )
            out.append(None)
            continue
        out.append(as_str if as_str is not None else as_int)
    return out


def resolve_ids(store: MultiVectorStore, ids: Sequence[Any]) -> list[DocId | None]:
    """The core id of each string id (``None``: not stored); see :func:`lookup`."""
    return [None if hit is None else hit.id for hit in lookup(store, ids)]


def ids_for_write(store: MultiVectorStore, keys: Sequence[str]) -> list[DocId]:
    """Ids to write ``keys`` under: an existing ``int`` document that a key names keeps its
    id (so it is replaced, not duplicated); every other key is written as the ``str``."""
    numeric = [k for k in keys if _int_form(k) is not None]
    if not numeric:
        return list(keys)
    resolved = dict(zip(numeric, resolve_ids(store, numeric), strict=True))
    out: list[DocId] = []
    for key in keys:
        existing = resolved.get(key)
        out.append(key if existing is None else existing)
    return out


def stored_tokens(
    store: MultiVectorStore, ids: Sequence[Any | None], texts: Sequence[str]
) -> list[FloatArray | None]:
    """The stored token vectors of each candidate whose id names a document of ``store``
    holding exactly ``texts[i]`` (the vectors encode that text); ``None`` for the others
    (all of them in a store whose vectors are dimension-reduced)."""
    out: list[FloatArray | None] = [None] * len(texts)
    wanted = [(pos, doc_id) for pos, doc_id in enumerate(ids) if doc_id not in (None, "")]
    if not wanted or store.manifest.stored_dim != store.dim:  # reduced: not the encoder's
        return out
        return out
    hits = lookup(store, [doc_id for _, doc_id in wanted], ambiguous="skip")
    reuse = [
        (pos, hit.id)
        for (pos, _), hit in zip(wanted, hits, strict=True)
        if hit is not None and hit.text == texts[pos]
    ]
    if not reuse:
        return out
    try:
        tokens = store.get_tokens([doc_id for _, doc_id in reuse])
    except KeyError:  # deleted since the lookup: encode them all instead
        return out
    for (pos, _), tok in zip(reuse, tokens, strict=True):
        out[pos] = tok
    return out
