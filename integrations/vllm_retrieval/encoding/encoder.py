"""The framework-free encoder: dense and token vectors from one vLLM forward pass."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, PrivateAttr
from typing_extensions import Self

from ..errors import DenseOnlyModelError, EngineError, require
from .backends.base import EngineBackend, ImagePrompt, ImageRows, MultimodalBackend
from .backends.local import EngineSettings
from .backends.registry import (
    EngineLease,
    acquire_engine,
    acquire_remote_engine,
    get_remote_engine,
)
from .backends.remote import PROBE_TEXT, RemoteEngine, RemoteSettings
from .images import MultimodalItem, is_image
from .inputs import LoadedItem, check_images, check_items, check_text, check_texts
from .profiles import ModelProfile, load_profile, resolve_model_path
from .settings import ENCODER_FIELDS, EncoderSettings
from .vlm import merged_grid

__all__ = ["EncodedText", "Encoder"]

FloatArray = npt.NDArray[np.float32]
# Settings that change how requests travel, not the vectors that come back.
_OPERATIONAL = frozenset({"model", "batch_size", "show_progress", "timeout", "api_key"})
# Guards every Encoder's lease (taking and giving back a reference is quick; waiting for an
# engine to start happens outside it).
_LEASE_LOCK = threading.Lock()


class EncodedText:
    """One encoded text: its dense vector, its token vectors and the ids they came from.

    A dual encoder (CLIP, SigLIP) gives no token vectors: ``tokens`` then raises
    :class:`~vllm_retrieval.errors.DenseOnlyModelError`."""

    __slots__ = ("_tokens", "dense", "token_ids")

    def __init__(self, dense: FloatArray, tokens: FloatArray | None, token_ids: list[int]) -> None:
        self.dense = dense
        self._tokens = tokens
        self.token_ids = token_ids

    @property
    def tokens(self) -> FloatArray:
        if self._tokens is None:
            raise DenseOnlyModelError(_DENSE_ONLY)
        return self._tokens


_DENSE_ONLY = (
    "this model is a dual encoder (CLIP / SigLIP): one vector per text or image, no token "
    "vectors; MaxSim, multi-vector stores and the reranker need a late-interaction model "
    "(ColBERT, BGE-M3, a Qwen-VL or ColQwen profile)"
)


class Encoder(EncoderSettings):
    """Dense and ColBERT-style token embeddings from one shared vLLM engine.

    Every ``Encoder`` with the same model and engine settings in a process shares one engine
    (one ``token_embed`` vLLM engine; dense vectors are pooled from the same forward pass).
    Texts longer than the model's limit (``max_length``) are truncated, never rejected.
    Methods are safe to call from many threads and asyncio tasks at once; the async methods
    tokenise and finish vectors in worker threads, so they never block the event loop.

    **Lifecycle.** An Encoder holds one reference to its shared engine from its first call
    (or :meth:`start`) until :meth:`close`; the engine stops when the last reference in the
    process is released, so closing one Encoder never stops an engine another still holds.
    ``close()`` is idempotent; an Encoder used after ``close()`` takes a new reference (and
    starts the engine again if nobody held it). ``with Encoder() as enc:`` closes on exit.
    An Encoder dropped without ``close()`` keeps its reference until
    :func:`~vllm_retrieval.shutdown_engines` (or process exit).

    The fields are :class:`~vllm_retrieval.encoding.settings.EncoderSettings`; the engine is
    an :class:`~vllm_retrieval.encoding.backends.base.EngineBackend` from the process-wide
    registry (:mod:`~vllm_retrieval.encoding.backends.registry`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    _model_path: str = PrivateAttr(default="")
    _profile: ModelProfile | None = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _lease: EngineLease[Any] | None = PrivateAttr(default=None)
    _dim: int | None = PrivateAttr(default=None)
    _image_processor: Any = PrivateAttr(default=None)

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
            profile=self.profile,
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def model_profile(self) -> ModelProfile:
        """How this model's rows become vectors (detected, or named by ``profile=``)."""
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
        kwargs = {**dict(self.model_profile.engine_overrides), **self.engine_kwargs}
        return EngineSettings.create(self._model_path, dtype=self.dtype, engine_kwargs=kwargs)

    @property
    def engine(self) -> EngineBackend:
        """The shared engine (acquired, started and waited for on first use)."""
        lease = self._lease
        if lease is None or not lease.active:
            with _LEASE_LOCK:
                old = lease = self._lease
                if lease is None or not lease.active:
                    lease = self._acquire()
                    self._lease = lease
            if old is not None and old is not lease:
                old.release()  # its engine was shut down or crashed
        try:
            lease.engine.wait_ready()  # at once when started
        except BaseException:
            self._drop(lease)  # a failed start holds nothing
            raise
        engine: EngineBackend = lease.engine
        return engine

    def _acquire(self) -> EngineLease[Any]:
        if self.base_url is None:
            return acquire_engine(self.engine_settings)
        settings, probe, tokenize = self._remote_settings()
        return acquire_remote_engine(settings, probe_ids=probe, local_tokenize=tokenize)

    def _drop(self, lease: EngineLease[Any]) -> None:
        with _LEASE_LOCK:
            if self._lease is lease:
                self._lease = None
        lease.release()

    @property
    def holds_engine(self) -> bool:
        """Whether this Encoder holds a reference to a running engine now."""
        lease = self._lease
        return lease is not None and lease.active

    def same_vectors(self, other: Encoder) -> bool:
        """Whether ``other`` gives the same vectors for the same input (model, prompts,
        lengths, pooling, profile, dtype, engine; batching, progress and timeouts aside)."""
        if other is self:
            return True
        keep = set(ENCODER_FIELDS) - _OPERATIONAL
        mine = {k: getattr(self, k) for k in keep}
        theirs = {k: getattr(other, k) for k in keep}
        return self._model_path == other._model_path and mine == theirs

    def remote_engine(self, **options: Any) -> RemoteEngine:
        """The process-wide remote engine of this ``Encoder(base_url=...)``.

        ``options`` are further :class:`~vllm_retrieval.encoding.backends.remote.RemoteSettings`
        fields (``transfer``, ``max_concurrency``, ``max_retries``, ...).
        """
        settings, probe, tokenize = self._remote_settings(**options)
        return get_remote_engine(settings, probe_ids=probe, local_tokenize=tokenize)

    def _remote_settings(self, **options: Any) -> tuple[RemoteSettings, list[int], Any]:
        if self.base_url is None:
            raise ValueError("remote_engine() needs an Encoder(base_url=...)")
        if self.model_profile.dense_only:
            raise EngineError("dual encoders (CLIP / SigLIP) run in-process only, not remotely")
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

        def local_tokenize(text: str) -> list[int]:
            return [int(i) for i in tok(text, add_special_tokens=False)["input_ids"]]

        return settings, self.token_ids([PROBE_TEXT], is_query=False)[0], local_tokenize

    def close(self) -> None:
        """Release this Encoder's reference to the shared engine (idempotent).

        The engine stops only when no other Encoder holds it; this Encoder takes a new
        reference if it is used again.
        """
        with _LEASE_LOCK:
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def __copy__(self) -> Self:
        """A copy (``model_copy``) shares the tokenizer, not the engine reference: it takes
        its own on first use, so closing one never releases the other's."""
        twin = super().__copy__()
        twin._lease = None
        return twin

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Encoder:
        """Start (or join) the shared engine now rather than on the first call."""
        _ = self.engine
        return self

    # -- tokenisation ----------------------------------------------------------------------

    def token_ids(self, texts: list[str], *, is_query: bool) -> list[list[int]]:
        """The exact ids the engine sees for each text (prefix, markers, truncation applied)."""
        prof = self.model_profile
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
        prof = self.model_profile
        if prof.dense_only:  # one row: the model's own text vector
            return EncodedText(prof.pool(rows), None, ids)
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

    def _prepare(
        self, texts: Sequence[str], is_query: bool
    ) -> tuple[EngineBackend | None, list[list[int]]]:
        """Validate and tokenise (in a worker thread for the async path); the engine too."""
        items = check_texts(texts, "queries" if is_query else "texts")
        if not items:
            return None, []
        return self.engine, self.token_ids(items, is_query=is_query)

    def _finish_all(
        self, ids: list[list[int]], rows: list[FloatArray], is_query: bool
    ) -> list[EncodedText]:
        return [self._finish(i, r, is_query=is_query) for i, r in zip(ids, rows, strict=True)]

    async def aencode(self, texts: Sequence[str], *, is_query: bool = False) -> list[EncodedText]:
        """Async :meth:`encode`: validation, tokenisation and pooling run in worker threads
        and the engine is awaited, so the event loop is never blocked."""
        engine, ids = await asyncio.to_thread(self._prepare, texts, is_query)
        if engine is None:
            return []
        asubmit = getattr(engine, "asubmit", None)  # native async backends (remote)
        bs = self.batch_size
        if asubmit is not None:
            parts = await asyncio.gather(
                *(asubmit(ids[i : i + bs]) for i in range(0, len(ids), bs))
            )
        else:
            parts = await asyncio.gather(
                *(
                    asyncio.wrap_future(engine.submit(ids[i : i + bs]))
                    for i in range(0, len(ids), bs)
                )
            )
        rows = [r for part in parts for r in part]
        return await asyncio.to_thread(self._finish_all, ids, rows, is_query)

    # -- images and text+image items (vision-language models) --------------------------------

    def _image_engine(self) -> MultimodalBackend:
        if not self.model_profile.takes_images:
            raise ValueError(
                f"{self._model_path!r} is not a vision-language model: it takes texts only"
            )
        engine = self.engine
        if not isinstance(engine, MultimodalBackend):
            raise EngineError(f"this engine ({type(engine).__name__}) does not take images")
        return engine

    def image_prompt(self, item: LoadedItem, *, is_query: bool = False) -> ImagePrompt:
        """The engine prompt of an image item: the model's image template, its text in place
        (truncated to ``max_length`` tokens; an image alone gets the profile's image text)."""
        prof = self.model_profile
        assert prof.image_prompt is not None
        if prof.dense_only and item.text is not None:
            raise ValueError(
                "a dual encoder (CLIP / SigLIP) embeds a text or an image, not both in one item"
            )
        head, _, tail = prof.image_prompt.partition("{text}")
        if item.text is None:
            text = prof.image_text
        else:
            text = (prof.query_prefix if is_query else prof.document_prefix) + item.text
        tok = self._tokenizer
        ids = [
            *tok(head, add_special_tokens=False)["input_ids"],
            *tok(text, add_special_tokens=False, truncation=True, max_length=prof.max_length)[
                "input_ids"
            ],
            *tok(tail, add_special_tokens=False)["input_ids"],
        ]
        return ImagePrompt([int(i) for i in ids], (item.image,))

    def _finish_image(self, out: ImageRows, item: LoadedItem) -> EncodedText:
        prof = self.model_profile
        rows, ids = out.rows, out.token_ids
        if prof.dense_only:  # one row: the model's own image vector
            return EncodedText(prof.pool(rows), None, ids)
        if rows.shape[0] != len(ids):
            raise EngineError(f"engine returned {rows.shape[0]} rows for {len(ids)} tokens")
        if prof.vision_rows_only and item.text is None:
            start, stop = prof.vision_span(ids)
            rows, ids = rows[start:stop], ids[start:stop]
        return EncodedText(prof.pool(rows), prof.token_rows(rows), ids)

    def image_grid(self, image: Any) -> tuple[int, int]:
        """``(rows, columns)`` of an image's patch vectors: the image's ``<|image_pad|>``
        rows, row-major, after the model's processor has resized it."""
        if not self.model_profile.takes_images:
            raise ValueError(f"{self._model_path!r} is not a vision-language model")
        self.require_token_vectors()  # a dual encoder has no patch vectors
        if self._image_processor is None:
            transformers = require("transformers", "cpu")
            self._image_processor = transformers.AutoImageProcessor.from_pretrained(
                self._model_path
            )
        img = check_images([image])[0]
        return merged_grid(self._image_processor, img.width, img.height)

    def _split(
        self, items: list[str | LoadedItem], is_query: bool
    ) -> tuple[list[int], list[list[int]], list[int], list[ImagePrompt]]:
        texts = [i for i, it in enumerate(items) if isinstance(it, str)]
        images = [i for i, it in enumerate(items) if isinstance(it, LoadedItem)]
        ids = self.token_ids([items[i] for i in texts], is_query=is_query) if texts else []  # type: ignore[misc]
        prompts = [self.image_prompt(items[i], is_query=is_query) for i in images]  # type: ignore[arg-type]
        return texts, ids, images, prompts

    def _submit_images(
        self, engine: MultimodalBackend, prompts: list[ImagePrompt]
    ) -> list[Future[list[ImageRows]]]:
        bs = self.batch_size
        return [engine.submit_images(prompts[i : i + bs]) for i in range(0, len(prompts), bs)]

    def _merge(
        self,
        items: list[str | LoadedItem],
        is_query: bool,
        texts: list[int],
        ids: list[list[int]],
        text_rows: list[FloatArray],
        images: list[int],
        image_rows: list[ImageRows],
    ) -> list[EncodedText]:
        out: list[EncodedText | None] = [None] * len(items)
        for i, tid, rows in zip(texts, ids, text_rows, strict=True):
            out[i] = self._finish(tid, rows, is_query=is_query)
        for i, rows_ in zip(images, image_rows, strict=True):
            out[i] = self._finish_image(rows_, items[i])  # type: ignore[arg-type]
        return [e for e in out if e is not None]

    def encode_items(self, items: Sequence[Any], *, is_query: bool = False) -> list[EncodedText]:
        """Encode texts, images and text+image items (:class:`MultimodalItem`) in order; each
        result has the dense vector and the token vectors of ONE forward pass."""
        loaded = check_items(items, "queries" if is_query else "items")
        if all(isinstance(it, str) for it in loaded):
            return self.encode(loaded, is_query=is_query)  # type: ignore[arg-type]
        engine = self._image_engine()
        texts, ids, images, prompts = self._split(loaded, is_query)
        text_futures = self._submit(ids) if ids else []
        bs = self.batch_size
        image_futures = [
            engine.submit_images(prompts[s : s + bs]) for s in range(0, len(prompts), bs)
        ]
        text_rows = [r for f in text_futures for r in f.result()]
        image_rows = [r for f in image_futures for r in f.result()]
        return self._merge(loaded, is_query, texts, ids, text_rows, images, image_rows)

    async def aencode_items(
        self, items: Sequence[Any], *, is_query: bool = False
    ) -> list[EncodedText]:
        """Async :meth:`encode_items` (images decoded in a worker thread)."""
        loaded = await asyncio.to_thread(check_items, items, "queries" if is_query else "items")
        if all(isinstance(it, str) for it in loaded):
            return await self.aencode(loaded, is_query=is_query)  # type: ignore[arg-type]
        engine = await asyncio.to_thread(self._image_engine)
        texts, ids, images, prompts = await asyncio.to_thread(self._split, loaded, is_query)
        bs = self.batch_size
        futures = [engine.submit(ids[s : s + bs]) for s in range(0, len(ids), bs)]
        image_futures = [
            engine.submit_images(prompts[s : s + bs]) for s in range(0, len(prompts), bs)
        ]
        parts = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        iparts = await asyncio.gather(*(asyncio.wrap_future(f) for f in image_futures))
        text_rows = [r for p in parts for r in p]
        image_rows = [r for p in iparts for r in p]
        return await asyncio.to_thread(
            self._merge, loaded, is_query, texts, ids, text_rows, images, image_rows
        )

    def _items(self, texts: Sequence[Any], is_query: bool) -> bool:
        """Whether ``texts`` holds image items (and the model takes them)."""
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            return False
        mixed = any(isinstance(t, MultimodalItem) or is_image(t) for t in texts)
        if mixed and not self.model_profile.takes_images:
            raise ValueError(
                f"{self._model_path!r} is not a vision-language model: it takes texts only"
            )
        return mixed

    def require_token_vectors(self) -> None:
        """Raise :class:`~vllm_retrieval.errors.DenseOnlyModelError` when the model gives no
        token vectors (a dual encoder): callers that need them check before any work."""
        if self.model_profile.dense_only:
            raise DenseOnlyModelError(f"{self._model_path!r}: {_DENSE_ONLY}")

    def encode_images(self, images: Sequence[Any]) -> tuple[FloatArray, list[FloatArray]]:
        """Images' ``(dense [n, d], token vectors)`` from ONE forward pass per image."""
        self.require_token_vectors()
        items = self.encode_items(check_images(images))
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    def embed_images(self, images: Sequence[Any]) -> FloatArray:
        """Dense image vectors ``[n, d]`` float32, L2-normalised."""
        items = self.encode_items(check_images(images))
        return self._dense(items, items[0].dense.size if items else 0)

    def embed_images_tokens(self, images: Sequence[Any]) -> list[FloatArray]:
        """Token (patch) vectors per image, each ``[T_i, d]`` with L2-normalised rows."""
        return self.encode_images(images)[1]

    async def aencode_images(self, images: Sequence[Any]) -> tuple[FloatArray, list[FloatArray]]:
        self.require_token_vectors()
        loaded = await asyncio.to_thread(check_images, images)
        items = await self.aencode_items(loaded)
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    async def aembed_images(self, images: Sequence[Any]) -> FloatArray:
        items = await self.aencode_items(await asyncio.to_thread(check_images, images))
        return self._dense(items, items[0].dense.size if items else 0)

    async def aembed_images_tokens(self, images: Sequence[Any]) -> list[FloatArray]:
        return (await self.aencode_images(images))[1]

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
        self.require_token_vectors()
        return [e.tokens for e in self.encode(texts)]

    def embed_query_tokens(self, text: str) -> FloatArray:
        """Query token vectors ``[T, d]`` (ColBERT: ``T == query_length``)."""
        self.require_token_vectors()
        return self.encode([check_text(text, "query")], is_query=True)[0].tokens

    def encode_documents(self, texts: Sequence[Any]) -> tuple[FloatArray, list[FloatArray]]:
        """``(dense [n, d], token vectors)`` from ONE forward pass per text (or, for a
        vision-language model, per image or :class:`MultimodalItem`)."""
        self.require_token_vectors()
        items = self.encode_items(texts) if self._items(texts, False) else self.encode(texts)
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    def encode_queries(self, texts: Sequence[Any]) -> tuple[FloatArray, list[FloatArray]]:
        """Queries' ``(dense [n, d], token vectors)`` from one forward pass per query (texts,
        or for a vision-language model also images and :class:`MultimodalItem`)."""
        self.require_token_vectors()
        items = (
            self.encode_items(texts, is_query=True)
            if self._items(texts, True)
            else self.encode(texts, is_query=True)
        )
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    async def aembed_documents(self, texts: Sequence[str]) -> FloatArray:
        items = await self.aencode(texts)
        return self._dense(items, items[0].dense.size if items else 0)

    async def aembed_query(self, text: str) -> FloatArray:
        return (await self.aencode([check_text(text, "query")], is_query=True))[0].dense

    async def aembed_documents_tokens(self, texts: Sequence[str]) -> list[FloatArray]:
        self.require_token_vectors()
        return [e.tokens for e in await self.aencode(texts)]

    async def aembed_query_tokens(self, text: str) -> FloatArray:
        self.require_token_vectors()
        return (await self.aencode([check_text(text, "query")], is_query=True))[0].tokens

    async def aencode_documents(self, texts: Sequence[Any]) -> tuple[FloatArray, list[FloatArray]]:
        self.require_token_vectors()
        mixed = self._items(texts, False)
        items = await (self.aencode_items(texts) if mixed else self.aencode(texts))
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    async def aencode_queries(self, texts: Sequence[Any]) -> tuple[FloatArray, list[FloatArray]]:
        self.require_token_vectors()
        mixed = self._items(texts, True)
        enc = self.aencode_items if mixed else self.aencode
        items = await enc(texts, is_query=True)
        return self._dense(items, items[0].dense.size if items else 0), [e.tokens for e in items]

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Readable token strings for ids (for explanations and heatmaps)."""
        return [str(t) for t in self._tokenizer.convert_ids_to_tokens(list(ids))]
