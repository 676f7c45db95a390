"""Shareable outputs: the filled model card, a portable base reference that tunewise still resolves offline, and one
layout for `export --to-dir` and `--push-to-hub` (the hub is a local stand-in here, never the network)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_export import train_tiny_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compared_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A trained tiny LoRA run, evaluated (base and tuned) and compared, its report (and so its cards) written."""
    from tunewise.evaluate.run import evaluate_run
    from tunewise.pipeline import compare_stage, report_stage
    from tunewise.rundir import RunDir

    config, run_dir = train_tiny_run(tiny_dir, tmp_path_factory.getbasetemp() / "card-run")
    card = (run_dir / "model" / "README.md").read_text(encoding="utf-8")
    assert "Not evaluated yet" in card and "More Information Needed" not in card  # written by training itself
    config.eval.max_examples = 16
    for which in ("base", "tuned"):
        evaluate_run(config, run_dir, which)
    compare_stage(config, RunDir.of(run_dir))
    report_stage(config, RunDir.of(run_dir))
    return config, run_dir


def test_the_card_says_what_the_model_is(compared_run: tuple[Any, Path], tiny_dir: Path) -> None:
    from tunewise.model_card import weights_sha256

    _, run = compared_run
    card = (run / "model" / "README.md").read_text(encoding="utf-8")
    comparison = json.loads((run / "eval" / "comparison.json").read_text(encoding="utf-8"))
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: peft")
    assert "`tiny` (no hub id known)" in card and weights_sha256(tiny_dir) in card
    assert "LoRA: r 16, alpha 32" in card and "learning rate 0.003" in card and "60 steps" in card
    assert "rows read 400, kept 400: train 320, validation 40, test 40" in card
    assert f"On {comparison['n']} held-out test examples" in card
    exact = comparison["metrics"]["exact_match"]
    row = next(line for line in card.splitlines() if line.startswith("| exact_match |"))
    assert f"{exact['values']['tuned']:.3f}" in row and f"[{exact['ci'][0]:+.3f}, {exact['ci'][1]:+.3f}]" in row
    assert "## Intended use" in card and "chat_template.jinja" in card
    assert (run / "model" / "chat_template.jinja").is_file()  # the template travels with the tokenizer


def test_portable_base_still_loads_offline(compared_run: tuple[Any, Path], tmp_path: Path) -> None:
    """adapter_config.json may name a hub id this machine can't reach; tunewise_base.json keeps the local base."""
    from tunewise.lm.loading import classify as resolve_source
    from tunewise.lm.loading import load_source

    _, run = compared_run
    copy = tmp_path / "adapter"
    shutil.copytree(run / "model", copy)
    adapter = json.loads((copy / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = "nobody/not-reachable-offline"
    (copy / "adapter_config.json").write_text(json.dumps(adapter))
    source = resolve_source(copy)
    assert source.base == "tiny"
    model, tokenizer = load_source(source, device="cpu", dtype=None)
    assert tokenizer.chat_template and hasattr(model, "peft_config")


class LocalHub:
    """huggingface_hub.HfApi's create_repo + upload_folder, into a local folder (the test's stand-in for the hub)."""

    root: Path

    def __init__(self, token: Any = None) -> None:
        pass

    def create_repo(self, repo_id: str, repo_type: str, private: bool, exist_ok: bool) -> str:
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)
        return f"local://{repo_id}"

    def upload_folder(self, repo_id: str, repo_type: str, folder_path: str, commit_message: str) -> str:
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return "commit-1"


def _tree(root: Path, where: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes().replace(where.encode(), b"WHERE")
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_to_dir_and_push_to_hub_write_the_same_layout(compared_run: tuple[Any, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from typer.testing import CliRunner

    from tunewise.cli import app

    _, run = compared_run
    out = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "tunewise", "export", str(run), "--to-dir", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny"  # no path of this machine in a shared copy
    assert "local" not in json.loads((out / "tunewise_base.json").read_text())
    assert (out / "comparison.json").is_file() and (out / "adapter_model.safetensors").is_file()

    LocalHub.root = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub, "HfApi", LocalHub)
    result = CliRunner().invoke(app, ["export", str(run), "--push-to-hub", "me/toy-adapter"])
    assert result.exit_code == 0, result.output
    pushed = LocalHub.root / "me" / "toy-adapter"
    assert _tree(out, str(out.resolve())) == _tree(pushed, "me/toy-adapter")
    assert 'PeftModel.from_pretrained(base, "me/toy-adapter")' in (pushed / "README.md").read_text()

    # a folder of the user's is never overwritten
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = CliRunner().invoke(app, ["export", str(run), "--to-dir", str(mine)])
    assert refused.exit_code == 2 and "not empty" in refused.output
    assert (mine / "notes.txt").read_text() == "keep"
