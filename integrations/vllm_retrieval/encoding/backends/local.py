"""The in-process vLLM engine backend (one per settings per process: see :mod:`.registry`).

vLLM's ``LLM`` is not thread-safe, so each engine is owned by one worker thread. Callers on
any thread or asyncio task submit token-id lists and get a ``concurrent.futures.Future``;
the worker drains every request waiting in its queue into a single ``LLM.encode`` call
(dynamic batching across callers), then splits the outputs back to their futures.

The engine runs the ``token_embed`` task with ``use_activation=False``: each output row is
a raw last hidden state (or a raw ColBERT projection). Dense pooling, row selection and L2
normalisation happen in the core (:mod:`vllm_retrieval.encoding.profiles`), so one forward pass
gives both the dense vector and the token vectors. Dual encoders (CLIP, SigLIP) run the
``embed`` task instead: one raw projected vector per prompt (:mod:`..dual`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from ...errors import EngineError, require
from .base import ImagePrompt, ImageRows, RowsArray

__all__ = [
    "EngineSettings",
    "SharedEngine",
    "fast_bf16_cpu",
    "prefer_in_process_engine",
    "quiet_engine_logs",
    "resolve_dtype",
]

# Quiet: vLLM's INFO and WARNING lines (start-up notes, "[shutdown] force killing" ...) and
# torch's C++ warnings. vLLM reads these once, at import: set them before the engine starts.
QUIET_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "PYTHONWARNINGS": "ignore::FutureWarning",  # vLLM's about torch internals
}


def quiet_engine_logs(quiet: bool = True) -> None:
    """Keep vLLM's and torch's start-up and shutdown logs out of a program's output.

    For programs that print results (the CLI without ``-v``, ``make demo``); a variable the
    user set wins. Call before the first engine starts; ``quiet=False`` does nothing.
    """
    if not quiet:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # Some of vLLM's lines are logged while it is imported, before it reads the variable
    level = logging.getLevelName(os.environ["VLLM_LOGGING_LEVEL"].upper())
    logging.getLogger("vllm").setLevel(level if isinstance(level, int) else logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.")


_MP_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
# CPU defaults measured on a 2-core, 24 GiB machine (see README, "Engine settings").
_CPU_ENV_DEFAULTS = {
    # Encoder-only pooling models use no KV cache worth the name; 1 GiB passes the NUMA check.
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
}


def prefer_in_process_engine() -> None:
    """Run the engine core in this process: ~20 s less to the first result on 2 cores.

    For *programs* with one engine (the console script, ``make demo``), never the library's
    default: vLLM's in-process engine core changes the whole process — it seeds the global
    random state, freezes the garbage collector's heap, caches vLLM's environment variables
    for good, and patches Triton kernels by scanning every imported module (which fails once
    some libraries are imported, e.g. ``numba``, which ``bm25s`` pulls in). Library users
    get vLLM's own engine process. A value of ``VLLM_ENABLE_V1_MULTIPROCESSING`` the user
    set wins; call before the first engine starts.
    """
    os.environ.setdefault(_MP_ENV, "0")


# ``vllm.LLM`` arguments on CPU: with the engine core in-process (:func:`prefer_in_process_engine`)
# the model runs in it too, instead of in a worker process (another vLLM and torch import).
# With vLLM's engine process, vLLM's CPU platform turns "uni" into "mp" itself (OpenMP set-up).
_CPU_ENGINE_KWARGS: dict[str, Any] = {"distributed_executor_backend": "uni"}
# In-process engine: freeze the objects that exist before the engine starts, so that vLLM's
# full garbage collections while loading (and its own gc.freeze after) do not walk the
# heap of vLLM's and torch's modules (seconds on 2 cores). vLLM freezes the heap anyway.
_FREEZE_GC = True


# The default dtype when ``dtype`` is not given (e.g. ``float32`` for exact parity runs).
DTYPE_ENV = "VLLM_RETRIEVAL_DTYPE"


def _cuda_available() -> bool:
    try:
        torch = require("torch", "cpu")
        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def fast_bf16_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when vLLM's bfloat16 is measured or known faster than float32 on this CPU.

    * Intel with AMX (``amx_bf16``): ~2.6x float32 (Sapphire Rapids, 2 cores).
    * AMD with AVX-512 BF16 (``avx512_bf16``, Zen 4 and later): 1.66x float32 (EPYC, 2 cores:
      39.3 vs 23.7 SciFact docs/s, benchmarks/encode.py).
    * Intel with AVX-512 BF16 but no AMX: *slower* than float32 (19.2 vs 29.1 docs/s on a
      Xeon), so float32; likewise every CPU without bf16 instructions (emulated bf16 is ~5x
      slower).
    """
    vendor, flags = "", set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("vendor_id") and not vendor:
                    vendor = line.partition(":")[2].strip()
                elif line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    break
    except OSError:
        return False
    return "amx_bf16" in flags or (vendor == "AuthenticAMD" and "avx512_bf16" in flags)


