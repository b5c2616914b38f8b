"""MaxSimReranker on the packaged model: agreement with vLLM, explanations, cache, bad input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from vllm_retrieval.encoding import EncodedText, Encoder
from vllm_retrieval.scoring import Explanation, MaxSimReranker, RerankResult
from vllm_retrieval.scoring.maxsim import alignment, maxsim

QUERY = "Which cells produce insulin in the pancreas?"
DOCS = [
    "The stock market fell sharply on Tuesday after the announcement.",
    "Insulin is secreted by beta cells located in the pancreatic islets of Langerhans.",
    "Glucagon, made by alpha cells, raises blood glucose.",
    "A recipe for lemon cake with cream cheese frosting.",
    "Pancreatic beta cells sense glucose and release insulin into the blood.",
]


class _Counter:
    """Counts the texts the encoder is asked to encode (documents and queries separately)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.documents: list[list[str]] = []
        self.queries: list[list[str]] = []
        original = Encoder.encode

        def encode(enc: Encoder, texts: Sequence[str], *, is_query: bool = False) -> Any:
            (self.queries if is_query else self.documents).append(list(texts))
            result: list[EncodedText] = original(enc, texts, is_query=is_query)
            return result

        original_a = Encoder.aencode

        async def aencode(enc: Encoder, texts: Sequence[str], *, is_query: bool = False) -> Any:
            (self.queries if is_query else self.documents).append(list(texts))
            return await original_a(enc, texts, is_query=is_query)

        monkeypatch.setattr(Encoder, "encode", encode)
        monkeypatch.setattr(Encoder, "aencode", aencode)

    @property
    def doc_texts(self) -> list[str]:
        return [t for call in self.documents for t in call]


def test_rerank_agrees_with_vllm_llm_score(encoder: Encoder) -> None:
    reranker = MaxSimReranker(encoder=encoder)
    ranking = reranker.rerank(QUERY, DOCS)
    vllm_scores = reranker.score_with_vllm(QUERY, DOCS)
    assert len(vllm_scores) == len(DOCS)
    ours = {r.index: r.score for r in ranking}
    for i, theirs in enumerate(vllm_scores):
        assert ours[i] == pytest.approx(theirs, rel=1e-3)
    # And directly through the function family on the encoder's own token vectors.
    q = encoder.embed_query_tokens(QUERY)
    direct = maxsim(q, encoder.embed_documents_tokens(DOCS))
    np.testing.assert_allclose(direct, vllm_scores, rtol=1e-3)


def test_rerank_ranks_best_first_and_cuts_top_n(encoder: Encoder) -> None:
    reranker = MaxSimReranker(encoder=encoder, top_n=3)
    ranking = reranker.rerank(QUERY, DOCS)
    assert len(ranking) == 3
    assert all(isinstance(r, RerankResult) for r in ranking)
    assert {ranking[0].index, ranking[1].index} == {1, 4}  # the two insulin sentences
    scores = [r.score for r in ranking]
    assert scores == sorted(scores, reverse=True)
    full = reranker.rerank(QUERY, DOCS, top_n=len(DOCS) + 10)
    assert sorted(r.index for r in full) == list(range(len(DOCS)))
    assert full[:3] == ranking
    assert reranker.rerank(QUERY, DOCS, top_n=1) == ranking[:1]


def test_normalize_divides_by_query_length(encoder: Encoder) -> None:
    plain = MaxSimReranker(encoder=encoder).rerank(QUERY, DOCS)
    mean = MaxSimReranker(encoder=encoder, normalize=True).rerank(QUERY, DOCS)
    q_len = encoder.embed_query_tokens(QUERY).shape[0]
    assert [r.index for r in plain] == [r.index for r in mean]
    for a, b in zip(plain, mean, strict=True):
        assert b.score == pytest.approx(a.score / q_len, rel=1e-6)


async def test_arerank_equals_rerank(encoder: Encoder) -> None:
    reranker = MaxSimReranker(encoder=encoder, top_n=4)
    sync = reranker.rerank(QUERY, DOCS)
    got = await reranker.arerank(QUERY, DOCS)
    assert [r.index for r in got] == [r.index for r in sync]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in sync], rtol=1e-5)
    assert await reranker.arerank(QUERY, []) == []
    with pytest.raises(ValueError, match="query is empty"):
        await reranker.arerank("", DOCS)


