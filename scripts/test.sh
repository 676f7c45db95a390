#!/usr/bin/env bash
# Install tunewise with its test tools, then run the test suite (offline) in TEST_WORKERS processes (default 2;
# every test keeps torch to one thread). About 4 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
# The dashboard's browser tests (tests/test_ui_browser.py) drive headless Chromium from Debian's packages; skipped at
# once when both are here, installed with apt where this runs as root (CI), else those tests skip and say why.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver (apt) for the dashboard's browser tests"
    (apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1; }) \
      || echo "could not install chromium with apt: the browser tests will be skipped" >&2
  else
    echo "no chromium/chromedriver and no apt as root: the dashboard's browser tests will be skipped" >&2
  fi
fi
PY=${PYTHON:-python3}
# --dist loadfile: a test file runs in one worker, so its module-scoped fixtures are built once
"$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
