"""Images over a remote ``vllm serve``: chat ``messages`` carrying ``image_url`` data URIs.

The Encoder builds an image prompt from the model profile (token ids with one placeholder per
image, as for the in-process engine). Here it becomes one chat conversation: the images as
lossless PNG data URIs, and one text part, the prompt itself (decoded); a request chat
template renders that text verbatim, so the server runs exactly the in-process prompt. The
server must be started with ``--trust-request-chat-template`` (vLLM refuses request
templates otherwise).

``POST /tokenize`` with those messages gives the *expanded* ids (one placeholder becomes one id
per merged image patch); they must be the prompt's ids with placeholders repeated, else the
server's tokenizer differs (:class:`~vllm_retrieval.errors.RemoteModelMismatchError`).
``POST /pooling`` with the same messages and ``task="token_embed"`` gives their rows.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ...errors import (
    RemoteEngineError,
    RemoteMalformedResponseError,
    RemoteModelMismatchError,
    require,
)
from .base import ImagePrompt, ImageRows
from .remote_client import RemoteHTTP
from .remote_wire import decode_rows, error_detail, parse_json

__all__ = ["CHAT_TEMPLATE", "RemoteImages", "chat_messages", "data_uri", "expands"]

# Renders the text parts of the messages verbatim (the image parts are in the text already,
# as the model's placeholder tokens).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endfor %}"
)
_REJECTED = frozenset(range(400, 500)) - {401, 403}


def data_uri(image: Any) -> str:
    """A ``data:image/png;base64,...`` URI of a PIL image (lossless: the same pixels)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_messages(text: str, images: Sequence[Any]) -> list[dict[str, Any]]:
    """One user message: the images as data URIs, then the prompt text."""
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": data_uri(img)}} for img in images
    ]
    parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def expands(prompt: Sequence[int], expanded: Sequence[int]) -> bool:
    """Whether ``expanded`` is ``prompt`` with some of its tokens repeated in place."""
    i = 0
    for j, token in enumerate(expanded):
        if i < len(prompt) and token == prompt[i]:
            i += 1
        elif not (i > 0 and token == prompt[i - 1] == expanded[j - 1]):
            return False
    return i == len(prompt)


class RemoteImages:
    """Image prompts to one server (the engine's HTTP clients, deadline and retries)."""

    def __init__(self, http: RemoteHTTP, model_path: str) -> None:
        self._http = http
        self._model_path = model_path
        self._decode: Callable[[list[int]], str] | None = None

    def _load_decoder(self) -> Callable[[list[int]], str]:
        if self._decode is None:
            transformers = require("transformers", "cpu")
            tok = transformers.AutoTokenizer.from_pretrained(self._model_path)

            def decode(ids: list[int]) -> str:
                return str(
                    tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                )

            self._decode = decode
        return self._decode

    def _rejected(self, resp: httpx.Response, where: str) -> RemoteEngineError:
        message = f"{where} answered {resp.status_code}: {error_detail(resp, self._http.scrub)}"
        if resp.status_code == 404:
            return RemoteModelMismatchError(message)
        return RemoteEngineError(
            f"{message} (image prompts need a vision-language model served with "
            "--trust-request-chat-template)"
        )

    async def rows(self, model: str, dim: int, prompt: ImagePrompt, timeout: float) -> ImageRows:
        """The raw rows of one image prompt and the expanded ids they belong to; both requests
        (retries included) within ``timeout`` seconds of the prompt being ready to send."""
        decode = self._decode
        if decode is None:  # the first image: load the tokenizer off the event loop
            decode = await asyncio.to_thread(self._load_decoder)
        text = decode(list(prompt.token_ids))
        messages = await asyncio.to_thread(chat_messages, text, prompt.images)
        chat = {
            "model": model,
            "messages": messages,
            "chat_template": CHAT_TEMPLATE,
            "add_generation_prompt": False,
            "add_special_tokens": False,
        }
        url = self._http.url
        deadline = asyncio.get_running_loop().time() + timeout
        where = f"vLLM server {url}: POST /tokenize"
        resp = await self._http.request(
            "POST", "/tokenize", body=chat, deadline=deadline, accept=_REJECTED
        )
        if resp.status_code >= 400:
            raise self._rejected(resp, where)
        payload = parse_json(resp, where)
        ids = payload.get("tokens") if isinstance(payload, dict) else None
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise RemoteMalformedResponseError(f"{where} answered no token list")
        if not expands(prompt.token_ids, ids):
            raise RemoteModelMismatchError(
                f"vLLM server {url} tokenised an image prompt of {len(prompt.token_ids)} ids "
                f"into {len(ids)} ids that are not its placeholders expanded: its tokenizer "
                f"differs from the local model {self._model_path!r}"
            )
        body = {
            **chat,
            "task": "token_embed",
            "use_activation": False,
            "encoding_format": "base64",
            "embed_dtype": "float32",
            "endianness": "little",
        }
        where = f"vLLM server {url}: POST /pooling"
        resp = await self._http.request(
            "POST", "/pooling", body=body, deadline=deadline, accept=_REJECTED
        )
        if resp.status_code >= 400:
            raise self._rejected(resp, where)
        rows = decode_rows(resp, parse_json(resp, where), [(len(ids), dim)], "base64", where)
        return ImageRows(rows[0], [int(i) for i in ids])
