"""Encode once: ``VLLMEmbedding`` hands the token vectors of what it encodes to the store.

LlamaIndex embeds nodes (``VectorStoreIndex``, ``IngestionPipeline``) *before* it gives them
to the vector store, and an embedding returns only the dense vector. The engine computes the
token vectors in that same forward pass, so ``VLLMEmbedding`` keeps them here, keyed by the
exact text it encoded and by the encoder's vector settings, and ``VLLMMultiVectorStore.add``
takes them instead of encoding the text a second time.

Nothing is kept unless a vector store that can use it is alive in the process (it
subscribes; its garbage collection or ``close()`` unsubscribes), entries leave when a store
takes them, and the total is bounded by the largest ``token_cache_bytes`` of the live
stores, oldest out first. A text that is not found (evicted, or never embedded here) is
simply encoded by the store: the cost is a forward pass, never a wrong vector.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ..encoding import EncodedText, Encoder

__all__ = ["HANDOFF", "Handoff", "Subscription", "vector_key"]

logger = logging.getLogger(__name__)

# Settings that change how requests travel, not the vectors that come back.
_OPERATIONAL = frozenset({"model", "batch_size", "show_progress", "timeout", "api_key"})

VectorKey = tuple[str, str]


def vector_key(encoder: Encoder) -> VectorKey:
    """What decides an encoder's vectors: the model and every setting but the operational."""
    settings = {k: v for k, v in encoder.settings().items() if k not in _OPERATIONAL}
    return encoder.model_path, repr(sorted(settings.items()))


def _nbytes(item: EncodedText) -> int:
    return int(item.tokens.nbytes) + int(item.dense.nbytes)


class Subscription:
    """A live store's interest in the encodings of one vector key (weakly held)."""

    __slots__ = ("__weakref__", "key", "max_bytes")

    def __init__(self, key: VectorKey, max_bytes: int) -> None:
        self.key = key
        self.max_bytes = max_bytes


class Handoff:
    """Process-wide, bounded hand-off of encodings from the embedding to the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._entries: OrderedDict[tuple[VectorKey, str], EncodedText] = OrderedDict()
        self._bytes = 0
        self.evicted = 0  # entries dropped for room since the process started

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, encoder: Encoder, max_bytes: int) -> Subscription:
        sub = Subscription(vector_key(encoder), max_bytes)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
            self._prune()

    def _limit(self) -> int:
        return max((s.max_bytes for s in self._subs), default=0)

    def _keys(self) -> set[VectorKey]:
        return {s.key for s in self._subs}

    def wants(self, encoder: Encoder) -> bool:
        """Whether a live store would take encodings of this encoder."""
        with self._lock:
            if not self._subs:
                return False
            keys = self._keys()
        return vector_key(encoder) in keys

    def _prune(self) -> None:
        """Drop what no live store wants and what exceeds the limit (lock held)."""
        keys, limit = self._keys(), self._limit()
        for entry_key in [k for k in self._entries if k[0] not in keys]:
            self._bytes -= _nbytes(self._entries.pop(entry_key))
        while self._entries and self._bytes > limit:
            _, item = self._entries.popitem(last=False)
            self._bytes -= _nbytes(item)
            self.evicted += 1

    # -- entries ---------------------------------------------------------------------------

    def offer(self, encoder: Encoder, texts: Sequence[str], encoded: Sequence[EncodedText]) -> None:
        """Keep ``encoded[i]`` (of ``texts[i]``) if a live store wants this encoder's vectors."""
        key = vector_key(encoder)
        with self._lock:
            if key not in self._keys():
                self._prune()  # a store may have gone: drop what it would have taken
                return
            for text, item in zip(texts, encoded, strict=True):
                old = self._entries.pop((key, text), None)
                if old is not None:
                    self._bytes -= _nbytes(old)
                self._entries[(key, text)] = item
                self._bytes += _nbytes(item)
            before = self.evicted
            self._prune()
            dropped = self.evicted - before
        if dropped:
            logger.warning(
                "%d encodings left the hand-off for room (token_cache_bytes); their nodes "
                "will be encoded again when stored: raise token_cache_bytes or insert fewer "
                "nodes per batch",
                dropped,
            )

    def take(self, encoder: Encoder, texts: Sequence[str]) -> dict[str, EncodedText]:
        """Remove and return the kept encodings of ``texts`` (by text; missing ones absent)."""
        key = vector_key(encoder)
        out: dict[str, EncodedText] = {}
        with self._lock:
            for text in dict.fromkeys(texts):
                item = self._entries.pop((key, text), None)
                if item is not None:
                    self._bytes -= _nbytes(item)
                    out[text] = item
        return out

    def info(self) -> dict[str, Any]:
        """``{"entries", "bytes", "limit", "evicted", "subscribers"}``."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "limit": self._limit(),
                "evicted": self.evicted,
                "subscribers": len(self._subs),
            }


#: The process's hand-off (one per process, like the engine).
HANDOFF = Handoff()
