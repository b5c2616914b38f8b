"""ColBERT handling on a generated tiny HF_ColBERT model, against a transformers reference."""

from __future__ import annotations

import json
import shutil
import string
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vllm_retrieval import Encoder
from vllm_retrieval.encoding.profiles import default_model_path

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

DIM = 32
QUERY_LEN = 32
DOC_LEN = 64


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 64, 2 heads) + ColBERT projection, saved like HF_ColBERT."""
    out = tmp_path_factory.mktemp("tiny-colbert")
    packaged = Path(default_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(packaged / name, out / name)
    vocab_size = sum(1 for _ in (packaged / "vocab.txt").open(encoding="utf-8"))
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    linear = torch.nn.Linear(64, DIM, bias=False)
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    state["linear.weight"] = linear.weight.detach().contiguous()
    from safetensors.torch import save_file

    save_file(state, str(out / "model.safetensors"))
    cfg = config.to_dict()
    # Like colbert-ir checkpoints, the projection width is known from the weights only (vLLM
    # 0.32 fails to build ColBERTModel when config.json names it).
    cfg.update({"architectures": ["HF_ColBERT"], "model_type": "bert"})
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "artifact.metadata").write_text(
        json.dumps(
            {
                "query_token_id": "[unused0]",
                "doc_token_id": "[unused1]",
                "query_maxlen": QUERY_LEN,
                "doc_maxlen": DOC_LEN,
                "mask_punctuation": True,
            }
        )
    )
    return out


@pytest.fixture(scope="module")
def colbert(colbert_dir: Path) -> Iterator[Encoder]:
    enc = Encoder(model=str(colbert_dir)).start()
    yield enc
    enc.close()  # free the tiny model's engine for the rest of the session


def _reference(model_dir: Path, ids: list[int]) -> np.ndarray:
    from safetensors.torch import load_file

    config = transformers.BertConfig.from_pretrained(str(model_dir))
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    state = load_file(str(model_dir / "model.safetensors"))
    bert.load_state_dict(
        {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    )
    with torch.no_grad():
        hidden = bert(input_ids=torch.tensor([ids])).last_hidden_state[0]
        projected = hidden @ state["linear.weight"].T
        out = torch.nn.functional.normalize(projected, dim=-1)
    return out.numpy()


def test_profile_is_colbert(colbert: Encoder) -> None:
    prof = colbert.model_profile
    tok = colbert.tokenizer
    assert prof.kind == "colbert"
    assert prof.query_marker_id == tok.convert_tokens_to_ids("[unused0]")
    assert prof.document_marker_id == tok.convert_tokens_to_ids("[unused1]")
    assert prof.query_length == QUERY_LEN and prof.mask_token_id == tok.mask_token_id
    assert tok.convert_tokens_to_ids(",") in prof.skip_ids


def test_query_ids_have_marker_and_mask_expansion(colbert: Encoder) -> None:
    tok = colbert.tokenizer
    ids = colbert.token_ids(["What is ColBERT?"], is_query=True)[0]
    assert len(ids) == QUERY_LEN
    assert ids[0] == tok.cls_token_id and ids[1] == tok.convert_tokens_to_ids("[unused0]")
    body = tok("What is ColBERT?", add_special_tokens=False)["input_ids"]
    assert ids[2 : 2 + len(body)] == body and ids[2 + len(body)] == tok.sep_token_id
    assert set(ids[3 + len(body) :]) == {tok.mask_token_id}
    long_ids = colbert.token_ids([" ".join(["word"] * 100)], is_query=True)[0]
    assert len(long_ids) == QUERY_LEN and long_ids[-1] == tok.sep_token_id


def test_query_tokens_equal_transformers_reference(colbert: Encoder, colbert_dir: Path) -> None:
    query = "Do late interaction models beat dense retrievers?"
    ids = colbert.token_ids([query], is_query=True)[0]
    ours = colbert.embed_query_tokens(query)
    ref = _reference(colbert_dir, ids)
    assert ours.shape == (QUERY_LEN, DIM) == ref.shape
    cos = np.sum(ours * ref, axis=1)
    assert cos.min() >= 0.9999


def test_document_tokens_skip_punctuation(colbert: Encoder, colbert_dir: Path) -> None:
    doc = "ColBERT, a late-interaction model: it scores (query, document) pairs; fast!"
    tok = colbert.tokenizer
    ids = colbert.token_ids([doc], is_query=False)[0]
    assert ids[0] == tok.cls_token_id and ids[1] == tok.convert_tokens_to_ids("[unused1]")
    assert ids[-1] == tok.sep_token_id
    punct = {tok.convert_tokens_to_ids(p) for p in string.punctuation}
    keep = [i for i, t in enumerate(ids) if t not in punct]
    assert len(keep) < len(ids)  # the document does have punctuation rows to drop
    ours = colbert.embed_documents_tokens([doc])[0]
    ref = _reference(colbert_dir, ids)[keep]
    assert ours.shape == ref.shape == (len(keep), DIM)
    assert np.sum(ours * ref, axis=1).min() >= 0.9999


def test_documents_are_truncated_to_doc_maxlen(colbert: Encoder) -> None:
    ids = colbert.token_ids([" ".join(["token"] * 500)], is_query=False)[0]
    assert len(ids) == DOC_LEN
    assert colbert.embed_documents_tokens([" ".join(["token"] * 500)])[0].shape == (DOC_LEN, DIM)


def test_colbert_dense_is_pooled_from_the_same_pass(colbert: Encoder, colbert_dir: Path) -> None:
    doc = "Dense and token vectors from one forward pass"
    ids = colbert.token_ids([doc], is_query=False)[0]
    dense = colbert.embed_documents([doc])[0]
    ref_rows = _reference(colbert_dir, ids)  # normalised rows; pooling uses the raw projection
    assert dense.shape == (DIM,)
    np.testing.assert_allclose(np.linalg.norm(dense), 1.0, atol=1e-5)
    assert float(dense @ (ref_rows.mean(0) / np.linalg.norm(ref_rows.mean(0)))) > 0.9
