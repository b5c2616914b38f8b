"""``python -m vllm_retrieval.cli``: the ``vllm-retrieval`` console script (hard exit included)."""

from .app import console_main

if __name__ == "__main__":
    console_main()
