"""Images through the real vLLM CPU engine: a tiny random Qwen2.5-VL (Jina v4's architecture)
against transformers on real images (scikit-image's samples), the vision rows, mixed batches,
bad images, and text models refusing images."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import _vlm
from vllm_retrieval import Encoder, ImageError, MultimodalItem

pytestmark = pytest.mark.skipif(_vlm.missing() is not None, reason=str(_vlm.missing()))
COS = 0.9999
VISION_START, IMAGE_PAD, VISION_END = 151652, 151655, 151653


def _images() -> dict[str, Any]:
    skimage = pytest.importorskip("skimage.data")
    from PIL import Image

    return {
        name: Image.fromarray(getattr(skimage, name)())
        for name in ("astronaut", "coffee", "chelsea", "rocket")
    }


@pytest.fixture(scope="session")
def vlm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _vlm.build_qwen25_vl(tmp_path_factory.mktemp("vlm") / "tiny-qwen25-vl")


@pytest.fixture(scope="session")
def jina(vlm_path: Path) -> Iterator[Encoder]:
    """The Jina v4 profile on the tiny checkpoint (one engine, shared by every profile)."""
    enc = Encoder(model=str(vlm_path), profile="jina-v4", dtype="float32").start()
    yield enc
    enc.close()


@pytest.fixture(scope="session")
def reference(vlm_path: Path) -> Any:
    """transformers' last hidden states of one prompt (the parity reference)."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(vlm_path, dtype=torch.float32)
    model.eval()
    processor = AutoProcessor.from_pretrained(vlm_path)

    def run(prompt: str, image: Any = None) -> tuple[np.ndarray, list[int]]:
        inputs = processor(
            text=[prompt],
            images=None if image is None else [image],
            return_tensors="pt",
            return_mm_token_type_ids=True,
        )
        with torch.no_grad():
            rows = model.model(**inputs).last_hidden_state[0].float().numpy()
        return rows, inputs["input_ids"][0].tolist()

    return run


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cos_rows(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((_unit(a) * _unit(b)).sum(-1).min())


def test_profiles_are_detected_and_named(vlm_path: Path) -> None:
    generic = Encoder(model=str(vlm_path))
    assert generic.model_profile.kind == "vlm" and generic.model_profile.takes_images
    jina = Encoder(model=str(vlm_path), profile="jina-v4")
    prof = jina.model_profile
    assert (prof.kind, prof.query_prefix, prof.document_prefix) == (
        "jina-v4",
        "Query: ",
        "Document: ",
    )
    assert prof.vision_rows_only and prof.vision_ids == (VISION_START, IMAGE_PAD, VISION_END)
    with pytest.raises(ValueError, match="jina-v4"):
        Encoder(model=str(vlm_path), profile="openclip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ColQwen3-style checkpoint"):
        Encoder(model=str(vlm_path), profile="colqwen")
    with pytest.raises(ValueError, match="does not fit"):
        Encoder(profile="colbert")


def test_image_parity_with_transformers_and_vision_rows(jina: Encoder, reference: Any) -> None:
    images = _images()
    dense, tokens = jina.encode_images(list(images.values()))
    assert dense.shape == (len(images), 64)
    for n, img in enumerate(images.values()):
        prompt = (jina.model_profile.image_prompt or "").replace("{text}", "Describe the image.")
        rows, ids = reference(prompt, img)
        start, stop = ids.index(VISION_START), ids.index(VISION_END) + 1
        vision = rows[start:stop]
        assert ids[start + 1 : stop - 1] == [IMAGE_PAD] * (stop - start - 2)
        # Token vectors: exactly the vision rows, each L2-normalised.
        assert _cos_rows(tokens[n], vision) >= COS
        # Dense: float mean of the raw vision rows, then L2.
        want = _unit(vision.astype(np.float64).mean(0))
        assert float(dense[n] @ want) >= COS
        assert abs(float(np.linalg.norm(dense[n])) - 1.0) < 1e-5
    one = jina.encode_items([images["astronaut"]])[0]
    assert one.token_ids[0] == VISION_START and one.token_ids[-1] == VISION_END
    assert one.token_ids.count(IMAGE_PAD) == one.tokens.shape[0] - 2


def test_text_parity_and_prefixes(jina: Encoder, reference: Any) -> None:
    dense, tokens = jina.encode_queries(["what is on the moon?"])
    rows, ids = reference("Query: what is on the moon?")
    assert _cos_rows(tokens[0], rows) >= COS
    assert float(dense[0] @ _unit(rows.astype(np.float64).mean(0))) >= COS
    assert jina.token_ids(["what is on the moon?"], is_query=True)[0] == ids


def test_text_with_image_pools_every_row(jina: Encoder, reference: Any) -> None:
    img = _images()["coffee"]
    fused = jina.encode_documents([MultimodalItem(text="a cup of coffee", image=img)])
    prompt = (jina.model_profile.image_prompt or "").replace("{text}", "Document: a cup of coffee")
    rows, _ = reference(prompt, img)
    assert float(fused[0][0] @ _unit(rows.astype(np.float64).mean(0))) >= COS
    assert _cos_rows(fused[1][0], rows) >= COS
    # Both signals count: changing the text or the image changes the vector.
    other_text = jina.encode_documents([MultimodalItem(text="a rocket launch", image=img)])[0][0]
    other_image = jina.encode_documents(
        [MultimodalItem(text="a cup of coffee", image=_images()["rocket"])]
    )[0][0]
    for other in (other_text, other_image):
        assert float(fused[0][0] @ other) < 0.99999


def test_generic_vlm_pooling(vlm_path: Path, jina: Encoder, reference: Any) -> None:
    img = _images()["chelsea"]
    last = Encoder(model=str(vlm_path), profile="vlm", pooling="last", dtype="float32")
    dense, tokens = last.encode_images([img])
    template = last.model_profile.image_prompt or ""
    rows, _ = reference(template.replace("{text}", "Describe the image."), img)
    assert float(dense[0] @ _unit(rows[-1])) >= COS
    assert _cos_rows(tokens[0], rows) >= COS  # every row, not just the vision rows
    assert last.engine is jina.engine  # same checkpoint and engine settings: one engine


def test_mixed_batches_keep_order(jina: Encoder) -> None:
    imgs = _images()
    items: list[Any] = [
        "a text",
        imgs["astronaut"],
        MultimodalItem(text="with a caption", image=imgs["rocket"]),
        MultimodalItem(text="text only"),
        "another text",
    ]
    dense, tokens = jina.encode_documents(items)
    for n, item in enumerate(items):
        one_dense, one_tokens = jina.encode_documents([item])
        assert float(dense[n] @ one_dense[0]) >= COS
        assert tokens[n].shape == one_tokens[0].shape
    adense, _ = asyncio.run(jina.aencode_documents(items))
    assert np.allclose(adense, dense, atol=1e-5)
    assert np.allclose(asyncio.run(jina.aembed_images([imgs["astronaut"]])), dense[1:2], atol=1e-5)


def test_image_sources_and_modes(jina: Encoder, tmp_path: Path) -> None:
    import base64

    img = _images()["coffee"]
    path = tmp_path / "coffee.png"
    img.save(path)
    raw = path.read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(raw).decode()
    dense = jina.embed_images([img, path, raw, uri, str(path)])
    assert np.allclose(dense, dense[0], atol=1e-5)  # lossless PNG: the same pixels each time
    # Other modes are converted to RGB and encoded, never rejected; big images are resized.
    for mode in ("RGBA", "L", "CMYK", "P", "I;16"):
        converted = img.convert(mode) if mode != "I;16" else img.convert("L").convert("I;16")
        assert jina.embed_images([converted]).shape == (1, 64)
    big = img.resize((2000, 1500))
    assert jina.embed_images_tokens([big])[0].shape[0] <= 64 + 2


@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        (b"", ImageError, "zero bytes"),
        (b"not an image at all", ImageError, "not a readable image"),
        ("data:image/png;base64,!!!", ImageError, "base64"),
        (Path("/no/such/image.png"), ImageError, "no image file"),
        (12, TypeError, "PIL image, a path, bytes or a data: URI"),
    ],
)
def test_bad_images_are_typed_errors(jina: Encoder, bad: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        jina.embed_images([bad])


def test_truncated_and_zero_size_images(jina: Encoder) -> None:
    from PIL import Image

    buf = io.BytesIO()
    _images()["rocket"].save(buf, format="PNG")
    with pytest.raises(ImageError, match=r"truncated or damaged|not a readable"):
        jina.embed_images([buf.getvalue()[: len(buf.getvalue()) // 2]])
    with pytest.raises(ImageError, match="zero size"):
        jina.embed_images([Image.new("RGB", (0, 5))])
    with pytest.raises(TypeError, match="single"):
        jina.embed_images(_images()["rocket"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a text, an image"):
        MultimodalItem()


def test_text_models_refuse_images(encoder: Encoder) -> None:
    img = _images()["coffee"]
    with pytest.raises(ValueError, match="not a vision-language model"):
        encoder.embed_images([img])
    with pytest.raises(ValueError, match="not a vision-language model"):
        encoder.encode_documents([MultimodalItem(text="x", image=img)])


def test_reranker_scores_images_by_maxsim_over_patches(jina: Encoder) -> None:
    from vllm_retrieval import MaxSimReranker
    from vllm_retrieval.scoring import maxsim_reference

    imgs = _images()
    docs: list[Any] = [imgs["coffee"], "a cup of coffee", imgs["rocket"], imgs["coffee"]]
    reranker = MaxSimReranker(encoder=jina, cache_size=8)
    ranked = reranker.rerank("coffee", docs)
    q = jina.embed_query_tokens("coffee")
    want = maxsim_reference(q, jina.encode_documents(docs)[1])
    assert sorted(r.index for r in ranked) == [0, 1, 2, 3]
    for r in ranked:
        assert abs(r.score - float(want[r.index])) < 1e-4
    # Equal images hit the cache: three distinct documents were encoded once each.
    assert reranker.cache_info["size"] == 3
    again = asyncio.run(reranker.arerank("coffee", docs))
    assert [(r.index, round(r.score, 4)) for r in again] == [
        (r.index, round(r.score, 4)) for r in ranked
    ]


def test_explain_maps_query_tokens_to_image_patches(jina: Encoder) -> None:
    from vllm_retrieval import MaxSimReranker

    img = _images()["astronaut"]  # 512 x 512 -> resized to 224 x 224 -> 8 x 8 merged patches
    assert jina.image_grid(img) == (8, 8)
    reranker = MaxSimReranker(encoder=jina)
    exp = reranker.explain("an astronaut in a suit", img)
    assert exp.grid == (8, 8)
    assert exp.similarities.shape == (len(exp.query_tokens), 8 * 8 + 2)
    assert abs(exp.score - reranker.rerank("an astronaut in a suit", [img])[0].score) < 1e-4
    for m in exp.matches:
        if m.patch is None:  # the <|vision_start|> / <|vision_end|> rows
            assert m.document_position in (0, 8 * 8 + 1)
        else:
            row, col = m.patch
            assert 0 <= row < 8 and 0 <= col < 8
            assert m.document_position == 1 + row * 8 + col


def test_store_keeps_image_documents_and_text_queries_find_them(
    jina: Encoder, tmp_path: Path
) -> None:
    from vllm_retrieval import MultiVectorStore
    from vllm_retrieval.scoring import maxsim_reference

    imgs = _images()
    path = tmp_path / "rocket.png"
    imgs["rocket"].save(path)
    store = MultiVectorStore(path=tmp_path / "idx", encoder=jina)
    ids = store.add_images(
        [path, imgs["coffee"], imgs["chelsea"]],
        metadatas=[{"kind": "photo"}, {"kind": "photo"}, None],
        ids=["rocket", "coffee", "cat"],
        captions=[None, "a cup of coffee", None],
        keep_pixels=False,
    )
    ids += store.add_images([imgs["astronaut"]], ids=["astronaut"], keep_pixels=True)
    store.add_texts(["a text document about rockets"], ids=["text"])
    assert len(store) == 5
    got = {h.id: h for h in store.get(ids)}
    assert got["rocket"].metadata == {"kind": "photo", "image": str(path.resolve())}
    assert got["coffee"].text == "a cup of coffee" and "image" not in got["coffee"].metadata
    assert got["astronaut"].metadata["image"].startswith("data:image/png;base64,")
    # The stored patch vectors are the encoder's; MaxSim ranks images for a text query.
    tokens = store.get_tokens(["rocket", "cat"])
    want = jina.encode_documents([path, imgs["chelsea"]])[1]
    for a, b in zip(tokens, want, strict=True):
        assert _cos_rows(a, b) >= COS
    hits = store.search("a rocket launch", k=5, mode="maxsim")
    q = jina.embed_query_tokens("a rocket launch")
    all_ids = [h.id for h in hits]
    ref = maxsim_reference(q, store.get_tokens(all_ids))
    assert [round(h.score, 3) for h in hits] == [round(float(x), 3) for x in ref]
    assert all_ids == [all_ids[i] for i in np.argsort(-ref, kind="stable")]
    store.close()
    with MultiVectorStore.open(tmp_path / "idx") as again:  # the encoder is rebuilt as jina-v4
        assert again.encoder.model_profile.kind == "jina-v4"
        assert [h.id for h in again.search("a rocket launch", k=5, mode="maxsim")] == all_ids


def test_text_store_refuses_images(encoder: Encoder, tmp_path: Path) -> None:
    from vllm_retrieval import MultiVectorStore, StoreError

    with MultiVectorStore(path=tmp_path / "idx", encoder=encoder) as store:
        with pytest.raises(StoreError, match="takes no images"):
            store.add_images([_images()["coffee"]])
        assert len(store) == 0


def test_cli_indexes_images_and_pdf_pages_and_searches_them(vlm_path: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from vllm_retrieval.cli import STEP_MARK

    pytest.importorskip("pypdfium2")
    imgs = _images()
    folder = tmp_path / "pages"
    (folder / "photos").mkdir(parents=True)
    imgs["rocket"].save(folder / "photos" / "rocket.png")
    imgs["coffee"].convert("RGB").save(folder / "photos" / "coffee.jpg")
    imgs["astronaut"].save(
        folder / "report.pdf", save_all=True, append_images=[imgs["chelsea"]]
    )  # a two-page PDF
    index = tmp_path / "idx"
    steps = [
        f"index --index {index} --model {vlm_path} --profile jina-v4 {folder} --no-progress",
        f"search --index {index} 'a rocket launch' -k 5 --mode maxsim --json",
        f"index --index {index} {folder} --no-progress",  # everything already stored
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_retrieval.cli", "steps", *steps],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = [p.split("\n", 1)[1] for p in proc.stdout.split(STEP_MARK)[1:]]
    assert "indexed 4 new documents" in outs[0], outs[0]
    hits = json.loads(outs[1])["results"]
    ids = {h["id"] for h in hits}
    assert ids == {
        "photos/rocket.png",
        "photos/coffee.jpg",
        "report.pdf#page=1",
        "report.pdf#page=2",
    }
    page = next(h for h in hits if h["id"] == "report.pdf#page=2")
    assert page["metadata"]["page"] == 2 and page["metadata"]["image"].endswith("report.pdf#page=2")
    assert "indexed 0 new documents" in outs[2] and "skipped 4" in outs[2], outs[2]


def test_framework_embeddings_embed_images(jina: Encoder, tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    import base64

    from vllm_retrieval.langchain import VLLMEmbeddings
    from vllm_retrieval.llama_index import VLLMEmbedding

    img = _images()["rocket"]
    path = tmp_path / "rocket.png"
    img.save(path)
    want = jina.embed_images([path])[0]
    uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    lc = VLLMEmbeddings(encoder=jina)
    for vec in lc.embed_image([str(path), uri]) + asyncio.run(lc.aembed_image([str(path)])):
        assert float(np.dot(vec, want)) >= COS
    li = VLLMEmbedding(encoder=jina)
    assert float(np.dot(li.get_image_embedding(str(path)), want)) >= COS
    assert float(np.dot(li.get_image_embedding(io.BytesIO(path.read_bytes())), want)) >= COS
    batch = li.get_image_embedding_batch([str(path), str(path)])
    assert len(batch) == 2 and float(np.dot(batch[1], want)) >= COS
    assert float(np.dot(asyncio.run(li.aget_image_embedding(str(path))), want)) >= COS
    # Text methods are unchanged: the same vectors as the encoder's.
    assert float(np.dot(li.get_query_embedding("a rocket"), jina.embed_query("a rocket"))) >= COS


def test_framework_vector_stores_index_and_find_images(jina: Encoder, tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    import base64

    from llama_index.core.schema import ImageNode, TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery

    from vllm_retrieval import MultiVectorStore
    from vllm_retrieval.langchain import VLLMMultiVectorStore as LCStore
    from vllm_retrieval.llama_index import VLLMMultiVectorStore as LIStore

    imgs = _images()
    path = tmp_path / "rocket.png"
    imgs["rocket"].save(path)
    buf = io.BytesIO()
    imgs["coffee"].save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    # LangChain: add_images(uris), like LangChain's multimodal vector stores.
    lc = LCStore(store=MultiVectorStore(path=tmp_path / "lc", encoder=jina))
    ids = lc.add_images([str(path), uri], metadatas=[{"n": 1}, {"n": 2}], ids=["r", "c"])
    assert ids == ["r", "c"]
    docs = lc.similarity_search("a rocket", k=2, mode="maxsim")
    assert {d.id for d in docs} == {"r", "c"}
    by_id = {d.id: d for d in docs}
    assert by_id["r"].metadata["image"] == str(path.resolve()) and by_id["r"].metadata["n"] == 1
    assert by_id["c"].metadata["image"] == uri and by_id["c"].page_content == ""

    # LlamaIndex: ImageNodes go through the store's add_images and come back as ImageNodes.
    li = LIStore(store=MultiVectorStore(path=tmp_path / "li", encoder=jina))
    nodes = [
        ImageNode(id_="img-path", image_path=str(path), metadata={"kind": "photo"}),
        ImageNode(id_="img-b64", image=base64.b64encode(buf.getvalue()).decode(), text="coffee"),
        TextNode(id_="txt", text="a rocket on its launch pad"),
    ]
    assert li.add(nodes) == ["img-path", "img-b64", "txt"]
    res = li.query(VectorStoreQuery(query_str="a rocket", similarity_top_k=3, mode="default"))
    got = {n.node_id: n for n in res.nodes}
    assert set(got) == {"img-path", "img-b64", "txt"}
    assert isinstance(got["img-path"], ImageNode) and got["img-path"].image_path == str(path)
    assert got["img-b64"].text == "coffee"
    # The stored vectors of an image node are its image's (caption fused for img-b64).
    stored = li._store.get_tokens(["img-path"])[0]
    assert _cos_rows(stored, jina.embed_images_tokens([path])[0]) >= COS
    with pytest.raises(ValueError, match="is not fetched"):
        li.add([ImageNode(id_="web", image_url="https://example.org/x.png")])


# -- images over a real `vllm serve` of the same checkpoint --------------------------------------


@pytest.fixture(scope="module")
def vlm_server(vlm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vllm serve`` of the tiny checkpoint as the README documents it for images (request
    chat templates allowed), on 127.0.0.1; killed with its engine processes afterwards."""
    from _vllm_server import free_port, kill, start_vllm, wait_healthy
    from vllm_retrieval import shutdown_remote_engines

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("vlm-server") / "server.log"
    proc = start_vllm(str(vlm_path), port, log, "--trust-request-chat-template")
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        shutdown_remote_engines()
        kill(proc)


def test_images_over_a_real_server_equal_the_in_process_engine(
    jina: Encoder, vlm_path: Path, vlm_server: str
) -> None:
    images = list(_images().values())[:2]
    with Encoder(model=str(vlm_path), profile="jina-v4", base_url=vlm_server, timeout=300) as rem:
        dense, tokens = rem.encode_images(images)
        q_dense, q_tokens = rem.encode_queries(["an astronaut in a white suit"])
    want_dense, want_tokens = jina.encode_images(images)
    want_q_dense, want_q_tokens = jina.encode_queries(["an astronaut in a white suit"])
    np.testing.assert_allclose(dense, want_dense, atol=1e-5)
    np.testing.assert_allclose(q_dense, want_q_dense, atol=1e-5)
    for got, want in zip([*tokens, *q_tokens], [*want_tokens, *want_q_tokens], strict=True):
        assert got.shape == want.shape  # the same vision rows (<|vision_start|>..<|vision_end|>)
        np.testing.assert_allclose(got, want, atol=1e-5)


# -- the other Qwen-VL families (generic ``vlm`` profile): parity with transformers -------------


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_other_qwen_vl_families_match_transformers(family: str, tmp_path: Path) -> None:
    """Qwen2-VL and Qwen3-VL (interleaved M-RoPE, deepstack) under the generic profile: every
    row of an image prompt and of a text equals transformers' last hidden state, and the
    dense vector is their mean. One engine per family, stopped at the end."""
    import torch
    import transformers

    path = getattr(_vlm, f"build_{family}")(tmp_path / family)
    model_cls = {
        "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
        "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
    }[family]
    model = model_cls.from_pretrained(path, dtype=torch.float32).eval()
    processor = transformers.AutoProcessor.from_pretrained(path)
    images = [_images()["astronaut"], _images()["coffee"]]
    with Encoder(model=str(path), profile="vlm", dtype="float32") as enc:
        assert enc.model_profile.kind == "vlm"
        dense, tokens = enc.encode_images(images)
        t_dense, t_tokens = enc.encode_documents(["Late interaction scores every token."])
        template = (enc.model_profile.image_prompt or "").replace("{text}", "Describe the image.")
        for n, img in enumerate(images):
            inputs = processor(
                text=[template], images=[img], return_tensors="pt", return_mm_token_type_ids=True
            )
            with torch.no_grad():
                rows = model.model(**inputs).last_hidden_state[0].float().numpy()
            assert inputs["input_ids"][0].tolist().count(IMAGE_PAD) == np.prod(enc.image_grid(img))
            assert _cos_rows(tokens[n], rows) >= COS  # every row (the generic profile)
            assert float(dense[n] @ _unit(rows.astype(np.float64).mean(0))) >= COS
        text_ids = enc.encode_items(["Late interaction scores every token."])[0].token_ids
        with torch.no_grad():
            rows = model.model(input_ids=torch.tensor([text_ids])).last_hidden_state[0].numpy()
        assert _cos_rows(t_tokens[0], rows) >= COS
        assert float(t_dense[0] @ _unit(rows.astype(np.float64).mean(0))) >= COS


# -- ColQwen3-style retrievers (Qwen3-VL + projection head) -------------------------------------


@pytest.mark.parametrize("declare_dim", [True, False], ids=["embed_dim", "no-embed_dim"])
def test_colqwen3_rows_keep_the_projection_bias(declare_dim: bool, tmp_path: Path) -> None:
    """Every row is transformers' Qwen3-VL hidden state through the checkpoint's projection
    (weight AND bias), L2-normalised; the dense vector is their mean. vLLM 0.32's own ColQwen3
    drops the bias when config.json declares ``embed_dim`` and cannot load it when it does not:
    the profile runs our model class, which keeps it (the bias is large here, so dropping it
    would fail the parity below)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    path = _vlm.build_colqwen3(tmp_path / "colqwen3", declare_dim=declare_dim)
    model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(path)
    head = load_file(path / "model.safetensors")
    weight, bias = head["custom_text_proj.weight"], head["custom_text_proj.bias"]

    def project(hidden: Any, with_bias: bool = True) -> np.ndarray:
        out = hidden @ weight.T + (bias if with_bias else 0)
        return _unit(out.numpy().astype(np.float64))

    image = _images()["coffee"]
    text = "Late interaction scores every token."
    with Encoder(model=str(path), dtype="float32") as enc:
        prof = enc.model_profile
        assert prof.kind == "colqwen" and prof.takes_images and not prof.vision_rows_only
        dense, tokens = enc.encode_images([image])
        t_dense, t_tokens = enc.encode_documents([text])
        template = (prof.image_prompt or "").replace("{text}", prof.image_text)
        inputs = processor(
            text=[template], images=[image], return_tensors="pt", return_mm_token_type_ids=True
        )
        text_ids = enc.encode_items([text])[0].token_ids
        with torch.no_grad():
            rows = model.model(**inputs).last_hidden_state[0]
            t_rows = model.model(input_ids=torch.tensor([text_ids])).last_hidden_state[0]
    assert tokens[0].shape == (len(inputs["input_ids"][0]), 32)  # every row, projected to 32
    for got, hidden, vec in ((tokens[0], rows, dense[0]), (t_tokens[0], t_rows, t_dense[0])):
        want = project(hidden)
        assert _cos_rows(got, want) >= COS
        assert _cos_rows(got, project(hidden, with_bias=False)) < 0.99  # the bias is there
        assert float(vec @ _unit(want.mean(0))) >= COS
