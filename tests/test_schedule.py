"""training.epochs: null (the default) = automatic: small data sets get enough passes for about 200 steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.cli_processes import Zygote
from tests.conftest import reversal_rows
from tests.data_fixtures import write_jsonl
from tunewise.config import config_from_dict
from tunewise.train.schedule import MAX_EPOCHS, TARGET_STEPS, automatic_epochs, planned_epochs, resolve_epochs, steps_per_epoch


def test_small_data_sets_get_more_passes_large_ones_one() -> None:
    assert automatic_epochs(60) == MAX_EPOCHS  # 480 rows at batch 8: 3.3 passes wanted, 3 at most
    assert automatic_epochs(100) == 2.0
    assert automatic_epochs(71) == 2.9  # rounded up to a tenth: 2.9 x 71 = 206 steps >= 200
    assert automatic_epochs(TARGET_STEPS) == 1.0
    assert automatic_epochs(5000) == 1.0
    assert automatic_epochs(1) == MAX_EPOCHS


def test_steps_per_epoch_count_as_the_trainer_does() -> None:
    training = config_from_dict({"training": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}}).training
    assert steps_per_epoch(40, training) == 5
    assert steps_per_epoch(41, training) == 6  # a last partial batch makes a step
    assert steps_per_epoch(40, training, world_size=2) == 3  # 40 / (4 x 2) = 5 batches, accumulated by 2


def test_written_epochs_win_and_the_choice_says_why() -> None:
    written = config_from_dict({"training": {"epochs": 1.5}})
    assert planned_epochs(written.training, 10) == {"epochs": 1.5, "source": "config", "reason": "training.epochs"}
    config = config_from_dict({})
    assert config.training.epochs is None
    resolved, choice = resolve_epochs(config, examples=480)
    assert resolved.training.epochs == 3.0 and choice["source"] == "automatic"
    assert "60 steps per epoch" in choice["reason"]
    assert config.training.epochs is None, "the config as written is not changed (the run's fingerprint keeps null)"


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def test_cli_estimate_and_training_agree_on_the_automatic_epochs(zygote: Zygote, tiny_dir: Path, tmp_path: Path) -> None:
    """Through the command line: 32 training rows at batch 8 are 4 steps per pass, so the run makes 3 passes (12
    steps); the estimate plans the same steps and evaluations, training says why, and train_summary.json records the
    choices."""
    data = write_jsonl(tmp_path / "rows.jsonl", reversal_rows(40, seed=3))
    config = {"name": "auto", "output_dir": str(tmp_path / "runs"), "model": str(tiny_dir), "method": "lora",
              "data": {"path": str(data), "split": {"train": 0.8, "val": 0.1, "test": 0.1}},
              "training": {"save_steps": 1000}, "monitor": {"live": "off", "plots": False}}
    path = tmp_path / "auto.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    run = tmp_path / "runs" / "auto"

    prepared = zygote.run("data", "prepare", str(path), "--no-progress", cwd=tmp_path)
    assert prepared.code == 0, prepared.stderr
    estimated = zygote.run("estimate", str(path), "--methods", "lora", "--no-calibrate", cwd=tmp_path)
    assert estimated.code == 0, estimated.stderr
    planned = json.loads((run / "estimate.json").read_text())["methods"]["lora"]["time"]["total_steps"]
    trained = zygote.run("train", str(path), cwd=tmp_path)
    assert trained.code == 0, trained.stderr
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs_planned"]["source"] == "automatic" and summary["epochs_planned"]["epochs"] == 3.0
    assert summary["steps"] == planned == 12, (summary["steps"], planned)
    assert summary["epochs"] == pytest.approx(3.0)
    assert "epochs: 3 (automatic): 4 steps per epoch: 3 epochs at most" in trained.stdout + trained.stderr
    # 4 validation rows cost more than 5% (training.eval_budget) of a 32-row epoch: evaluated every N > 4 steps and
    # at the last, and the estimate counted the same evaluations
    said = trained.stdout + trained.stderr
    every = summary["eval_every_steps"]
    assert every > 4 and f"in-training evaluation: every {every} steps and at the last" in said, said
    history = json.loads((run / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text())["log_history"]
    evaluated = [h["step"] for h in history if "eval_loss" in h]
    assert evaluated == [*range(every, 12, every), 12], (evaluated, every)
    timing = json.loads((run / "estimate.json").read_text())["methods"]["lora"]["time"]
    assert timing["evaluations"] == len(evaluated), timing
    # training.learning_rate unset: LoRA's automatic rate, said once, recorded, and the rate the optimizer started at
    assert summary["learning_rate"] == {"learning_rate": 1e-3, "source": "automatic", "reason": "lora"}, summary
    assert "learning rate: 0.001 (automatic): lora" in said, said
    logged = [h["learning_rate"] for h in history if "learning_rate" in h]
    assert logged and max(logged) <= 1e-3 and logged[0] == pytest.approx(1e-3, rel=0.2), logged
    # the report (which rewrites the model card from the config as written, rate null) says the rate training used
    reported = zygote.run("report", str(run), cwd=tmp_path)
    assert reported.code == 0, reported.stderr
    card = (run / "model" / "README.md").read_text(encoding="utf-8")
    assert "learning rate 0.001 (automatic)" in card, card