def test_explain_is_consistent_with_maxsim(encoder: Encoder) -> None:
    reranker = MaxSimReranker(encoder=encoder)
    exp = reranker.explain(QUERY, DOCS[1])
    assert isinstance(exp, Explanation)
    q = encoder.embed_query_tokens(QUERY)
    d = encoder.embed_documents_tokens([DOCS[1]])[0]
    assert exp.similarities.shape == (q.shape[0], d.shape[0])
    assert len(exp.query_tokens) == q.shape[0] and len(exp.document_tokens) == d.shape[0]
    assert len(exp.matches) == q.shape[0]
    rows, sims = alignment(q, d)
    for i, m in enumerate(exp.matches):
        assert m.query_position == i and m.query_token == exp.query_tokens[i]
        assert m.document_position == int(rows[i])
        assert m.document_token == exp.document_tokens[m.document_position]
        assert m.similarity == pytest.approx(float(sims[i]), abs=1e-5)
        assert m.similarity == pytest.approx(float(exp.similarities[i].max()), abs=1e-6)
    total = sum(m.similarity for m in exp.matches)
    assert exp.score == pytest.approx(total, rel=1e-5)
    ranked = {r.index: r.score for r in reranker.rerank(QUERY, DOCS)}
    assert exp.score == pytest.approx(ranked[1], rel=1e-5)
    assert "insulin" in exp.query_tokens
    insulin = exp.matches[exp.query_tokens.index("insulin")]
    assert insulin.document_token == "insulin" and insulin.similarity > 0.8
    # normalised reranker: the score is the mean of the similarities
    mean = MaxSimReranker(encoder=encoder, normalize=True).explain(QUERY, DOCS[1])
    assert mean.score == pytest.approx(total / len(exp.matches), rel=1e-5)


def test_cache_hits_avoid_reencoding(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    reranker = MaxSimReranker(encoder=encoder, cache_size=3)
    counter = _Counter(monkeypatch)
    first = reranker.rerank(QUERY, DOCS[:3])
    assert counter.documents == [DOCS[:3]]  # one batched call
    second = reranker.rerank(QUERY, DOCS[:3])
    assert counter.documents == [DOCS[:3]]  # all cached: nothing encoded
    assert first == second
    third = reranker.rerank(QUERY, [DOCS[3], DOCS[0], DOCS[3]])
    assert counter.documents[-1] == [DOCS[3]]  # only the new text, once
    by_index = {r.index: r.score for r in third}
    assert by_index[0] == by_index[2]  # the same text twice: the same tokens, the same score
    assert reranker.cache_info == {"size": 3, "capacity": 3}
    # LRU: DOCS[1] was the least recently used and has been evicted
    reranker.rerank(QUERY, [DOCS[1]])
    assert counter.documents[-1] == [DOCS[1]]
    reranker.clear_cache()
    assert reranker.cache_info["size"] == 0


def test_known_document_tokens_are_not_reencoded(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker = MaxSimReranker(encoder=encoder)  # cache off
    tokens = encoder.embed_documents_tokens(DOCS)
    expected = reranker.rerank(QUERY, DOCS)
    counter = _Counter(monkeypatch)
    got = reranker.rerank(QUERY, DOCS, document_tokens=tokens)
    assert counter.doc_texts == []
    assert [r.index for r in got] == [r.index for r in expected]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], rtol=1e-6)
    as_torch = [torch.from_numpy(t).to(torch.bfloat16) for t in tokens]
    got_t = reranker.rerank(QUERY, DOCS, document_tokens=as_torch)  # type: ignore[arg-type]
    assert counter.doc_texts == []
    np.testing.assert_allclose([r.score for r in got_t], [r.score for r in got], rtol=2e-2)
    partial: list[np.ndarray | None] = [tokens[0], None, tokens[2], None, None]
    reranker.rerank(QUERY, DOCS, document_tokens=partial)
    assert counter.documents[-1] == [DOCS[1], DOCS[3], DOCS[4]]
    with pytest.raises(ValueError, match="entries"):
        reranker.rerank(QUERY, DOCS, document_tokens=tokens[:2])


