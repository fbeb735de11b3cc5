#!/usr/bin/env bash
# Regenerates the Hugging Face parity fixtures (tests/fixtures/hf/, committed; read by
# tests/test_hf_parity.cpp): a virtual environment .venv-hf in the repository with torch (CPU
# build), transformers and safetensors, then scripts/hf_fixtures.py in it. Not part of `make test`
# (the environment is gigabytes). Arguments go to hf_fixtures.py (e.g. --family mixtral).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-hf
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --quiet)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # The CPU wheel from PyTorch's own index; where that index cannot be reached (only PyPI is),
  # PyPI's default wheel, which runs on the CPU as well (its CUDA libraries come along unused).
  "${PIP[@]}" torch --index-url https://download.pytorch.org/whl/cpu || "${PIP[@]}" torch
fi
"$VENV/bin/python" -c "import transformers, safetensors" 2>/dev/null || "${PIP[@]}" transformers safetensors

exec "$VENV/bin/python" scripts/hf_fixtures.py "$@"
