#!/usr/bin/env bash
# Install, then fine-tune SmolLM2-135M-Instruct with LoRA on the bundled topic dataset, evaluate base and tuned
# models on the held-out split, and write runs/quickstart/report.html. Offline; a few minutes on a laptop CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
"$PY" -m tunewise run examples/quickstart.yaml "$@"
