"""Image encoding per model family on tiny random checkpoints: engine start, images/s, and the
same images through transformers (the parity reference), side by side in one process.

    .venv/bin/python benchmarks/images.py [--families jina-v4 vlm-qwen2 ...] [--images 64]
        [--repeats 2]

Families: ``jina-v4`` (Qwen2.5-VL), ``vlm-qwen2`` (Qwen2-VL), ``vlm-qwen3`` (Qwen3-VL),
``colqwen3`` (Qwen3-VL + projection), ``clip`` and ``siglip`` (dual encoders, dense only).
The checkpoints are the test suite's (tests/_vlm.py, tests/_clip.py: hidden 64, 2 layers;
Qwen images resized to at most 64 merged patches, CLIP/SigLIP to 32x32), so the figures
measure the pipeline (decoding, processor, engine, pooling), not a real model's compute.
Prints per family: engine start (s), images/s through ``Encoder`` (``encode_images``: dense +
patch vectors in one pass; ``embed_images`` for dual encoders), images/s through transformers
one image at a time, and the ratio (ours / transformers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

FAMILIES = ("jina-v4", "vlm-qwen2", "vlm-qwen3", "colqwen3", "clip", "siglip")


def _build(family: str, out: Path) -> tuple[Path, str | None]:
    import _clip
    import _vlm

    builders: dict[str, tuple[Callable[[Path], Path], str | None]] = {
        "jina-v4": (_vlm.build_qwen25_vl, "jina-v4"),
        "vlm-qwen2": (_vlm.build_qwen2_vl, "vlm"),
        "vlm-qwen3": (_vlm.build_qwen3_vl, "vlm"),
        "colqwen3": (_vlm.build_colqwen3, None),
        "clip": (_clip.build_clip, None),
        "siglip": (_clip.build_siglip, None),
    }
    build, profile = builders[family]
    return build(out / family), profile


def _reference(family: str, path: Path, prompt: str) -> Callable[[Any], Any]:
    """transformers' forward pass for one image, as the parity tests run it."""
    import torch
    from transformers import AutoModel, AutoProcessor

    proc = AutoProcessor.from_pretrained(path)
    if family in ("clip", "siglip"):
        dual = AutoModel.from_pretrained(path, dtype=torch.float32).eval()

        def run_dual(img: Any) -> Any:
            pixels = proc(images=[img], return_tensors="pt")["pixel_values"]
            return dual.get_image_features(pixel_values=pixels)

        return run_dual
    import transformers

    cls = {
        "jina-v4": transformers.Qwen2_5_VLForConditionalGeneration,
        "vlm-qwen2": transformers.Qwen2VLForConditionalGeneration,
    }.get(family, transformers.Qwen3VLForConditionalGeneration)
    model = cls.from_pretrained(path, dtype=torch.float32).eval()

    def run(img: Any) -> Any:
        return model.model(**proc(text=[prompt], images=[img], return_tensors="pt"))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import skimage.data
    import torch
    from PIL import Image

    import _clip
    import _vlm
    from vllm_retrieval import Encoder, shutdown_engines

    for why in (_vlm.missing(), _clip.missing()):
        if why:
            raise SystemExit(f"cannot build the tiny checkpoints here: {why}")
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "horse"]
    base = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in names]
    images = [base[i % len(base)] for i in range(args.images)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            path, profile = _build(family, Path(tmp))
            enc = Encoder(model=str(path), profile=profile, dtype="float32")  # type: ignore[arg-type]
            t0 = time.perf_counter()
            enc.start()
            start = time.perf_counter() - t0
            dense_only = enc.model_profile.dense_only
            encode = enc.embed_images if dense_only else enc.encode_images
            encode(images[:4])  # warm-up
            ours = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                encode(images)
                ours.append(len(images) / (time.perf_counter() - t0))
            prompt = (enc.model_profile.image_prompt or "").replace(
                "{text}", enc.model_profile.image_text
            )
            shutdown_engines()
            run = _reference(family, path, prompt)
            ref = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                with torch.no_grad():
                    for img in images:
                        run(img)
                ref.append(len(images) / (time.perf_counter() - t0))
            rows.append((family, start, max(ours), max(ref)))
            print(f"{family}: start {start:.1f} s, {max(ours):.1f} img/s", flush=True)
    print(f"\n{args.images} images (scikit-image samples), best of {args.repeats}, float32")
    print(f"{'family':<11} {'start s':>8} {'ours img/s':>11} {'transformers':>13} {'ratio':>6}")
    for family, start, ours_best, ref_best in rows:
        print(
            f"{family:<11} {start:>8.1f} {ours_best:>11.1f} {ref_best:>13.1f} "
            f"{ours_best / ref_best:>5.2f}x"
        )


if __name__ == "__main__":
    main()