def test_empty_string_document_ranks_last(encoder: Encoder) -> None:
    ranking = MaxSimReranker(encoder=encoder).rerank(QUERY, ["", DOCS[1], DOCS[3]])
    assert ranking[-1].index == 0 and ranking[-1].score == float("-inf")
    assert ranking[0].index == 1


def test_bad_input(encoder: Encoder) -> None:
    reranker = MaxSimReranker(encoder=encoder)
    with pytest.raises(ValueError, match="query is empty"):
        reranker.rerank("", DOCS)
    with pytest.raises(ValueError, match="query is empty"):
        reranker.rerank("   ", DOCS)
    with pytest.raises(TypeError, match="query"):
        reranker.rerank(None, DOCS)  # type: ignore[arg-type]
    assert reranker.rerank(QUERY, []) == []
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(QUERY, DOCS, top_n=0)
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(QUERY, DOCS, top_n=-2)
    with pytest.raises(TypeError, match="single string"):
        reranker.rerank(QUERY, "one document")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        reranker.rerank(QUERY, ["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        MaxSimReranker(encoder=encoder, top_n=0)
    with pytest.raises(ValidationError):
        MaxSimReranker(encoder=encoder, cache_size=-1)
    with pytest.raises(ValidationError):
        MaxSimReranker(encoder=encoder, unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="query is empty"):
        reranker.explain("", DOCS[0])
    with pytest.raises(ValueError, match="document is empty"):
        reranker.explain(QUERY, "")
    assert reranker.score_with_vllm(QUERY, []) == []


class _FakeEncoder:
    """Token vectors derived from the text (no engine): enough for the reranker's plumbing."""

    class model_profile:  # mirrors Encoder.model_profile
        takes_images = False

    @staticmethod
    def _tokens(text: str) -> np.ndarray:
        rng = np.random.default_rng(sum(text.encode()))
        rows = rng.standard_normal((len(text.split()), 8)).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def embed_query_tokens(self, text: str) -> np.ndarray:
        return self._tokens(text)

    def embed_documents_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self._tokens(t) for t in texts]

    async def aembed_query_tokens(self, text: str) -> np.ndarray:
        return self._tokens(text)

    async def aembed_documents_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self._tokens(t) for t in texts]


async def test_arerank_scores_and_hashes_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MaxSim, the cache's content hashing and the token conversion never run on the loop."""
    import asyncio
    import threading

    from vllm_retrieval.scoring import reranker as mod

    loop_thread = threading.get_ident()
    calls: dict[str, list[int]] = {"maxsim": [], "hash": []}
    real_maxsim, real_key = mod.maxsim, mod._content_key

    def spy_maxsim(*args: Any, **kwargs: Any) -> Any:
        calls["maxsim"].append(threading.get_ident())
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()  # a worker thread has no running loop
        return real_maxsim(*args, **kwargs)

    sync = MaxSimReranker.model_construct(encoder=_FakeEncoder(), top_n=None, normalize=False)
    expected = sync.rerank(QUERY, DOCS)

    def spy_key(doc: Any) -> str:
        calls["hash"].append(threading.get_ident())
        return real_key(doc)

    monkeypatch.setattr(mod, "maxsim", spy_maxsim)
    monkeypatch.setattr(mod, "_content_key", spy_key)
    reranker = MaxSimReranker.model_construct(
        encoder=_FakeEncoder(), top_n=None, normalize=False, cache_size=8
    )
    given = [None, torch.from_numpy(_FakeEncoder._tokens(DOCS[1])).double(), None, None, None]
    got = await reranker.arerank(QUERY, DOCS, document_tokens=given)
    assert calls["maxsim"] and calls["hash"]
    assert loop_thread not in calls["maxsim"] + calls["hash"]
    assert [r.index for r in got] == [r.index for r in expected]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], rtol=1e-5)
    calls["maxsim"].clear()
    again = await reranker.arerank(QUERY, DOCS)  # cache hits: still scored off the loop
    assert again == got and calls["maxsim"] and loop_thread not in calls["maxsim"]
