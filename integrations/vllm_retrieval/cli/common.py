"""What every command shares: the program name, the user error, the encoder and the store.

The encoder and the store are built from the model and engine options (see
:func:`~vllm_retrieval.cli.app.build_parser`); an existing index's recorded encoder settings are
the defaults of the options not given.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ..encoding import Encoder
    from ..store import Compression, MultiVectorStore

__all__ = [
    "API_KEY_ENV",
    "PROG",
    "CLIError",
    "api_key",
    "make_encoder",
    "open_store",
]

PROG = "vllm-retrieval"
API_KEY_ENV = "VLLM_API_KEY"


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def api_key(args: argparse.Namespace) -> SecretStr | None:
    """The remote server's key: ``--api-key-file``'s content, else ``$VLLM_API_KEY``, else None.

    Never from argv: ``--api-key KEY`` is refused, since ``ps`` shows it to every local user.
    """
    if getattr(args, "api_key_argv", None) is not None:
        raise CLIError(
            f"--api-key is no longer accepted (a key on the command line is visible in `ps`): "
            f"set ${API_KEY_ENV} or pass --api-key-file PATH"
        )
    path: Path | None = getattr(args, "api_key_file", None)
    from pydantic import SecretStr

    if path is None:
        env = os.environ.get(API_KEY_ENV)
        return SecretStr(env) if env else None
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CLIError(f"cannot read --api-key-file {path}: {exc.strerror or exc}") from None
    if not key:
        raise CLIError(f"--api-key-file {path} is empty")
    return SecretStr(key)


def _engine_kwargs(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--engine-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _recorded_settings(index: Path) -> dict[str, Any]:
    from ..store import MANIFEST_NAME, StoreManifest

    path = index / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = StoreManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise CLIError(f"{path} is damaged: {exc}") from None
    if manifest.encoder is None:
        return {}
    return manifest.encoder.encoder_kwargs()


def make_encoder(args: argparse.Namespace, index: Path | None = None) -> Encoder:
    """The Encoder from the command-line options; an existing index's settings are defaults."""
    from ..encoding import Encoder

    recorded = _recorded_settings(index) if index is not None else {}
    given = {
        "model": args.model,
        "query_prefix": args.query_prefix,
        "document_prefix": args.document_prefix,
        "max_length": args.max_length,
        "query_length": args.query_length,
        "pooling": args.pooling,
        "profile": args.profile,
    }
    settings = {k: (v if v is not None else recorded.get(k)) for k, v in given.items()}
    return Encoder(
        **settings,
        batch_size=args.batch_size,
        dtype=args.dtype,
        engine_kwargs=_engine_kwargs(args.engine_arg),
        base_url=args.base_url,
        api_key=api_key(args),
        timeout=args.timeout,
        show_progress=False,
    )


def open_store(
    args: argparse.Namespace,
    index: Path,
    *,
    create: bool,
    compression: Compression | None = None,
    pool_factor: int | None = None,
    reduce_to: int | None = None,
    timings: dict[str, float] | None = None,
) -> MultiVectorStore:
    """Open (or, with ``create``, create) the store at ``index`` with the CLI's encoder.

    The engine is started here too, and the seconds of loading the model (tokenizer and
    engine, imports included) and opening the store put in ``timings["engine_s"]``, so that
    commands report them apart from their own work.
    """
    from ..store import MultiVectorStore

    if not create and not index.is_dir():
        raise FileNotFoundError(f"no index at {index} (build one with `{PROG} index`)")
    t0 = time.perf_counter()
    encoder = make_encoder(args, index)  # loads the tokenizer (imports transformers, torch)
    store = (
        MultiVectorStore(
            index,
            encoder=encoder,
            compression=compression,
            pool_factor=pool_factor,
            reduce_to=reduce_to,
        )
        if create
        else MultiVectorStore.open(index, encoder=encoder)
    )
    try:
        encoder.start()  # a new store has started it already (to learn the vector width)
    except BaseException:
        store.close()
        raise
    if timings is not None:
        timings["engine_s"] = time.perf_counter() - t0
    return store
