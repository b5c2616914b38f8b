"""The framework-free encoder: dense and token vectors from one vLLM forward pass."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, PrivateAttr

from ..errors import require
from .backends.base import EngineBackend
from .backends.local import EngineSettings
from .backends.registry import get_engine, get_remote_engine, release_engine
from .backends.remote import PROBE_TEXT, RemoteEngine, RemoteSettings
from .inputs import check_text, check_texts
from .profiles import ModelProfile, load_profile, resolve_model_path
from .settings import EncoderSettings

__all__ = ["EncodedText", "Encoder"]

FloatArray = npt.NDArray[np.float32]


class EncodedText:
    """One encoded text: its dense vector, its token vectors and the ids they came from."""

    __slots__ = ("dense", "token_ids", "tokens")

    def __init__(self, dense: FloatArray, tokens: FloatArray, token_ids: list[int]) -> None:
        self.dense = dense
        self.tokens = tokens
        self.token_ids = token_ids


class Encoder(EncoderSettings):
    """Dense and ColBERT-style token embeddings from one shared vLLM engine.

    Every ``Encoder`` with the same model and engine settings in a process shares one engine
    (one ``token_embed`` vLLM engine; dense vectors are pooled from the same forward pass).
    Texts longer than the model's limit (``max_length``) are truncated, never rejected.
    Methods are safe to call from many threads and asyncio tasks at once.

    The fields are :class:`~vllm_retrieval.encoding.settings.EncoderSettings`; the engine is
    an :class:`~vllm_retrieval.encoding.backends.base.EngineBackend` from the process-wide
    registry (:mod:`~vllm_retrieval.encoding.backends.registry`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    _model_path: str = PrivateAttr(default="")
    _profile: ModelProfile | None = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _engine: EngineBackend | None = PrivateAttr(default=None)
    _dim: int | None = PrivateAttr(default=None)

    def model_post_init(self, __context: Any) -> None:
        self._model_path = resolve_model_path(self.model)
        transformers = require("transformers", "cpu")
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(self._model_path)
        self._profile = load_profile(
            self._model_path,
            pooling=self.pooling,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            max_length=self.max_length,
            query_length=self.query_length,
            tokenizer=self._tokenizer,
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def profile(self) -> ModelProfile:
        assert self._profile is not None
        return self._profile

    @property
    def model_path(self) -> str:
        return self._model_path

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def engine_settings(self) -> EngineSettings:
        kwargs = {**dict(self.profile.engine_overrides), **self.engine_kwargs}
        return EngineSettings.create(self._model_path, dtype=self.dtype, engine_kwargs=kwargs)

    @property
    def engine(self) -> EngineBackend:
        """The shared engine (started, and waited for, on first use)."""
        if self._engine is None:
            engine: EngineBackend
            if self.base_url is not None:
                engine = self.remote_engine()
            else:
                engine = get_engine(self.engine_settings)
            engine.wait_ready()
            self._engine = engine
        return self._engine

    def remote_engine(self, **options: Any) -> RemoteEngine:
        """The process-wide remote engine of this ``Encoder(base_url=...)``.

        ``options`` are further :class:`~vllm_retrieval.encoding.backends.remote.RemoteSettings`
        fields (``transfer``, ``max_concurrency``, ``max_retries``, ...).
        """
        if self.base_url is None:
            raise ValueError("remote_engine() needs an Encoder(base_url=...)")
        settings = RemoteSettings(
            base_url=self.base_url.rstrip("/"),
            model_path=self._model_path,
            model_name=self.model,
            api_key=self.api_key,
            timeout=self.timeout,
            drops_first_row=False,  # rows are selected here (profile.drop_first_token_row)
            **options,
        )
        tok = self._tokenizer
        return get_remote_engine(
            settings,
            probe_ids=self.token_ids([PROBE_TEXT], is_query=False)[0],
            local_tokenize=lambda text: [
                int(i) for i in tok(text, add_special_tokens=False)["input_ids"]
            ],
        )

    def close(self) -> None:
        """Stop this encoder's in-process engine (shared: every Encoder using it is affected;
        they restart it on their next call)."""
        if self.base_url is None:
            release_engine(self.engine_settings)
        self._engine = None

    def start(self) -> Encoder:
        """Start (or join) the shared engine now rather than on the first call."""
        _ = self.engine
        return self

    # -- tokenisation ----------------------------------------------------------------------

    def token_ids(self, texts: list[str], *, is_query: bool) -> list[list[int]]:
        """The exact ids the engine sees for each text (prefix, markers, truncation applied)."""
        prof = self.profile
        prefix = prof.query_prefix if is_query else prof.document_prefix
        limit = (prof.query_length if (is_query and prof.is_colbert) else None) or prof.max_length
        tok = self._tokenizer
        base = tok(
            [prefix + t for t in texts],
            add_special_tokens=False,
            truncation=True,
            max_length=limit,
        )["input_ids"]
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        return [
            prof.build_ids(list(b), is_query=is_query, cls_id=cls_id, sep_id=sep_id) for b in base
        ]

    def _finish(self, ids: list[int], rows: FloatArray, *, is_query: bool) -> EncodedText:
        prof = self.profile
        if rows.shape[0] != len(ids):
            raise RuntimeError(f"engine returned {rows.shape[0]} rows for {len(ids)} tokens")
        dense = prof.pool(rows)
        if prof.drop_first_token_row and len(ids) > 1:
            rows, ids = rows[1:], ids[1:]
        keep = prof.keep_mask(ids, is_query=is_query)
        if keep is not None and keep.any():
            rows, ids = rows[keep], [i for i, k in zip(ids, keep, strict=True) if k]
        return EncodedText(dense, prof.token_rows(rows), ids)

    # -- the one encode path ----------------------------------------------------------------

    def _submit(self, ids: list[list[int]]) -> list[Future[list[FloatArray]]]:
        engine = self.engine
        return [
            engine.submit(ids[i : i + self.batch_size]) for i in range(0, len(ids), self.batch_size)
        ]

    def encode(self, texts: Sequence[str], *, is_query: bool = False) -> list[EncodedText]:
        """Encode texts once; each result has the dense vector and the token vectors."""
        items = check_texts(texts, "queries" if is_query else "texts")
        if not items:
            return []
        ids = self.token_ids(items, is_query=is_query)
        futures = self._submit(ids)
        rows: list[FloatArray] = []
        bar = self._progress(len(items))
        try:
            for fut in futures:
                part = fut.result()
                rows.extend(part)
                if bar is not None:
                    bar.update(len(part))
        finally:
            if bar is not None:
                bar.close()
        return [self._finish(i, r, is_query=is_query) for i, r in zip(ids, rows, strict=True)]

    async def aencode(self, texts: Sequence[str], *, is_query: bool = False) -> list[EncodedText]:
        """Async :meth:`encode`: waits on the engine without blocking the event loop."""
        items = check_texts(texts, "queries" if is_query else "texts")
        if not items:
            return []
        if self._engine is None:
            await asyncio.to_thread(self.start)
        ids = self.token_ids(items, is_query=is_query)
        asubmit = getattr(self._engine, "asubmit", None)  # native async backends (remote)
        if asubmit is not None:
            bs = self.batch_size
            parts = await asyncio.gather(
                *(asubmit(ids[i : i + bs]) for i in range(0, len(ids), bs))
            )
        else:
            parts = await asyncio.gather(*(asyncio.wrap_future(f) for f in self._submit(ids)))
        rows = [r for part in parts for r in part]
        return [self._finish(i, r, is_query=is_query) for i, r in zip(ids, rows, strict=True)]

    def _progress(self, total: int) -> Any:
        if not self.show_progress or total <= self.batch_size:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="Encoding", unit="text", leave=False)

    # -- public API -------------------------------------------------------------------------

    @staticmethod
    def _dense(items: list[EncodedText], dim: int) -> FloatArray:
        if not items:
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack([e.dense for e in items]).astype(np.float32, copy=False)

    @property
    def dimension(self) -> int:
        """Width of dense and token vectors (learned from the model on first use)."""
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"])[0].dense.size)
        return self._dim

    def embed_documents(self, texts: Sequence[str]) -> FloatArray:
        """Dense vectors ``[n, d]`` float32, L2-normalised."""
        items = self.encode(texts)
        return self._dense(items, items[0].dense.size if items else 0)

    def embed_query(self, text: str) -> FloatArray:
        """Dense query vector ``[d]`` float32, L2-normalised."""
        return self.encode([check_text(text, "query")], is_query=True)[0].dense

    def embed_documents_tokens(self, texts: Sequence[str]) -> list[FloatArray]:
        """Token vectors per document, each ``[T_i, d]`` float32 with L2-normalised rows."""
        return [e.tokens for e in self.encode(texts)]

    def embed_query_tokens(self, text: str) -> FloatArray:
        """Query token vectors ``[T, d]`` (ColBERT: ``T == query_length``)."""
        return self.encode([check_text(text, "query")], is_query=True)[0].tokens

    def encode_documents(self, texts: Sequence[str]) -> tuple[FloatArray, list[FloatArray]]:
        """``(dense [n, d], token vectors)`` from ONE forward pass per text."""
        items = self.encode(texts)
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    def encode_queries(self, texts: Sequence[str]) -> tuple[FloatArray, list[FloatArray]]:
        """Queries' ``(dense [n, d], token vectors)`` from one forward pass per query."""
        items = self.encode(texts, is_query=True)
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    async def aembed_documents(self, texts: Sequence[str]) -> FloatArray:
        items = await self.aencode(texts)
        return self._dense(items, items[0].dense.size if items else 0)

    async def aembed_query(self, text: str) -> FloatArray:
        return (await self.aencode([check_text(text, "query")], is_query=True))[0].dense

    async def aembed_documents_tokens(self, texts: Sequence[str]) -> list[FloatArray]:
        return [e.tokens for e in await self.aencode(texts)]

    async def aembed_query_tokens(self, text: str) -> FloatArray:
        return (await self.aencode([check_text(text, "query")], is_query=True))[0].tokens

    async def aencode_documents(self, texts: Sequence[str]) -> tuple[FloatArray, list[FloatArray]]:
        items = await self.aencode(texts)
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    async def aencode_queries(self, texts: Sequence[str]) -> tuple[FloatArray, list[FloatArray]]:
        items = await self.aencode(texts, is_query=True)
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Readable token strings for ids (for explanations and heatmaps)."""
        return [str(t) for t in self._tokenizer.convert_ids_to_tokens(list(ids))]
