"""Image encoding on the tiny random Qwen2.5-VL: engine start, images/s, and the same images
through transformers (the parity reference) in one process.

    .venv/bin/python benchmarks/images.py [--images 64] [--repeats 2]

The checkpoint is the test suite's tiny model (tests/_vlm.py: hidden 64, 2 layers, images
resized to 64 merged patches), so the figures measure the pipeline (decoding, processor,
engine, pooling), not a real model's compute. Prints engine start, images/s for
``Encoder.encode_images`` (dense + patch vectors, one forward pass per image) and for
transformers' ``model.model(...)`` one image at a time, and the ratio (ours / transformers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import skimage.data
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    import _vlm
    from vllm_retrieval import Encoder, shutdown_engines

    why = _vlm.missing()
    if why:
        raise SystemExit(f"cannot build the tiny VLM here: {why}")
    names = [
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "camera",
        "cat",
        "horse",
        "hubble_deep_field",
    ]
    base = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in names]
    images = [base[i % len(base)] for i in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        path = _vlm.build_qwen25_vl(Path(tmp) / "tiny-qwen25-vl")
        enc = Encoder(model=str(path), profile="jina-v4", dtype="float32")
        t0 = time.perf_counter()
        enc.start()
        start = time.perf_counter() - t0
        enc.encode_images(images[:4])  # warm-up
        ours = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            enc.encode_images(images)
            ours.append(len(images) / (time.perf_counter() - t0))
        shutdown_engines()

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
        model.eval()
        proc = AutoProcessor.from_pretrained(path)
        prompt = (enc.model_profile.image_prompt or "").replace("{text}", "Describe the image.")
        ref = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                for img in images:
                    inputs = proc(text=[prompt], images=[img], return_tensors="pt")
                    model.model(**inputs)
            ref.append(len(images) / (time.perf_counter() - t0))
    best, best_ref = max(ours), max(ref)
    print(f"engine start (tiny Qwen2.5-VL, float32): {start:.1f} s")
    print(f"encode_images: {best:.1f} images/s ({len(images)} images, best of {args.repeats})")
    print(f"transformers, one image at a time: {best_ref:.1f} images/s")
    print(f"ratio ours / transformers: {best / best_ref:.2f}x")


if __name__ == "__main__":
    main()
