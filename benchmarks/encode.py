"""Token-embedding throughput: vllm-retrieval's Encoder vs sentence-transformers, one process.

    .venv/bin/python benchmarks/encode.py [--docs 600] [--max-length 256] [--repeats 2]
        [--precisions float32 bfloat16]

Both sides encode the same SciFact documents (title + " " + text) truncated to 256 tokens with
the packaged all-MiniLM-L6-v2 on the CPU and return token vectors. Three comparisons, each
printing docs/s, tokens/s and the ratio (ours / sentence-transformers), best of N runs:

* **defaults**: ``Encoder()`` (dtype ``auto``: bfloat16 on CPUs with bf16 units, float32
  elsewhere) against ``SentenceTransformer(...).encode`` (float32), what each gives out of the box;
* **same precision**, for each of ``--precisions``: both sides in that dtype (sentence-
  transformers loaded with ``torch_dtype``). bfloat16 is measured only where the CPU has bf16
  units unless asked for (emulated bf16 is several times slower than float32).

Engines are started one at a time and stopped after their runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
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


def best_of(fn: Callable[[], int], repeats: int, n_tokens: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        assert fn() == n_tokens
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="sentence-transformers batch")
    parser.add_argument(
        "--precisions",
        nargs="*",
        default=None,
        help="same-precision comparisons (default: float32, plus bfloat16 where native)",
    )
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from vllm_retrieval import Encoder
    from vllm_retrieval.encoding.backends import fast_bf16_cpu, resolve_dtype

    docs = load_docs(args.docs)
    native = fast_bf16_cpu()
    default_dtype = resolve_dtype("auto")
    precisions = args.precisions
    if precisions is None:
        precisions = ["float32", "bfloat16"] if native else ["float32"]

    ours: dict[str, float] = {}  # seconds, per engine dtype
    n_tokens = 0
    model_path = ""
    for dtype in dict.fromkeys([default_dtype, *precisions]):
        enc = Encoder(max_length=args.max_length, batch_size=64, dtype=dtype).start()
        model_path = enc.model_path
        n_tokens = sum(len(i) for i in enc.token_ids(docs, is_query=False))

        def run_ours(enc: Encoder = enc) -> int:
            return sum(t.shape[0] for t in enc.embed_documents_tokens(docs))

        run_ours()  # warm-up
        ours[dtype] = best_of(run_ours, args.repeats, n_tokens)
        enc.close()

    theirs: dict[str, float] = {}
    for dtype in dict.fromkeys(["float32", *precisions]):
        st = SentenceTransformer(
            model_path, device="cpu", model_kwargs={"torch_dtype": getattr(torch, dtype)}
        )
        st.max_seq_length = args.max_length

        def run_st(st: SentenceTransformer = st) -> int:
            out = st.encode(docs, output_value="token_embeddings", batch_size=args.batch_size)
            return sum(t.shape[0] for t in out)

        run_st()  # warm-up
        theirs[dtype] = best_of(run_st, args.repeats, n_tokens)

    def line(name: str, seconds: float) -> str:
        rates = f"{len(docs) / seconds:8.1f} docs/s  {n_tokens / seconds:9.0f} tokens/s"
        return f"  {name:<38}: {rates}"

    print(f"documents: {len(docs)}, tokens: {n_tokens}, max_length: {args.max_length}")
    print(f"CPU bf16 units: {native}; Encoder() default dtype: {default_dtype}")
    print(f"torch threads (sentence-transformers): {torch.get_num_threads()}")
    print("defaults (what each gives out of the box):")
    print(line(f"vllm-retrieval Encoder() [{default_dtype}]", ours[default_dtype]))
    print(line("sentence-transformers [float32]", theirs["float32"]))
    print(f"  ratio (ours / sentence-transformers): {theirs['float32'] / ours[default_dtype]:.2f}x")
    for dtype in precisions:
        print(f"same precision, {dtype}:")
        print(line(f"vllm-retrieval Encoder(dtype={dtype!r})", ours[dtype]))
        print(line(f"sentence-transformers [{dtype}]", theirs[dtype]))
        print(f"  ratio (ours / sentence-transformers): {theirs[dtype] / ours[dtype]:.2f}x")


if __name__ == "__main__":
    main()
