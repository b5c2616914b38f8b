"""The lexical leg: BM25 as a Qdrant sparse vector with the engine's IDF modifier.

Qdrant Edge's ``Bm25`` (the same model as Qdrant's server-side BM25) tokenises a text
(word tokenizer, lowercase, the language's stopwords and Snowball stemmer) and gives a sparse
vector: for a document, each term's saturated frequency ``tf (k+1) / (tf + k (1 - b + b
dl/avg_len))``; for a query, weight 1 per distinct term. The store's ``bm25`` sparse vector has
Qdrant's IDF modifier, so the engine multiplies each term by ``ln(1 + (N - n + 0.5) / (n +
0.5))`` over the documents it holds: IDF stays right as documents are added and deleted, and
the query's score is exactly BM25. The vectors are computed with the same ``Bm25`` on both
backends (qdrant-client's own BM25 would download a model from a hub), so they rank alike.

``avg_len`` (the average document length in terms) is part of each document's vector: it is
measured over the stored documents by :func:`build_bm25` (``MultiVectorStore.build_bm25()``,
run by ``optimize()`` whenever the collection has doubled since the last measurement).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import require

__all__ = [
    "BM25",
    "LANGUAGES",
    "Bm25Encoder",
    "Bm25Settings",
    "bm25_settings",
]

BM25: Final = "bm25"  # the named sparse vector (IDF modifier) of the schema
Sparse = tuple[list[int], list[float]]

#: Languages of Qdrant's BM25 (stopword lists; a Snowball stemmer where one exists).
LANGUAGES: tuple[str, ...] = (
    "arabic", "azerbaijani", "basque", "bengali", "catalan", "chinese", "danish", "dutch",
    "english", "finnish", "french", "german", "greek", "hebrew", "hinglish", "hungarian",
    "indonesian", "italian", "japanese", "kazakh", "nepali", "norwegian", "portuguese",
    "romanian", "russian", "slovene", "spanish", "swedish", "tajik", "turkish",
)  # fmt: skip


class Bm25Settings(BaseModel):
    """The store's BM25 settings, recorded in the manifest (``describe()`` shows them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    language: str = Field(default="english", description="Stopwords and stemmer language.")
    stemmer: bool = Field(default=True, description="Snowball stemming in the language.")
    stopwords: bool = Field(default=True, description="Drop the language's stopwords.")
    k: float = Field(default=1.2, gt=0, allow_inf_nan=False, description="TF saturation k1.")
    b: float = Field(default=0.75, ge=0, le=1, description="Length normalisation b.")
    avg_len: float = Field(
        default=256.0,
        gt=0,
        allow_inf_nan=False,
        description="Average document length in terms (measured by build_bm25).",
    )
    measured_docs: int = Field(
        default=0, ge=0, description="Documents avg_len was measured on (0: not yet)."
    )

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        if value not in LANGUAGES:
            raise ValueError(f"unknown BM25 language {value!r} (choose {', '.join(LANGUAGES)})")
        return value


def bm25_settings(value: Any = None, **overrides: Any) -> Bm25Settings:
    """Settings from a ``Bm25Settings``, a mapping or ``None`` (the defaults), with
    ``overrides`` (``None`` values ignored); ``ValueError`` naming any bad setting."""
    if isinstance(value, Bm25Settings):
        base = value.model_dump()
    elif value is None or value is True:
        base = {}
    elif isinstance(value, dict):
        base = dict(value)
    else:
        raise TypeError(f"bm25 settings must be a dict or Bm25Settings, got {type(value).__name__}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Bm25Settings.model_validate(base)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"bad BM25 settings: {problems}") from None


class Bm25Encoder:
    """Qdrant Edge's ``Bm25`` configured from :class:`Bm25Settings`."""

    def __init__(self, settings: Bm25Settings) -> None:
        qe = require("qdrant_edge", "qdrant")
        self.settings = settings
        kw: dict[str, Any] = {}
        if not settings.stemmer:
            kw["stemmer"] = qe.DisabledStemmer()
        if not settings.stopwords:
            kw["stopwords"] = qe.StopwordsSet()
        self._model = qe.Bm25(
            qe.Bm25Config(
                k=settings.k,
                b=settings.b,
                avg_len=settings.avg_len,
                language=settings.language,
                **kw,
            )
        )
        # b = 0 and k = 1: a term's weight is 2 tf / (tf + 1), from which tf is recovered.
        self._counter = qe.Bm25(qe.Bm25Config(k=1.0, b=0.0, language=settings.language, **kw))

    def documents(self, texts: Sequence[str]) -> list[Sparse | None]:
        """Document vectors (saturated term frequencies; the engine applies IDF); ``None``
        for a text without terms (no vector is stored: Qdrant Edge would not count an empty
        one in IDF's document count while a server would, so neither holds one)."""
        out: list[Sparse | None] = []
        for text in texts:
            v = self._model.embed_document(text)
            out.append((list(v.indices), list(v.values)) if len(v.indices) else None)
        return out

    def query(self, text: str) -> Sparse:
        """The query vector: weight 1 per distinct term."""
        v = self._model.embed_query(text)
        return list(v.indices), list(v.values)

    def terms(self, text: str) -> dict[int, int]:
        """The text's term counts (term hash -> tf), exactly as the model tokenises it."""
        v = self._counter.embed_document(text)
        return {int(i): round(w / (2.0 - w)) for i, w in zip(v.indices, v.values, strict=True)}

    def length(self, text: str) -> int:
        """The number of terms the model counts in ``text`` (its ``dl``)."""
        return sum(self.terms(text).values())
