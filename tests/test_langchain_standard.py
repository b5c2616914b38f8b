"""langchain-tests standard suites, run unmodified against the real vLLM CPU engine.

The suites build their objects from properties and function-scoped fixtures, so they cannot
take the session ``encoder`` fixture directly. They use :func:`shared_encoder` instead: one
``Encoder()`` per process, with the same settings as the session fixture's, hence the same
vLLM engine (encoders with equal settings share one engine), started once.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from vllm_retrieval import Encoder
from vllm_retrieval.langchain import (
    VLLMEmbeddings,
    VLLMMultiVectorRetriever,
    VLLMMultiVectorStore,
)
from vllm_retrieval.store import MultiVectorStore

RETRIEVER_TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The mitochondrion is the powerhouse of the cell.",
    "Python is a popular programming language for data science.",
    "The Great Wall of China stretches thousands of kilometres.",
    "Insulin regulates the level of glucose in the blood.",
    "Mount Everest is the highest mountain above sea level.",
    "A black hole is a region of spacetime where gravity prevents escape.",
]


@functools.cache
def shared_encoder() -> Encoder:
    """One Encoder per process; same settings as the session fixture, so the same engine."""
    return Encoder().start()


class TestVLLMEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[VLLMEmbeddings]:
        return VLLMEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        # Building VLLMEmbeddings loads the tokenizer only: no engine starts here.
        return {"batch_size": 16}


class TestVLLMEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[VLLMEmbeddings]:
        return VLLMEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"encoder": shared_encoder()}


@functools.cache
def retriever_store() -> MultiVectorStore:
    """A small populated store shared by the retriever suite (read-only there)."""
    store = MultiVectorStore(location=":memory:", encoder=shared_encoder())
    store.add_texts(RETRIEVER_TEXTS, [{"n": i} for i in range(len(RETRIEVER_TEXTS))])
    return store


class TestVLLMMultiVectorRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return VLLMMultiVectorRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"store": retriever_store(), "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "Which organelle produces energy in the cell?"


class TestVLLMMultiVectorStoreStandard(VectorStoreIntegrationTests):
    """Each test gets a fresh embedded Qdrant Edge store in its own temp dir."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VLLMMultiVectorStore]:
        vs = VLLMMultiVectorStore(encoder=shared_encoder(), path=tmp_path / f"s-{uuid.uuid4()}")
        try:
            yield vs
        finally:
            vs.store.close()
