"""The command line: thin over the library, clear one-line errors with exit code 2, stages on a run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tunewise.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_the_stages() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "train", "eval", "compare", "report", "data"):
        assert command in result.output


def test_invalid_config_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model: tiny\nlora: {r: 0}\ntraining: {learning_rate: 2}\nmethod: magic\n")
    # a real process, so we see exactly what a user sees on stderr
    result = subprocess.run(
        [sys.executable, "-m", "tunewise", "run", str(config)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    for field in ("lora.r", "training.learning_rate", "method"):
        assert field in result.stderr


def test_bad_override_and_missing_config_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(ROOT / "examples" / "quickstart.yaml"), "training.epochs=-1"])
    assert result.exit_code == 2 and "training.epochs" in result.output
    result = runner.invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "not found" in result.output


def test_stage_commands_work_on_a_run_directory(toy_run: dict[str, Any]) -> None:
    run = toy_run["run_dir"]
    (Path(run) / "report.html").unlink()
    result = runner.invoke(app, ["report", run])
    assert result.exit_code == 0, result.output
    assert (Path(run) / "report.html").is_file()

    result = runner.invoke(app, ["compare", run])
    assert result.exit_code == 0, result.output
    assert "exact_match" in result.output

    result = runner.invoke(app, ["eval", run, "--model", "tuned"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((Path(run) / "eval" / "metrics_tuned.json").read_text())
    assert metrics["metrics"]["exact_match"] == toy_run["tuned"]["metrics"]["exact_match"], "evaluation is deterministic"


def test_train_without_prepared_data_says_what_to_run(tmp_path: Path, tiny_dir: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"name: empty\noutput_dir: {tmp_path}\nmodel: {tiny_dir}\n")
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 2
    assert "tunewise data prepare" in result.output
