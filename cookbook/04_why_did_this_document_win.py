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
# # 4. Why did this document win?
#
# A dense retriever gives one number per document and no reason. Late interaction (MaxSim)
# is explainable by construction:
#
# $$\text{MaxSim}(q, d) = \sum_{i \in q} \max_{j \in d} \; q_i \cdot d_j$$
#
# every query token picks the document token most similar to it, and the score is the sum of
# those picks. `MaxSimReranker.explain` returns the whole query-token × document-token
# similarity matrix and the picks, which this notebook draws as a heatmap.

# %%
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from vllm_retrieval import Encoder, shutdown_engines
from vllm_retrieval.demo import load_sample_corpus
from vllm_retrieval.scoring import MaxSimReranker
from vllm_retrieval.store import MultiVectorStore

OUTPUT = Path(os.environ.get("COOKBOOK_OUTPUT", "output"))
OUTPUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Search
#
# Index the sample corpus and run a `maxsim` search (exhaustive late interaction).

# %%
encoder = Encoder().start()
corpus = load_sample_corpus()
store = MultiVectorStore(Path(tempfile.mkdtemp(prefix="cookbook-why-")) / "index", encoder=encoder)
store.add_texts(
    [r["text"] for r in corpus], [{"topic": r["topic"]} for r in corpus], [r["id"] for r in corpus]
)

query = "How does late interaction score a document?"
hits = store.search(query, k=3, mode="maxsim")
for hit in hits:
    print(f"{hit.score:7.3f}  {hit.id:<12} {hit.text[:70]}")
winner, runner_up = hits[0], hits[1]

# %% [markdown]
# ## The explanation
#
# `explain` re-encodes the query and the document and returns, per query token, the best
# document token, its position and the cosine. The sum of the picks is the MaxSim score
# (the search score above, up to float rounding).

# %%
reranker = MaxSimReranker(encoder=encoder)
why = reranker.explain(query, winner.text)
print(f"MaxSim({winner.id!r}) = {why.score:.3f}  (search said {winner.score:.3f})\n")
print(f"{'query token':<14} {'picks document token':<22} {'pos':>4} {'cosine':>7}")
for m in why.matches:
    pos, cos = m.document_position, m.similarity
    print(f"{m.query_token:<14} {m.document_token:<22} {pos:>4} {cos:7.3f}")
assert abs(sum(m.similarity for m in why.matches) - why.score) < 1e-3
assert abs(why.score - winner.score) < 1e-2

# %% [markdown]
# ## The heatmap
#
# Rows are query tokens, columns document tokens; colour is the cosine. The box in each row
# marks the document token that row picked: the score is the sum of the boxed cells.


# %%
def heatmap(explanation, title, path):
    sims = explanation.similarities
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * sims.shape[1]), 0.42 * sims.shape[0] + 2))
    image = ax.imshow(sims, cmap="viridis", aspect="auto", vmin=min(0.0, sims.min()), vmax=1.0)
    rows = np.arange(sims.shape[0])
    cols = [m.document_position for m in explanation.matches]
    ax.scatter(
        cols,
        rows,
        s=160,
        marker="s",
        facecolors="none",
        edgecolors="red",
        linewidths=2,
        label="MaxSim pick",
    )
    ax.set_yticks(rows, explanation.query_tokens)
    ax.set_xticks(np.arange(sims.shape[1]), explanation.document_tokens, rotation=90)
    ax.set_ylabel("query tokens")
    ax.set_xlabel("document tokens")
    ax.set_title(title)
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 1.12), fontsize=8)
    fig.colorbar(image, ax=ax, label="cosine", fraction=0.025, pad=0.01)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.show()


heatmap(why, f"{query!r} × {winner.id!r}: MaxSim {why.score:.2f}", OUTPUT / "04_maxsim_heatmap.png")

# %% [markdown]
# ## Winner against runner-up, token by token
#
# Where does the winner gain its lead? Each bar is one query token's contribution (its best
# cosine) to each document's score.

# %%
other = reranker.explain(query, runner_up.text)
labels = why.query_tokens
x = np.arange(len(labels))
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.bar(x - 0.2, [m.similarity for m in why.matches], 0.4, label=f"{winner.id} ({why.score:.2f})")
ax.bar(
    x + 0.2, [m.similarity for m in other.matches], 0.4, label=f"{runner_up.id} ({other.score:.2f})"
)
ax.set_xticks(x, labels, rotation=45, ha="right")
ax.set_ylabel("best cosine (contribution)")
ax.set_title("Per-query-token contributions to MaxSim")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUTPUT / "04_token_contributions.png", dpi=120)
plt.show()

gain = [
    (a.similarity - b.similarity, a.query_token)
    for a, b in zip(why.matches, other.matches, strict=True)
]
print("largest gains of the winner:", sorted(gain, reverse=True)[:3])

# %%
assert (OUTPUT / "04_maxsim_heatmap.png").is_file()
assert why.score >= other.score
store.close()
shutdown_engines()
