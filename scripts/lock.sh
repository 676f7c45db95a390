#!/usr/bin/env bash
# Regenerate constraints.txt from the active environment: run it where `bash scripts/test.sh` has just passed.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" scripts/lock.py > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt && echo "wrote constraints.txt"
