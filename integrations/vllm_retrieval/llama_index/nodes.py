"""LlamaIndex nodes to store records and back.

A node written by :class:`~vllm_retrieval.llama_index.VLLMMultiVectorStore` is stored as

* **text**: the node's content as LlamaIndex embeds it (``MetadataMode.EMBED``: the text
  with the metadata not excluded from embedding) — exactly the text its vectors encode;
* **metadata**: LlamaIndex's own ``node_to_metadata_dict`` (the node's metadata at the top
  level, so filters see it; the whole node as JSON in ``_node_content`` with its type,
  relationships and templates; ``ref_doc_id`` / ``doc_id`` / ``document_id``), plus its id
  under ``_node_id``.

Reading back gives the same node (``metadata_dict_to_node``), without its embedding. A
document written by the core (LangChain, the CLI, :func:`index_nodes`) becomes a
``TextNode`` with the stored id, text and metadata; its metadata is marked as excluded from
embedding, since the stored vectors encode the text alone.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from ..store import SearchHit

__all__ = [
    "NODE_CONTENT_KEY",
    "NODE_ID_KEY",
    "hit_to_node",
    "image_record",
    "image_source",
    "node_record",
]

NODE_ID_KEY = "_node_id"
NODE_CONTENT_KEY = "_node_content"


def node_record(node: BaseNode) -> tuple[str, dict[str, Any]]:
    """``(text to encode and store, metadata)`` for a node; the node is not modified."""
    if not isinstance(node, BaseNode):
        raise TypeError(f"expected LlamaIndex Nodes, got {type(node).__name__}")
    text = node.get_content(metadata_mode=MetadataMode.EMBED)
    if not text or not text.strip():
        raise ValueError(f"node {node.node_id!r} has no text to index")
    metadata = node_to_metadata_dict(node, remove_text=False, flat_metadata=False)
    metadata[NODE_ID_KEY] = node.node_id
    return text, metadata


def image_source(node: BaseNode) -> Any | None:
    """The image an ``ImageNode`` / ``ImageDocument`` carries (None: not an image node, or
    one without an image): its base64 ``image``, its ``image_path``, or a ``data:``
    ``image_url`` (other URLs cannot be fetched here: a clear ``ValueError``)."""
    if not isinstance(node, ImageNode):
        return None
    if node.image:
        try:
            return base64.b64decode(node.image, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"node {node.node_id!r}: image is not valid base64") from None
    if node.image_path:
        return Path(node.image_path)
    if node.image_url:
        if str(node.image_url).startswith("data:"):
            return str(node.image_url)
        raise ValueError(
            f"node {node.node_id!r}: image_url {str(node.image_url)[:80]!r} is not fetched; "
            "give image_path or image (base64)"
        )
    return None


def image_record(node: BaseNode) -> tuple[str | None, dict[str, Any]]:
    """``(caption or None, metadata)`` of an image node: its own text, if any, is the
    caption (its metadata stays metadata, filterable, not mixed into the image's vectors)."""
    caption = getattr(node, "text", "") or ""
    metadata = node_to_metadata_dict(node, remove_text=False, flat_metadata=False)
    metadata[NODE_ID_KEY] = node.node_id
    return (caption if caption and caption.strip() else None), metadata


def hit_to_node(hit: SearchHit) -> BaseNode:
    """The node a stored document holds (see the module doc)."""
    metadata = dict(hit.metadata or {})
    if NODE_CONTENT_KEY in metadata:
        return metadata_dict_to_node(metadata)
    return TextNode(
        id_=str(hit.id),
        text=hit.text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
    )
