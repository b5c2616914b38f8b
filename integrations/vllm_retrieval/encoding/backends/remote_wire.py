"""The wire format of a ``vllm serve`` ``/pooling`` answer: decoding and validation.

Every answer is checked (item count, indices, shapes, byte lengths, dtype) and anything
unusable raises :class:`~vllm_retrieval.errors.RemoteEngineError` naming the request: never
silently partial or misshapen rows.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

import httpx
import numpy as np

from ...errors import RemoteEngineError
from .base import RowsArray

__all__ = ["Transfer", "decode_rows", "error_detail"]

Transfer = Literal["base64", "bytes", "json"]


def error_detail(resp: httpx.Response) -> str:
    """The server's error message, short."""
    try:
        payload = resp.json()
    except (ValueError, UnicodeDecodeError):
        text = resp.text.strip()
        return text[:300] if text else resp.reason_phrase
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:300]
    return str(payload)[:300]


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
        raise RemoteEngineError(f"{where} answered {got} items for {len(shapes)} texts")
    ordered: list[Any] = [None] * len(shapes)
    for item in items:
        idx = item.get("index") if isinstance(item, dict) else None
        if not isinstance(idx, int) or not 0 <= idx < len(shapes) or ordered[idx] is not None:
            raise RemoteEngineError(f"{where} answered an item with a bad index: {idx!r}")
        ordered[idx] = item.get("data")
    rows: list[RowsArray] = []
    for n, (data, shape) in enumerate(zip(ordered, shapes, strict=True)):
        if transfer == "json":
            try:
                arr = np.asarray(data, dtype=np.float32)
            except (ValueError, TypeError):
                raise RemoteEngineError(f"{where}: item {n} is not a float matrix") from None
            if arr.shape != shape:
                raise RemoteEngineError(
                    f"{where}: item {n} has shape {arr.shape}, expected {shape}"
                )
            rows.append(arr)
            continue
        if not isinstance(data, str):
            raise RemoteEngineError(f"{where}: item {n} is not a base64 string")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RemoteEngineError(f"{where}: item {n} is not valid base64: {exc}") from None
        rows.append(_frombuffer(raw, shape, f"{where}: item {n}"))
    return rows


def _decode_bytes(
    resp: httpx.Response, shapes: list[tuple[int, int]], where: str
) -> list[RowsArray]:
    header = resp.headers.get("metadata")
    if header is None:
        raise RemoteEngineError(f"{where} answered bytes without the metadata header")
    try:
        meta = json.loads(header)
        items = sorted(meta["data"], key=lambda x: int(x["index"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteEngineError(f"{where} answered a malformed metadata header: {exc}") from None
    if len(items) != len(shapes) or [int(x["index"]) for x in items] != list(range(len(shapes))):
        raise RemoteEngineError(f"{where} answered {len(items)} items for {len(shapes)} texts")
    body = resp.content
    rows: list[RowsArray] = []
    for n, (item, shape) in enumerate(zip(items, shapes, strict=True)):
        try:
            start, end = int(item["start"]), int(item["end"])
            dtype = str(item.get("embed_dtype", "float32"))
            endian = str(item.get("endianness", "little"))
            got = tuple(int(x) for x in item["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteEngineError(f"{where}: item {n} metadata is malformed: {exc}") from None
        if got != shape:
            raise RemoteEngineError(f"{where}: item {n} has shape {got}, expected {shape}")
        if dtype != "float32" or endian != "little":
            raise RemoteEngineError(f"{where}: item {n} is {dtype}/{endian}, not float32/little")
        if not 0 <= start <= end <= len(body):
            raise RemoteEngineError(
                f"{where}: item {n} spans bytes {start}..{end} of a {len(body)}-byte body"
                " (truncated)"
            )
        rows.append(_frombuffer(body[start:end], shape, f"{where}: item {n}"))
    return rows


def _frombuffer(raw: bytes, shape: tuple[int, int], what: str) -> RowsArray:
    want = shape[0] * shape[1] * 4
    if len(raw) != want:
        raise RemoteEngineError(
            f"{what} has {len(raw)} bytes, expected {want} ({shape[0]} tokens × {shape[1]} "
            "dims × 4): truncated or not token_embed float32"
        )
    out: RowsArray = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    return out
