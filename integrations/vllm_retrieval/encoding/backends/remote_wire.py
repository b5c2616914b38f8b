"""The wire format of a ``vllm serve`` answer: decoding, validation and error classification.

Every answer is checked (item count, indices, shapes, byte lengths, dtype) and anything
unusable raises :class:`~vllm_retrieval.errors.RemoteMalformedResponseError` naming the
request: never silently partial or misshapen rows. Failed exchanges become typed
:class:`~vllm_retrieval.errors.RemoteEngineError` subclasses by exception type
(:func:`transport_error`) or HTTP status (:func:`status_error`), never by message text.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from typing import Any, Literal

import httpx
import numpy as np

from ...errors import (
    RemoteAuthError,
    RemoteEngineError,
    RemoteMalformedResponseError,
    RemoteTimeoutError,
    RemoteUnreachableError,
)
from .base import RowsArray

__all__ = [
    "Transfer",
    "decode_rows",
    "decode_scores",
    "error_detail",
    "parse_json",
    "status_error",
    "transport_error",
]

Transfer = Literal["base64", "bytes", "json"]
Malformed = RemoteMalformedResponseError


def error_detail(resp: httpx.Response, scrub: Callable[[str], str] = str) -> str:
    """The server's error message, short (``scrub`` masks the API key should it echo it)."""
    try:
        payload = resp.json()
    except (ValueError, UnicodeDecodeError):
        text = resp.text.strip()
        return scrub(text[:300] if text else resp.reason_phrase)
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return scrub(str(err)[:300])
    return scrub(str(payload)[:300])


def status_error(
    resp: httpx.Response, where: str, scrub: Callable[[str], str] = str
) -> RemoteEngineError:
    """The typed error of an HTTP error answer (by status: 401/403 are auth errors)."""
    message = f"{where} answered {resp.status_code}: {error_detail(resp, scrub)}"
    if resp.status_code in (401, 403):
        return RemoteAuthError(
            f"{message} (the server refused the API key: check api_key or $VLLM_API_KEY)"
        )
    return RemoteEngineError(message)


def transport_error(
    exc: httpx.TransportError, where: str, scrub: Callable[[str], str] = str
) -> RemoteEngineError:
    """The typed error of a failed exchange (by the httpx exception type)."""
    cause = scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return RemoteTimeoutError(f"{where} timed out: {cause}")
    if isinstance(exc, httpx.RemoteProtocolError):  # a broken or truncated HTTP answer
        return Malformed(f"{where} answered no valid HTTP response: {cause}")
    return RemoteUnreachableError(f"{where} is unreachable: {cause}")


def parse_json(resp: httpx.Response, where: str) -> Any:
    """The JSON body of ``resp``, or :class:`RemoteMalformedResponseError`."""
    try:
        return json.loads(resp.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(
            f"{where} returned malformed JSON ({len(resp.content)} bytes): {exc}"
        ) from None


def decode_scores(payload: Any, count: int, where: str) -> list[float]:
    """The ``count`` scores of a ``/score`` answer, in document order; all or an error."""
    items = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(items, list) or len(items) != count:
        got = len(items) if isinstance(items, list) else "no"
        raise Malformed(f"{where} answered {got} scores for {count} documents")
    scores: list[float | None] = [None] * count
    for item in items:
        idx = item.get("index") if isinstance(item, dict) else None
        score = item.get("score") if isinstance(item, dict) else None
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < count:
            raise Malformed(f"{where} answered a score item with a bad index: {idx!r}")
        if scores[idx] is not None:
            raise Malformed(f"{where} answered two scores for document {idx}")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise Malformed(f"{where} answered a score item without a number: {item!r:.200}")
        if not math.isfinite(score):
            raise Malformed(f"{where} answered a non-finite score for document {idx}")
        scores[idx] = float(score)
    return [float(s) for s in scores if s is not None]


def decode_rows(
    resp: httpx.Response,
    payload: Any,
    shapes: list[tuple[int, int]],
    transfer: Transfer,
    where: str,
) -> list[RowsArray]:
    """The rows of a ``/pooling`` answer, each checked against its expected ``shape``.

    ``payload`` is the parsed JSON body (``None`` for ``transfer="bytes"``, whose body is raw
    float32 with the shapes in the ``metadata`` header).
    """
    if transfer == "bytes":
        return _decode_bytes(resp, shapes, where)
    items = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(items, list) or len(items) != len(shapes):
        got = len(items) if isinstance(items, list) else "no"
        raise Malformed(f"{where} answered {got} items for {len(shapes)} texts")
    ordered: list[Any] = [None] * len(shapes)
    for item in items:
        idx = item.get("index") if isinstance(item, dict) else None
        if not isinstance(idx, int) or not 0 <= idx < len(shapes) or ordered[idx] is not None:
            raise Malformed(f"{where} answered an item with a bad index: {idx!r}")
        ordered[idx] = item.get("data")
    rows: list[RowsArray] = []
    for n, (data, shape) in enumerate(zip(ordered, shapes, strict=True)):
        if transfer == "json":
            try:
                arr = np.asarray(data, dtype=np.float32)
            except (ValueError, TypeError):
                raise Malformed(f"{where}: item {n} is not a float matrix") from None
            if arr.shape != shape:
                raise Malformed(f"{where}: item {n} has shape {arr.shape}, expected {shape}")
            rows.append(arr)
            continue
        if not isinstance(data, str):
            raise Malformed(f"{where}: item {n} is not a base64 string")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Malformed(f"{where}: item {n} is not valid base64: {exc}") from None
        rows.append(_frombuffer(raw, shape, f"{where}: item {n}"))
    return rows


def _decode_bytes(
    resp: httpx.Response, shapes: list[tuple[int, int]], where: str
) -> list[RowsArray]:
    header = resp.headers.get("metadata")
    if header is None:
        raise Malformed(f"{where} answered bytes without the metadata header")
    try:
        meta = json.loads(header)
        items = sorted(meta["data"], key=lambda x: int(x["index"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise Malformed(f"{where} answered a malformed metadata header: {exc}") from None
    if len(items) != len(shapes) or [int(x["index"]) for x in items] != list(range(len(shapes))):
        raise Malformed(f"{where} answered {len(items)} items for {len(shapes)} texts")
    body = resp.content
    rows: list[RowsArray] = []
    for n, (item, shape) in enumerate(zip(items, shapes, strict=True)):
        try:
            start, end = int(item["start"]), int(item["end"])
            dtype = str(item.get("embed_dtype", "float32"))
            endian = str(item.get("endianness", "little"))
            got = tuple(int(x) for x in item["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Malformed(f"{where}: item {n} metadata is malformed: {exc}") from None
        if got != shape:
            raise Malformed(f"{where}: item {n} has shape {got}, expected {shape}")
        if dtype != "float32" or endian != "little":
            raise Malformed(f"{where}: item {n} is {dtype}/{endian}, not float32/little")
        if not 0 <= start <= end <= len(body):
            raise Malformed(
                f"{where}: item {n} spans bytes {start}..{end} of a {len(body)}-byte body"
                " (truncated)"
            )
        rows.append(_frombuffer(body[start:end], shape, f"{where}: item {n}"))
    return rows


def _frombuffer(raw: bytes, shape: tuple[int, int], what: str) -> RowsArray:
    want = shape[0] * shape[1] * 4
    if len(raw) != want:
        raise Malformed(
            f"{what} has {len(raw)} bytes, expected {want} ({shape[0]} tokens × {shape[1]} "
            "dims × 4): truncated or not token_embed float32"
        )
    out: RowsArray = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    return out
