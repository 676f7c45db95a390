"""The Python API: the README's example runs as printed (on the tiny model), and each function writes the run
directory as its command does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S)
    assert found, "README.md lost its <!-- api-example --> code block"
    return found.group(1)


def test_the_readme_example_runs(tmp_path: Path) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) <= 16
    (tmp_path / "examples").symlink_to(REPO / "examples")  # the example's relative paths, from a scratch folder
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.match(r"exact match \d\.\d\d -> \d\.\d\d, 95% CI \[", lines[-2]), lines
    run = tmp_path / "runs" / "quickstart"
    assert (run / "eval" / "comparison.json").is_file() and (run / "report.html").is_file()
    assert json.loads((run / "export" / "gguf-q8_0.json").read_text())["verified"]
    assert (run / "export" / "gguf-q8_0" / "Modelfile").is_file()
    assert "library_name: peft" in (run / "model" / "README.md").read_text()
    assert lines[-1].strip(), "load(run).generate(...) printed an empty answer"


def test_the_api_names() -> None:
    """`import tunewise` stays light, and train/evaluate/export are callable though they are packages too."""
    code = ("import sys, tunewise; assert 'torch' not in sys.modules; import tunewise.train.run, tunewise.export.merge, "
            "tunewise.lm.generate; from tunewise import api; "
            "assert all(callable(getattr(tunewise, n)) for n in ('run', 'prepare', 'train', 'evaluate', 'compare', "
            "'export', 'load')); print('ok')")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_run_readers_import_no_model_library() -> None:
    """Reading a run (metrics.jsonl, its summary, the checklist, the dashboard) needs neither torch nor transformers:
    `tunewise monitor`, the checklist and the dashboard start in a fraction of a second instead of ~15-40 s."""
    code = ("import sys, tunewise.monitor.metrics, tunewise.monitor.summary, tunewise.checklist, tunewise.ui.app; "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; print(heavy or 'ok')")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr[-2000:]
