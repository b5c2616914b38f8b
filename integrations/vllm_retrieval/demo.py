"""`make demo`: the main job on the embedded default, end to end.

Encodes the bundled sample corpus with the packaged all-MiniLM-L6-v2 on one vLLM engine
(dense + token vectors from one forward pass), prints the shapes, and ranks the corpus for a
few queries by dense cosine and by MaxSim late interaction.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

QUERIES = [
    "How does late interaction score a document?",
    "Which enzyme edits genes?",
    "how do you make bread rise",
]


def load_sample_corpus() -> list[dict[str, Any]]:
    """The bundled sample corpus: ``{"id", "text", "topic", "year"}`` rows."""
    text = resources.files("vllm_retrieval").joinpath("data/sample_corpus.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np

    from vllm_retrieval import Encoder
    from vllm_retrieval.core.maxsim import maxsim

    corpus = load_sample_corpus()
    texts = [row["text"] for row in corpus]
    print("Starting the shared vLLM engine (packaged all-MiniLM-L6-v2)...", flush=True)
    enc = Encoder().start()

    dense, tokens = enc.encode_documents(texts)  # one forward pass per document
    print(f"\ncorpus: {len(texts)} documents")
    print(f"dense vectors: {dense.shape} {dense.dtype}")
    for row, tok in list(zip(corpus, tokens, strict=True))[:3]:
        print(f"token vectors of {row['id']!r}: {tok.shape}")
    print(f"total token vectors: {sum(t.shape[0] for t in tokens)}")

    for query in QUERIES:
        q_dense, q_tokens = enc.encode_queries([query])
        by_dense = np.argsort(-(dense @ q_dense[0]), kind="stable")[:3]
        scores = maxsim(q_tokens[0], tokens)
        by_maxsim = np.argsort(-scores, kind="stable")[:3]
        print(f"\nquery: {query!r}  (query tokens: {q_tokens[0].shape})")
        print("  dense cosine        | MaxSim (sum over query tokens)")
        for a, b in zip(by_dense, by_maxsim, strict=True):
            left = f"{corpus[a]['id']:<14} {float(dense[a] @ q_dense[0]):.3f}"
            right = f"{corpus[b]['id']:<14} {float(scores[b]):.3f}"
            print(f"  {left} | {right}")


if __name__ == "__main__":
    main()
