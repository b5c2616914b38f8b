# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Search a folder of PDF pages
#
# Page-image retrieval in the style of ColPali / Jina embeddings v4: every PDF page is
# rendered to an image, a vision-language model turns it into one dense vector and one
# vector per image patch (one forward pass), and a text query ranks pages by MaxSim over
# those patches — no OCR. `explain` then shows which patch each query token matched.
#
# Use a real checkpoint for real results (set `VLM_MODEL`, and `VLM_PROFILE` if needed):
# `jinaai/jina-embeddings-v4-vllm-retrieval` (profile `jina-v4`), a ColQwen3 retriever such as
# `TomoroAI/tomoro-colqwen3-embed-4b` or `nvidia/nemotron-colembed-vl-4b-v2` (profile
# `colqwen`, detected; pass the card's query prefix), or a Qwen3-VL embedding model (profile
# `vlm`). CLIP / SigLIP give one vector per page (dense search only, no patch MaxSim).
# Without one (CI has no model hub) this notebook builds a **tiny random** Qwen2.5-VL from
# the test suite: the pipeline is exercised end to end, the rankings are meaningless.

# %%
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pypdfium2
import skimage.data
from PIL import Image

from vllm_retrieval import Encoder, MaxSimReranker, MultiVectorStore, shutdown_engines

OUTPUT = Path(os.environ.get("COOKBOOK_OUTPUT", "output"))
OUTPUT.mkdir(parents=True, exist_ok=True)
WORK = Path(tempfile.mkdtemp(prefix="cookbook-pdf-"))

model = os.environ.get("VLM_MODEL")
profile = os.environ.get("VLM_PROFILE")  # None: detected (colqwen, vlm); jina-v4 by name
if model is None:
    repo = Path(os.environ.get("VLLM_RETRIEVAL_REPO", Path.cwd().parent))
    sys.path.insert(0, str(repo / "tests"))
    import _vlm

    model, profile = str(_vlm.build_qwen25_vl(WORK / "tiny-qwen25-vl")), "jina-v4"
encoder = Encoder(model=model, profile=profile).start()

# %% [markdown]
# ## A folder of PDFs
#
# Two small PDFs made from scikit-image's sample images (a scanned text page among them).

# %%
pdfs = WORK / "pdfs"
pdfs.mkdir()
samples = {
    name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    for name in ("page", "astronaut", "rocket", "coffee")
}
samples["page"].save(pdfs / "scan.pdf", save_all=True, append_images=[samples["coffee"]])
samples["astronaut"].save(pdfs / "space.pdf", save_all=True, append_images=[samples["rocket"]])

pages, ids, metas = [], [], []
for pdf_path in sorted(pdfs.glob("*.pdf")):
    pdf = pypdfium2.PdfDocument(str(pdf_path))
    for n in range(len(pdf)):
        pages.append(pdf[n].render(scale=1.0).to_pil().convert("RGB"))
        ids.append(f"{pdf_path.name}#page={n + 1}")
        metas.append({"source": pdf_path.name, "page": n + 1})
    pdf.close()
print(len(pages), "pages:", ids)

# %% [markdown]
# ## Index and search
#
# `add_images` stores each page's dense and patch vectors; the payload keeps the reference
# (here the page id; `keep_pixels=True` would keep a PNG), not the pixels. The same thing from
# the command line: `vllm-retrieval index --index ./idx --model M --profile jina-v4 ./pdfs`.

# %%
store = MultiVectorStore(WORK / "index", encoder=encoder)
store.add_images(pages, metadatas=metas, ids=ids)
query = "an astronaut in a space suit"
hits = store.search(query, k=4, mode="maxsim")
for rank, hit in enumerate(hits, 1):
    print(f"{rank}. {hit.id:<18} MaxSim {hit.score:7.3f}")

# %% [markdown]
# ## Which patch did each query token match?

# %%
best = ids.index(str(hits[0].id))
explanation = MaxSimReranker(encoder=encoder).explain(query, pages[best])
rows, cols = explanation.grid
print("patch grid:", rows, "x", cols)
on_grid = [m for m in explanation.matches if m.patch is not None]
for m in on_grid[:8]:
    print(f"{m.query_token!r:>14} -> patch {m.patch}  sim {m.similarity:.3f}")

heat = np.zeros((rows, cols))
for m in on_grid:
    heat[m.patch] += m.similarity
fig, ax = plt.subplots(figsize=(6, 6))
ax.imshow(pages[best])
ax.imshow(
    heat,
    cmap="magma",
    alpha=0.55,
    extent=(0, pages[best].width, pages[best].height, 0),
    interpolation="nearest",
)
ax.set_title(f"query tokens' best patches on {ids[best]}")
ax.axis("off")
fig.tight_layout()
fig.savefig(OUTPUT / "05_patch_matches.png", dpi=110)

# %%
assert len(hits) == len(pages) == 4
assert all(np.isfinite(h.score) for h in hits)
assert rows * cols == explanation.similarities.shape[1] - 2  # patches + vision start/end
assert abs(explanation.score - hits[0].score) < 1e-3
store.close()
shutdown_engines()
