"""Evaluation on the tiny model: standalone (model folder, adapter folder, run directory), the eval stage's error
analysis and perplexity, and the `eval` / `compare` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import reversal_rows
from tunewise.cli import app
from tunewise.evaluate.standalone import evaluate_model
from tunewise.lm.loading import classify as resolve_source

runner = CliRunner()


@pytest.fixture(scope="module")
def label_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small yes/no task in chat format (labels: the tiny model cannot do it, the point is the plumbing)."""
    rows = reversal_rows(8, seed=3)
    path = tmp_path_factory.mktemp("labels") / "test.jsonl"
    path.write_text(
        "".join(
            json.dumps({"messages": [r["messages"][0], {"role": "assistant", "content": ["yes", "no"][i % 2]}]}) + "\n"
            for i, r in enumerate(rows)
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def adapter_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised LoRA adapter of the tiny model (B = 0: it answers exactly as the base does)."""
    from peft import LoraConfig, get_peft_model

    from tunewise.lm.loading import load_model

    model = get_peft_model(load_model(str(tiny_dir)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(str(path))
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_dir)
    return path


def test_standalone_eval_of_a_model_folder_writes_everything(tiny_dir: Path, label_file: Path, tmp_path: Path) -> None:
    result = evaluate_model(tiny_dir, label_file, tmp_path, max_new_tokens=4, metrics=["exact_match"])
    name = tiny_dir.name
    assert result["n"] == 8 and result["labels"] == ["no", "yes"]
    assert set(result["metrics"]) == {"exact_match", "label_found", "constrained_accuracy", "perplexity"}
    assert result["metrics"]["perplexity"] > 1.0 and result["perplexity_source"].startswith("label scores")
    records = [json.loads(line) for line in (tmp_path / f"predictions_{name}.jsonl").read_text().splitlines()]
    assert len(records) == 8 and set(records[0]["scores"]) == {"exact_match", "label_found", "constrained_accuracy"}
    assert records[0]["constrained"]["label"] in ("no", "yes") and set(records[0]["constrained"]["logprobs"]) == {"no", "yes"}
    # the perplexity taken from the label scores is the one a separate forward pass gives
    from tunewise.evaluate.perplexity import perplexity
    from tunewise.evaluate.standalone import read_examples
    from tunewise.lm.loading import load_model, load_tokenizer

    direct = perplexity(load_model(str(tiny_dir)), load_tokenizer(str(tiny_dir)), read_examples(label_file))
    assert result["metrics"]["perplexity"] == pytest.approx(direct, rel=1e-4)
    errors = json.loads((tmp_path / f"errors_{name}.json").read_text())
    assert errors["by_input_length"]["unit"] == "tokens"
    assert sum(errors["counts_by_kind"].values()) == errors["errors"]
    assert (tmp_path / "plots" / f"confusion_{name}.png").is_file()


def test_adapter_folder_loads_its_base(adapter_dir: Path, tiny_dir: Path, label_file: Path, tmp_path: Path) -> None:
    source = resolve_source(adapter_dir)
    assert source.base == str(tiny_dir) and source.name == "adapter"
    adapter = evaluate_model(adapter_dir, label_file, tmp_path, max_new_tokens=4, metrics=["exact_match"])
    base = evaluate_model(tiny_dir, label_file, tmp_path, max_new_tokens=4, metrics=["exact_match"], name="base")
    preds = lambda n: [json.loads(line)["prediction"] for line in (tmp_path / f"predictions_{n}.jsonl").read_text().splitlines()]  # noqa: E731
    assert preds("adapter") == preds("base"), "a zero-initialised LoRA answers as its base"
    assert adapter["metrics"]["perplexity"] == pytest.approx(base["metrics"]["perplexity"], rel=1e-4)


def test_bad_model_paths_say_what_to_pass(tmp_path: Path, label_file: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        resolve_source(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="base_model_name_or_path"):
        resolve_source(tmp_path)


def test_eval_stage_writes_errors_and_perplexity(toy_run: dict[str, Any]) -> None:
    run = Path(toy_run["run_dir"])
    for which in ("base", "tuned"):
        errors = json.loads((run / "eval" / f"errors_{which}.json").read_text())
        assert errors["n"] == toy_run[which]["n"] and errors["main_metric"] == "accuracy"
        assert "perplexity" in toy_run[which]["metrics"]
    assert toy_run["tuned"]["metrics"]["perplexity"] < toy_run["base"]["metrics"]["perplexity"]
    assert toy_run["comparison"]["metrics"]["perplexity"]["delta"] < 0
    assert "label_found" not in toy_run["tuned"]["metrics"], "reversed words are not labels"
    html = Path(toy_run["report"]).read_text(encoding="utf-8")
    assert "still fails" in html


def test_cli_eval_standalone_and_compare_files(tiny_dir: Path, adapter_dir: Path, label_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for model in (str(tiny_dir), str(adapter_dir)):
        result = runner.invoke(app, ["eval", "--model", model, "--data", str(label_file), "--out", str(out),
                                     "--metrics", "exact_match,token_f1", "--max-new-tokens", "4"])
        assert result.exit_code == 0, result.output
        assert "label_found" in result.output and "perplexity" in result.output
    result = runner.invoke(app, ["compare", str(out / f"predictions_{tiny_dir.name}.jsonl"), str(out / "predictions_adapter.jsonl")])
    assert result.exit_code == 0, result.output
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["models"] == [tiny_dir.name, "adapter"]
    assert comparison["metrics"]["exact_match"]["delta"] == 0.0 and "perplexity" in comparison["metrics"]


def test_cli_eval_errors_are_one_line(tiny_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--model", str(tiny_dir)])
    assert result.exit_code == 2 and "--data" in result.output
    result = runner.invoke(app, ["eval", "--model", str(tmp_path), "--data", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "not a model folder" in result.output
    result = runner.invoke(app, ["eval"])
    assert result.exit_code == 2 and "model folder" in result.output
