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
# # 3. Evaluating search modes on SciFact
#
# [SciFact](https://github.com/allenai/scifact) pairs scientific claims with the abstracts
# that support or refute them; its BEIR version has training judgements (`qrels/train.tsv`).
# This notebook indexes a **subset** (the abstracts judged for the first claims, plus random
# other abstracts, so it runs in a few minutes on a CPU), then compares the store's search
# modes with [ir-measures](https://ir-measur.es):
#
# | mode | what it does |
# |---|---|
# | `dense` | cosine of one vector per text (HNSW) |
# | `maxsim` | exhaustive late interaction: Σ over query tokens of the best document-token cosine |
# | `hybrid` | dense prefetch of N candidates, reranked by MaxSim (the default) |
# | `fusion` | reciprocal-rank fusion of the dense and MaxSim lists |
#
# The same numbers for the whole corpus come from the command line:
# `vllm-retrieval eval --beir path/to/scifact --split train`.

# %%
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from vllm_retrieval import MODES, Encoder, shutdown_engines
from vllm_retrieval.evaluation import (
    beir_documents,
    evaluate_run,
    index_documents,
    load_beir,
    run_queries,
)
from vllm_retrieval.store import MultiVectorStore

N_QUERIES = int(os.environ.get("COOKBOOK_SCIFACT_QUERIES", "50"))
EXTRA_DOCS = int(os.environ.get("COOKBOOK_SCIFACT_EXTRA_DOCS", "400"))
OUTPUT = Path(os.environ.get("COOKBOOK_OUTPUT", "output"))
OUTPUT.mkdir(parents=True, exist_ok=True)


def find_scifact() -> Path:
    """$SCIFACT_DIR, or a shared/data/scifact folder above the working directory."""
    if os.environ.get("SCIFACT_DIR"):
        return Path(os.environ["SCIFACT_DIR"])
    for parent in [Path.cwd(), *Path.cwd().parents]:
        candidate = parent / "shared" / "data" / "scifact"
        if (candidate / "corpus.jsonl").is_file():
            return candidate
    raise FileNotFoundError("SciFact not found: set SCIFACT_DIR to a BEIR scifact folder")


# %% [markdown]
# ## Load a subset and index it

# %%
full = load_beir(find_scifact(), split="train")
data = full.subset(N_QUERIES, EXTRA_DOCS, seed=0)
print(f"full: {len(full.corpus)} abstracts, {len(full.queries)} judged claims")
print(f"subset: {len(data.corpus)} abstracts, {len(data.queries)} claims")

encoder = Encoder().start()
workdir = Path(tempfile.mkdtemp(prefix="cookbook-scifact-"))
store = MultiVectorStore(workdir / "index", encoder=encoder)
added, skipped, seconds = index_documents(store, beir_documents(data), progress=False)
print(f"encoded and stored {added} abstracts in {seconds:.0f} s ({added / seconds:.1f} docs/s)")

# %% [markdown]
# ## nDCG@10, recall@100 and MRR@10 per mode
#
# The queries are encoded once; each mode then searches with the same query vectors.

# %%
runs, query_seconds = run_queries(store, data.queries, MODES, k=100)
table = {}
for mode in MODES:
    run, ms = runs[mode]
    table[mode] = {**evaluate_run(data.qrels, run), "ms": ms}
print(f"{'mode':<8} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7} {'ms/query':>9}")
for mode, row in table.items():
    print(
        f"{mode:<8} {100 * row['nDCG@10']:8.2f} {100 * row['R@100']:7.2f} "
        f"{100 * row['RR@10']:7.2f} {row['ms']:9.2f}"
    )

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
values = [100 * table[m]["nDCG@10"] for m in MODES]
bars = ax.bar(MODES, values, color=["#9aa5b1", "#3e7cb1", "#f28c28", "#5fa55a"])
ax.bar_label(bars, fmt="%.1f")
ax.set_ylabel("nDCG@10 (×100)")
ax.set_ylim(0, max(values) * 1.15)
ax.set_title(f"SciFact subset ({len(data.queries)} claims, {len(data.corpus)} abstracts)")
fig.tight_layout()
fig.savefig(OUTPUT / "03_ndcg_by_mode.png", dpi=120)
plt.show()

# %% [markdown]
# ## Latency against the number of prefetch candidates
#
# `hybrid` reranks the `candidates` best dense hits by MaxSim. More candidates cost more
# MaxSim work and approach the exhaustive `maxsim` ranking; few candidates are nearly as
# cheap as dense search. The query vectors are reused so only search time is measured.

# %%
qids = list(data.queries)
encoded = encoder.encode_queries([data.queries[q] for q in qids])
CANDIDATES = [10, 20, 50, 100, 200, 400]
latency, quality = [], []
for c in CANDIDATES:
    best = float("inf")
    for _ in range(2):  # best of two passes, to damp noise from other processes
        t0 = time.perf_counter()
        res, _ = run_queries(store, data.queries, ["hybrid"], k=100, candidates=c, encoded=encoded)
        best = min(best, time.perf_counter() - t0)
    latency.append(1000 * best / len(qids))
    quality.append(100 * evaluate_run(data.qrels, res["hybrid"][0])["nDCG@10"])
exhaustive_ms = table["maxsim"]["ms"]
for c, ms, q in zip(CANDIDATES, latency, quality, strict=True):
    print(f"candidates={c:<4} {ms:7.2f} ms/query  nDCG@10={q:.2f}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(CANDIDATES, latency, marker="o", color="#f28c28", label="hybrid search latency")
ax.axhline(exhaustive_ms, ls="--", color="#3e7cb1", label="exhaustive MaxSim")
ax.axhline(table["dense"]["ms"], ls=":", color="#9aa5b1", label="dense only")
ax.set_xscale("log")
ax.set_xticks(CANDIDATES, [str(c) for c in CANDIDATES])
ax.set_xlabel("prefetch candidates (dense → MaxSim)")
ax.set_ylabel("ms per query (search only)")
ax2 = ax.twinx()
ax2.plot(CANDIDATES, quality, marker="s", color="#5fa55a", alpha=0.7, label="nDCG@10")
ax2.set_ylabel("nDCG@10 (×100)")
lines = ax.get_legend_handles_labels()
lines2 = ax2.get_legend_handles_labels()
ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
ax.set_title("Hybrid search: latency and quality vs prefetch depth")
fig.tight_layout()
fig.savefig(OUTPUT / "03_latency_vs_candidates.png", dpi=120)
plt.show()

# %%
assert (OUTPUT / "03_ndcg_by_mode.png").is_file()
assert (OUTPUT / "03_latency_vs_candidates.png").is_file()
assert all(0.3 < table[m]["nDCG@10"] <= 1.0 for m in MODES)

# %%
store.close()
shutdown_engines()
