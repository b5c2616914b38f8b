"""Tiny random CLIP and SigLIP dual encoders for tests and benchmarks (no weights download).

Both have text and vision towers of hidden size 64, 2 layers and head size 32 (vLLM's CPU
attention needs >= 32), 32x32 images in 8x8 patches, and a tokenizer made here, in code:

- CLIP: a genuine byte-level BPE ``CLIPTokenizer`` with no merges (every byte is a token, the
  last byte of a word has its ``</w>`` form), ids laid out as in OpenAI's vocabulary: 256 byte
  symbols, their 256 ``</w>`` forms, then ``<|startoftext|>`` (512) and ``<|endoftext|>`` (513,
  also pad and the highest id, so transformers' legacy arg-max EOS pooling agrees too). Token 0
  (``!``) is not special: vLLM uses it as the image placeholder. Text length is limited to 77.
- SigLIP: a ``SiglipTokenizer`` around a sentencepiece model trained here on a fixed corpus
  (unigram, byte fallback, no dummy prefix; ``<pad>`` 0, ``</s>`` 1 = eos = pad token,
  ``<unk>`` 2), text length 64.

vLLM (``runner="pooling"``) serves both as ``CLIPEmbeddingModel`` / ``SiglipEmbeddingModel``:
one L2-normalised 64-dim vector per text or per image (image prompts carry no text:
``{"prompt": "", "multi_modal_data": {"image": pil}}``), equal to transformers'
``get_text_features`` / ``get_image_features`` (cos 1.0). vLLM does not pad SigLIP text: it
matches transformers on unpadded text; padded-to-64 ids must be sent as a ``TokensPrompt``.
"""

from __future__ import annotations

import io
from pathlib import Path

_TOWER = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
IMAGE_SIZE = 32
PATCH = 8

# CLIP's vocabulary layout (bytes, bytes + "</w>", then the two specials).
CLIP_BOS = 512
CLIP_EOS = 513
CLIP_VOCAB = 514

# SigLIP: fixed corpus for the sentencepiece model (deterministic with one thread).
_CORPUS = """\
a photo of a cat sitting on a sofa
a photo of a dog running in the park
an astronaut in a white space suit holding a helmet
a cup of coffee on a saucer with a spoon
a scanned page of printed text from an old book
a rocket launching into the blue sky
the quick brown fox jumps over the lazy dog
retrieval finds the documents that answer a query
late interaction compares every query token with every document token
images and texts are embedded into the same vector space
a red apple and a green pear on a wooden table
two people walking along the beach at sunset
a diagram of a neural network with many layers
the city skyline at night with bright lights
a handwritten note on yellow paper
numbers 0 1 2 3 4 5 6 7 8 9 and letters x y z q j k
"""


def missing() -> str | None:
    """Why the tiny CLIP/SigLIP checkpoints cannot be built here (None when they can)."""
    for mod in ("transformers", "torch", "tokenizers", "sentencepiece", "google.protobuf", "PIL"):
        try:
            __import__(mod)
        except Exception as exc:
            return f"{mod} is not importable: {type(exc).__name__}"
    return None


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in GPT-2/CLIP order."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def clip_tokenizer() -> object:
    """A byte-level ``CLIPTokenizer`` (514 ids, no merges, max length 77)."""
    from transformers import CLIPTokenizer

    symbols = _bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = CLIP_BOS
    vocab["<|endoftext|>"] = CLIP_EOS
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_clip(out: Path, *, seed: int = 0) -> Path:
    """Save a tiny random ``CLIPModel`` (tokenizer, image processor, processor) in ``out``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            _TOWER,
            vocab_size=CLIP_VOCAB,
            max_position_embeddings=77,
            bos_token_id=CLIP_BOS,
            eos_token_id=CLIP_EOS,
            pad_token_id=CLIP_EOS,
            projection_dim=64,
        ),
        vision_config=dict(_TOWER, image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=64),
        # vLLM sizes its inputs_embeds buffer by text_config.projection_dim (transformers'
        # default there is 512, whatever the top-level value): keep them equal, >= hidden.
        projection_dim=64,
    )
    out = Path(out)
    CLIPModel(config).eval().save_pretrained(out)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(out)
    return out


def _sentencepiece_model() -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.splitlines()),
        model_writer=model,
        model_type="unigram",
        vocab_size=400,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=1.0,
        add_dummy_prefix=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def build_siglip(out: Path, *, seed: int = 0) -> Path:
    """Save a tiny random ``SiglipModel`` (sentencepiece tokenizer, image processor) in ``out``."""
    import torch
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTokenizer,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spm_file = out / "spiece.model"
    spm_file.write_bytes(_sentencepiece_model())
    tokenizer = SiglipTokenizer(vocab_file=str(spm_file), model_max_length=64)

    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config=dict(
            _TOWER,
            vocab_size=len(tokenizer),
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        ),
        vision_config=dict(_TOWER, image_size=IMAGE_SIZE, patch_size=PATCH),
    )
    SiglipModel(config).eval().save_pretrained(out)
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out
