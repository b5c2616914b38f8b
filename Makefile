# The README's two commands: `make demo` and `make test`. Both build .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU vLLM unless a CUDA GPU is visible.
BACKEND ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
EXTRAS := $(BACKEND),models,images,langchain,qdrant,eval,cli,dev
LATE_EXTRAS := llamaindex

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export VLLM_NO_USAGE_STATS := 1
export DO_NOT_TRACK := 1

.PHONY: all venv test lint typecheck unit demo clean

all: test

$(STAMP): pyproject.toml Makefile scripts/install.sh integrations/vllm_retrieval/scoring/_maxsim_kernel.c
	BACKEND=$(BACKEND) EXTRAS=$(EXTRAS) LATE_EXTRAS=$(LATE_EXTRAS) PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check integrations tests benchmarks cookbook
	$(VENV)/bin/ruff format --check integrations tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) lint typecheck
	$(PY) -m pytest -ra $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m vllm_retrieval.demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
