#!/usr/bin/env bash
# Install tunewise with its test tools, then run the test suite (offline; about 5 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
PY=${PYTHON:-python3}
"$PY" -m pytest -q "$@"
