"""Token-embedding throughput: vllm-retrieval's Encoder vs sentence-transformers, one process.

    .venv/bin/python benchmarks/encode.py [--docs 600] [--max-length 256] [--repeats 2]

Both sides encode the same SciFact documents (title + " " + text) truncated to 256 tokens,
with the packaged all-MiniLM-L6-v2 in float32 on the CPU, and return token vectors. Prints
docs/s and tokens/s for each and the ratio (ours / sentence-transformers). Best of N runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def load_docs(n: int) -> list[str]:
    docs = []
    with (SCIFACT / "corpus.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            docs.append((row.get("title", "") + " " + row["text"]).strip())
            if len(docs) == n:
                break
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="sentence-transformers batch")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from vllm_retrieval import Encoder

    docs = load_docs(args.docs)
    enc = Encoder(max_length=args.max_length, batch_size=64).start()
    n_tokens = sum(len(i) for i in enc.token_ids(docs, is_query=False))

    def run_ours() -> float:
        start = time.perf_counter()
        out = enc.embed_documents_tokens(docs)
        elapsed = time.perf_counter() - start
        assert sum(t.shape[0] for t in out) == n_tokens
        return elapsed

    st = SentenceTransformer(enc.model_path, device="cpu")
    st.max_seq_length = args.max_length

    def run_st() -> float:
        start = time.perf_counter()
        out = st.encode(docs, output_value="token_embeddings", batch_size=args.batch_size)
        elapsed = time.perf_counter() - start
        assert sum(t.shape[0] for t in out) == n_tokens
        return elapsed

    run_ours()  # warm-up
    ours = min(run_ours() for _ in range(args.repeats))
    base = min(run_st() for _ in range(args.repeats))
    print(f"documents: {len(docs)}, tokens: {n_tokens}, max_length: {args.max_length}")
    print(f"torch threads (sentence-transformers): {torch.get_num_threads()}")
    print(
        f"vllm-retrieval Encoder : {len(docs) / ours:8.1f} docs/s  {n_tokens / ours:9.0f} tokens/s"
    )
    print(
        f"sentence-transformers  : {len(docs) / base:8.1f} docs/s  {n_tokens / base:9.0f} tokens/s"
    )
    print(f"ratio (ours / sentence-transformers): {base / ours:.2f}x")


if __name__ == "__main__":
    main()
