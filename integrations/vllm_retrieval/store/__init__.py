"""Storage: the multi-vector store over Qdrant (embedded Edge, or a server / cluster).

* :mod:`.store` — ``MultiVectorStore``, the facade (validate, encode, write, search), with
  :mod:`.lifecycle` (settings, close, context manager) and :mod:`.maintenance` (index builds,
  and following those of other processes on a shared collection);
* :mod:`.plan` — ``QueryPlan``: the one place search modes, fusions and their checks live;
* :mod:`.manifest` — the store's recorded settings (JSON beside the shard, or collection
  metadata) and the schema;
* :mod:`.records` — validation of ids, texts, metadata and vectors into points;
* :mod:`.backends` — the ``StoreBackend`` protocol, Qdrant Edge and qdrant-client;
* :mod:`.filters` — the metadata filter language, parsed once and rendered per backend;
* :mod:`.token_index` — k-means centroids whose postings prefetch MaxSim candidates;
* :mod:`.lexical` — BM25 settings and vectors (Qdrant's sparse vectors with IDF);
* :mod:`.locking` — one process at a time per embedded store (``StoreLockedError``);
* :mod:`.files` — crash-safe files beside the shard (unique temporaries, fsync, rename).
"""

from .ids import ids_for_write, lookup, resolve_ids, stored_tokens
from .lexical import LANGUAGES, Bm25Settings
from .manifest import COMPRESSIONS, MANIFEST_NAME, Compression, StoreManifest
from .plan import DEFAULT_MODE, FUSIONS, MODES, RRF_K, SIGNALS, Fusion, Mode, QueryPlan, Signal
from .records import DocId, DuplicateIdError, SearchHit
from .store import MultiVectorStore

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_MODE",
    "FUSIONS",
    "LANGUAGES",
    "MANIFEST_NAME",
    "MODES",
    "RRF_K",
    "SIGNALS",
    "Bm25Settings",
    "Compression",
    "DocId",
    "DuplicateIdError",
    "Fusion",
    "Mode",
    "MultiVectorStore",
    "QueryPlan",
    "SearchHit",
    "Signal",
    "StoreManifest",
    "ids_for_write",
    "lookup",
    "resolve_ids",
    "stored_tokens",
]
