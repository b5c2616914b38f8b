"""``make demo`` as a newcomer runs it: our results, not vLLM's logs, and no fake answer.

Two subprocesses (one engine start each): the default run and ``-v``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

# A vLLM log line: "(EngineCore pid=12) INFO 12-02 21:57:19 [core.py:402] ..." (also WARNING)
VLLM_LOG = re.compile(r"\b(INFO|WARNING) \d\d-\d\d \d\d:\d\d:\d\d \[")


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_LOGGING")}
    res = subprocess.run(
        [sys.executable, "-m", "vllm_retrieval.demo", *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env={**env, "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def quiet() -> subprocess.CompletedProcess[str]:
    return _demo()


def test_demo_prints_results_without_vllm_logs(quiet: subprocess.CompletedProcess[str]) -> None:
    both = quiet.stdout + quiet.stderr
    assert not VLLM_LOG.search(both), [ln for ln in both.splitlines() if VLLM_LOG.search(ln)]
    assert "[shutdown]" not in both and "Triton" not in both
    assert "engine ready in" in quiet.stdout
    assert "dense cosine" in quiet.stdout and "MaxSim" in quiet.stdout
    assert quiet.stderr.strip() == "", quiet.stderr[-2000:]


def test_demo_shows_context_and_prompt_not_a_fake_answer(
    quiet: subprocess.CompletedProcess[str],
) -> None:
    out = quiet.stdout
    for fake in ("fake", "MockLLM", "Mock", "A: ", "A (MockLLM"):
        assert fake not in out, fake
    assert out.count("retrieved context:") == 3  # two LangChain questions, one LlamaIndex
    assert out.count("prompt a chat model would get:") == 3
    # LangChain's prompt: the reranked context, then the question as the human message
    lc = out.split("Q: How does ColBERT score documents?", 1)[1].split("Q: ", 1)[0]
    system, human = lc.split("[system]", 1)[1].split("[human]", 1)
    assert "Answer from the context." in system and "[colbert] ColBERT encodes" in system
    assert human.strip().splitlines()[0] == "How does ColBERT score documents?"
    # LlamaIndex's QA prompt, filled with the filtered, reranked nodes
    li = out.split("Q: Which tools find nearest neighbours quickly?", 1)[1]
    assert "Context information is below." in li
    assert "Query: Which tools find nearest neighbours quickly?" in li
    assert "Dense retrieval maps a whole passage" in li


def test_demo_verbose_shows_vllm_logs() -> None:
    res = _demo("-v")
    assert VLLM_LOG.search(res.stdout + res.stderr), (res.stdout + res.stderr)[-2000:]
    assert "prompt a chat model would get:" in res.stdout
