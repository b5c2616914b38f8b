"""BGE-M3 profile on a generated tiny XLM-R checkpoint laid out like BAAI/bge-m3.

Dense = CLS row, ColBERT vectors = ``colbert_linear`` on every other row, both L2-normalised,
from one forward pass; checked against a transformers reference (FlagEmbedding's recipe).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vllm_retrieval import Encoder
from vllm_retrieval.encoding.profiles import default_model_path

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-bge-m3")
    packaged = Path(default_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(packaged / name, out / name)
    vocab_size = sum(1 for _ in (packaged / "vocab.txt").open(encoding="utf-8"))
    config = transformers.XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=130,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
        type_vocab_size=1,
    )
    torch.manual_seed(1)
    model = transformers.XLMRobertaModel(config, add_pooling_layer=False).eval()
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors")
    )
    torch.save(torch.nn.Linear(64, 64).state_dict(), str(out / "colbert_linear.pt"))
    cfg = config.to_dict()
    cfg["architectures"] = ["BgeM3EmbeddingModel"]
    cfg["position_embedding_type"] = "absolute"  # as in BAAI/bge-m3's config.json
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def _reference(model_dir: Path, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.torch import load_file

    config = transformers.XLMRobertaConfig.from_pretrained(str(model_dir))
    model = transformers.XLMRobertaModel(config, add_pooling_layer=False).eval()
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    linear = torch.nn.Linear(64, 64)
    linear.load_state_dict(torch.load(str(model_dir / "colbert_linear.pt"), weights_only=True))
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        dense = torch.nn.functional.normalize(hidden[0], dim=-1)
        colbert = torch.nn.functional.normalize(linear(hidden[1:]), dim=-1)
    return dense.numpy(), colbert.numpy()


def test_bge_m3_dense_and_colbert_from_one_pass(m3_dir: Path) -> None:
    enc = Encoder(model=str(m3_dir))
    assert enc.model_profile.kind == "bge-m3" and enc.model_profile.pooling == "cls"
    text = "Multi-lingual, multi-granular and multi-functional embeddings"
    ids = enc.token_ids([text], is_query=False)[0]
    dense, tokens = enc.encode_documents([text])
    ref_dense, ref_tokens = _reference(m3_dir, ids)
    assert dense.shape == (1, 64) and tokens[0].shape == (len(ids) - 1, 64) == ref_tokens.shape
    assert float(dense[0] @ ref_dense) >= 0.9999
    assert np.sum(tokens[0] * ref_tokens, axis=1).min() >= 0.9999
    enc.close()


def test_bge_m3_without_colbert_head_is_refused(tmp_path: Path, m3_dir: Path) -> None:
    broken = tmp_path / "m3"
    shutil.copytree(m3_dir, broken)
    (broken / "colbert_linear.pt").unlink()
    with pytest.raises(ValueError, match="colbert_linear"):
        Encoder(model=str(broken))
