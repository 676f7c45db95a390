#!/usr/bin/env bash
# Install tunewise with its test tools, then run the test suite (offline) in TEST_WORKERS processes (default 2;
# every test keeps torch to one thread). About 4 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
PY=${PYTHON:-python3}
# --dist loadfile: a test file runs in one worker, so its module-scoped fixtures are built once
"$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