def resolve_dtype(dtype: str | None, *, cuda: bool | None = None) -> str:
    """The vLLM dtype an engine runs with.

    ``None`` reads ``$VLLM_RETRIEVAL_DTYPE`` (default ``"auto"``). ``"auto"`` on a GPU is the
    model's own dtype (vLLM's choice); on a CPU it is ``"bfloat16"`` where that is measured
    faster (:func:`fast_bf16_cpu`: Intel AMX, AMD Zen 4+; token cosine to float32 >= 0.9996)
    and ``"float32"`` elsewhere.
    """
    if dtype is None:
        dtype = os.environ.get(DTYPE_ENV) or "auto"
    if dtype != "auto":
        return dtype
    if _cuda_available() if cuda is None else cuda:
        return "auto"
    return "bfloat16" if fast_bf16_cpu() else "float32"


@dataclass(frozen=True)
class EngineSettings:
    """What makes two engines different. Encoders with equal settings share one engine."""

    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    extra: str = "{}"  # JSON of further ``vllm.LLM`` keyword arguments, sorted
    max_batch_tokens: int = 16384

    @classmethod
    def create(
        cls,
        model: str,
        *,
        dtype: str | None = None,
        max_model_len: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        max_batch_tokens: int = 16384,
    ) -> EngineSettings:
        try:
            extra = json.dumps(engine_kwargs or {}, sort_keys=True)
        except TypeError as exc:
            raise TypeError(f"engine_kwargs must be JSON-serialisable: {exc}") from exc
        return cls(
            model=model,
            dtype=resolve_dtype(dtype),
            max_model_len=max_model_len,
            extra=extra,
            max_batch_tokens=max_batch_tokens,
        )


@dataclass
class _Job:
    ids: list[list[int]] | list[ImagePrompt]
    future: Future[Any] = field(default_factory=Future)
    images: bool = False  # ImagePrompts in, ImageRows out

    @property
    def tokens(self) -> int:
        return sum(len(p.token_ids if isinstance(p, ImagePrompt) else p) for p in self.ids)


T = TypeVar("T")


@dataclass
class _Call(Generic[T]):
    fn: Callable[[Any], T]
    future: Future[T] = field(default_factory=Future)


_STOP = object()


