"""Dual encoders (CLIP, SigLIP) through the real vLLM CPU engine: tiny random checkpoints built
in code (tests/_clip.py) against transformers on real images (scikit-image's samples), the
text conventions (CLIP's start/end tokens, SigLIP padded to 64), truncation, mixed batches,
the framework embeddings, and the typed error when token vectors are asked of them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import _clip
from vllm_retrieval import DenseOnlyModelError, Encoder, MaxSimReranker, MultimodalItem

pytestmark = pytest.mark.skipif(_clip.missing() is not None, reason=str(_clip.missing()))
COS = 0.9999
TEXTS = ["a cup of coffee on a saucer", "an astronaut holding a helmet", "a cat on a sofa"]


def _images() -> list[Any]:
    skimage = pytest.importorskip("skimage.data")
    from PIL import Image

    return [Image.fromarray(getattr(skimage, n)()) for n in ("astronaut", "coffee", "chelsea")]


def _unit(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module", params=["clip", "siglip"])
def dual(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Encoder]]:
    """(family, checkpoint, encoder): one engine per family, stopped after its tests."""
    family = str(request.param)
    path = getattr(_clip, f"build_{family}")(tmp_path_factory.mktemp(family) / family)
    with Encoder(model=str(path), dtype="float32") as enc:
        yield family, path, enc


def _reference(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModel, AutoProcessor

    return AutoModel.from_pretrained(
        path, dtype=torch.float32
    ).eval(), AutoProcessor.from_pretrained(path)


def _features(out: Any) -> np.ndarray:
    out = getattr(out, "pooler_output", out)  # transformers 5 may wrap the projection
    return _unit(out.detach().float().numpy())


def test_texts_and_images_equal_transformers(dual: tuple[str, Path, Encoder]) -> None:
    """Texts go in as the checkpoint's own convention (CLIP: start/end tokens; SigLIP: padded
    to 64 with its pad id, ids only, as transformers' ``padding="max_length"``) and every
    vector equals transformers' projected features; images likewise."""
    import torch

    family, path, enc = dual
    prof = enc.model_profile
    assert prof.kind == "clip" and prof.dense_only and prof.takes_images
    model, processor = _reference(path)
    tok = processor.tokenizer
    want_ids = (
        tok(TEXTS)["input_ids"]
        if family == "clip"
        else tok(TEXTS, padding="max_length", max_length=64)["input_ids"]
    )
    assert enc.token_ids(TEXTS, is_query=False) == want_ids
    with torch.no_grad():
        want_text = np.concatenate(
            [_features(model.get_text_features(input_ids=torch.tensor([i]))) for i in want_ids]
        )
        pixels = processor(images=_images(), return_tensors="pt")["pixel_values"]
        want_image = _features(model.get_image_features(pixel_values=pixels))
    got_text = enc.embed_documents(TEXTS)
    got_image = enc.embed_images(_images())
    assert got_text.shape == (3, 64) and got_image.shape == (3, 64)
    assert float((got_text * want_text).sum(-1).min()) >= COS
    assert float((got_image * want_image).sum(-1).min()) >= COS
    np.testing.assert_allclose(enc.embed_query(TEXTS[0]), got_text[0], atol=1e-6)
    assert enc.dimension == 64
    # texts and images in one call keep their order and their vectors
    mixed = enc.encode_items([TEXTS[1], _images()[2], TEXTS[2]])
    np.testing.assert_allclose(mixed[0].dense, got_text[1], atol=1e-5)
    np.testing.assert_allclose(mixed[1].dense, got_image[2], atol=1e-5)
    np.testing.assert_allclose(mixed[2].dense, got_text[2], atol=1e-5)
    # async images
    np.testing.assert_allclose(
        asyncio.run(enc.aembed_images(_images()[:1])), got_image[:1], atol=1e-5
    )


def test_long_texts_are_truncated_to_the_text_tower(dual: tuple[str, Path, Encoder]) -> None:
    import torch

    family, path, enc = dual
    long = " ".join(["retrieval"] * 300)
    ids = enc.token_ids([long], is_query=True)[0]
    assert len(ids) == (77 if family == "clip" else 64)
    assert ids[-1] == enc.model_profile.pad_id or ids[-1] == enc._tokenizer.eos_token_id
    model, _ = _reference(path)
    with torch.no_grad():
        want = _features(model.get_text_features(input_ids=torch.tensor([ids])))[0]
    assert float(enc.embed_query(long) @ want) >= COS


def test_token_vectors_are_a_typed_error_and_the_engine_lives_on(
    dual: tuple[str, Path, Encoder], tmp_path: Path
) -> None:
    from vllm_retrieval import MultiVectorStore

    _, _, enc = dual
    image = _images()[0]
    calls = [
        lambda: enc.embed_documents_tokens(TEXTS),
        lambda: enc.embed_query_tokens("a cat"),
        lambda: enc.encode_documents(TEXTS),
        lambda: enc.encode_queries(["a cat"]),
        lambda: enc.encode_images([image]),
        lambda: enc.embed_images_tokens([image]),
        lambda: enc.image_grid(image),
        lambda: asyncio.run(enc.aembed_query_tokens("a cat")),
        lambda: enc.encode_items(["a cat"])[0].tokens,
        lambda: MaxSimReranker(encoder=enc),
        lambda: MultiVectorStore(path=tmp_path / "idx", encoder=enc),
    ]
    for call in calls:
        with pytest.raises(DenseOnlyModelError, match="dual encoder"):
            call()
    assert not (tmp_path / "idx").exists()  # nothing written
    with pytest.raises(ValueError, match="a text or an image, not both"):
        enc.encode_items([MultimodalItem(text="a cat", image=image)])
    assert enc.embed_query("a cat").shape == (64,)


def test_framework_embeddings(dual: tuple[str, Path, Encoder], tmp_path: Path) -> None:
    """LangChain's ``embed_image`` and LlamaIndex's ``MultiModalEmbedding`` over a dual
    encoder: the same vectors as the encoder's; text methods too."""
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from vllm_retrieval.langchain import VLLMEmbeddings
    from vllm_retrieval.llama_index import VLLMEmbedding

    _, _, enc = dual
    path = tmp_path / "coffee.png"
    _images()[1].save(path)
    want = enc.embed_images([path])[0]
    assert float(np.dot(VLLMEmbeddings(encoder=enc).embed_image([str(path)])[0], want)) >= COS
    li = VLLMEmbedding(encoder=enc)
    assert float(np.dot(li.get_image_embedding(str(path)), want)) >= COS
    text = li.get_text_embedding("a cup of coffee")
    assert float(np.dot(text, enc.embed_documents(["a cup of coffee"])[0])) >= COS