class SharedEngine:
    """A vLLM engine owned by one worker thread; thread- and asyncio-safe to call."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._task = "token_embed"
        self._queue: queue.Queue[Any] = queue.Queue()
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run,
            name=f"vllm-retrieval-engine:{os.path.basename(settings.model)}",
            daemon=True,
        )
        self._thread.start()

    # -- public ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the engine has started (raises EngineError if it failed to)."""
        self._ready.result(timeout=timeout)

    @property
    def alive(self) -> bool:
        """Whether the engine thread still runs (a closed or crashed engine is replaced)."""
        return self._thread.is_alive()

    def submit(self, ids: Sequence[list[int]]) -> Future[list[RowsArray]]:
        """Queue token-id lists; the future gives one ``[rows, dim]`` float32 array each."""
        job = _Job(ids=list(ids))
        if not job.ids:
            job.future.set_result([])
            return job.future
        if not self._thread.is_alive():
            job.future.set_exception(EngineError("the vLLM engine has stopped"))
            return job.future
        self._queue.put(job)
        return job.future

    def submit_images(self, prompts: Sequence[ImagePrompt]) -> Future[list[ImageRows]]:
        """Queue image prompts; the future gives each one's raw rows and expanded ids."""
        job = _Job(ids=list(prompts), images=True)
        if not job.ids:
            job.future.set_result([])
        elif not self._thread.is_alive():
            job.future.set_exception(EngineError("the vLLM engine has stopped"))
        else:
            self._queue.put(job)
        return job.future

    def call(self, fn: Callable[[Any], T]) -> Future[T]:
        """Run ``fn(llm)`` on the engine thread (e.g. vLLM's own ``LLM.score``)."""
        job: _Call[T] = _Call(fn)
        if not self._thread.is_alive():
            job.future.set_exception(EngineError("the vLLM engine has stopped"))
            return job.future
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=60)

    # -- worker ---------------------------------------------------------------------------

    def _start_llm(self) -> Any:
        vllm = require("vllm", "cpu")
        cuda = _cuda_available()
        if not cuda:
            for key, value in _CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
            # vLLM reserves one core for the frontend by default; encoding wants them all.
            cpus = sorted(os.sched_getaffinity(0))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cpus)))
        from vllm.config import PoolerConfig

        extra = json.loads(self.settings.extra)
        # token_embed: every row; embed: one vector per prompt (dual encoders, see dual.py)
        self._task = str(extra.pop("pooling_task", "token_embed"))
        kwargs: dict[str, Any] = {
            "model": self.settings.model,
            "runner": "pooling",
            "pooler_config": PoolerConfig(task=self._task, use_activation=False),  # type: ignore[arg-type]
            "dtype": self.settings.dtype,
            # CPU: no torch.compile (mode none), so no compile warm-up or profiling run
            "enforce_eager": not cuda,
            "seed": 0,
            "use_tqdm_on_load": False,  # a bar for a sub-second load is only noise
        }
        if self.settings.max_model_len is not None:
            kwargs["max_model_len"] = self.settings.max_model_len
        if cuda:
            kwargs["gpu_memory_utilization"] = 0.5
        else:
            kwargs.update(_CPU_ENGINE_KWARGS)
        kwargs.update(extra)
        if _FREEZE_GC and os.environ.get(_MP_ENV) == "0":
            gc.freeze()
        return vllm.LLM(**kwargs)

    def _run(self) -> None:
        try:
            llm = self._start_llm()
            from vllm.inputs import TokensPrompt

            self._tokens_prompt = TokensPrompt
        except BaseException as exc:  # reported to every caller
            err = EngineError(f"could not start vLLM for {self.settings.model!r}: {exc}")
            err.__cause__ = exc
            self._ready.set_exception(err)
            self._fail_pending(err)
            return
        self._ready.set_result(None)
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            if isinstance(first, _Call):
                self._run_call(llm, first)
                continue
            jobs: list[_Job] = [first]
            budget = first.tokens
            # Coalesce whatever else is already waiting, up to a token budget.
            while budget < self.settings.max_batch_tokens:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or isinstance(nxt, _Call):
                    self._queue.put(nxt)  # handled on the next turn, in order enough
                    break
                jobs.append(nxt)
                budget += nxt.tokens
            self._encode(llm, jobs)
        self._fail_pending(EngineError("the vLLM engine was shut down"))
        del llm

    @staticmethod
    def _run_call(llm: Any, job: _Call[Any]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn(llm))
        except BaseException as exc:  # the engine thread must survive
            job.future.set_exception(exc)

    def _encode(self, llm: Any, jobs: list[_Job]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        prompts = [self._prompt(p) for j in live for p in j.ids]
        try:
            outputs = llm.encode(prompts, pooling_task=self._task, use_tqdm=False)
            rows: list[Any] = []
            for out, prompt in zip(outputs, (p for j in live for p in j.ids), strict=False):
                error = getattr(out, "error", None)
                if error:
                    raise EngineError(f"vLLM failed on a request: {error}")
                data = np.asarray(out.outputs.data.float().cpu().numpy(), dtype=np.float32)
                data = data.reshape(-1, data.shape[-1])  # embed: one [1, d] row
                if isinstance(prompt, ImagePrompt):
                    rows.append(ImageRows(data, [int(i) for i in out.prompt_token_ids]))
                else:
                    rows.append(data)
            if len(rows) != len(prompts):
                raise EngineError(f"vLLM returned {len(rows)} outputs for {len(prompts)} inputs")
        except BaseException as exc:  # the engine thread must survive
            err = exc if isinstance(exc, EngineError) else EngineError(f"vLLM encode failed: {exc}")
            for job in live:
                job.future.set_exception(err)
            return
        start = 0
        for job in live:
            job.future.set_result(rows[start : start + len(job.ids)])
            start += len(job.ids)

    def _prompt(self, p: list[int] | ImagePrompt) -> Any:
        if isinstance(p, ImagePrompt):
            images = p.images[0] if len(p.images) == 1 else list(p.images)
            return self._tokens_prompt(
                prompt_token_ids=p.token_ids, multi_modal_data={"image": images}
            )
        return self._tokens_prompt(prompt_token_ids=p)

    def _fail_pending(self, err: Exception) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, (_Job, _Call)) and job.future.set_running_or_notify_cancel():
                job.future.set_exception(err)
