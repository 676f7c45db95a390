"""Whole training runs on the tiny model: deterministic (kill-and-resume from the command line is in
tests/test_crash_safety.py), refusing a changed config or dataset on resume, the best evaluation as the final model, early stopping, 8-bit AdamW, and two
processes under torchrun ending with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import reversal_rows
from tests.test_train_loss import random_model
from tunewise.config import Config, config_from_dict
from tunewise.example import Example
from tunewise.lm.device import resolve_precision
from tunewise.train.best import BestModel, GenerationMetric
from tunewise.lm.collate import PackCollator
from tunewise.train.run import to_dataset, train_run, training_arguments
from tunewise.lm.chat import encode_examples
from tunewise.train.trainer import TunewiseTrainer

REPO = Path(__file__).resolve().parents[1]


def prepared_run(tiny_dir: Path, root: Path, name: str, **training: Any) -> Config:
    """A LoRA config on 240 reversal rows with its data prepared in ``root/runs/name``."""
    from tunewise.pipeline import init_run, prepare_stage

    data = root / "reverse.jsonl"
    if not data.is_file():
        root.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(240, seed=3)), encoding="utf-8")
    config = config_from_dict({
        "name": name, "output_dir": str(root / "runs"), "model": str(tiny_dir), "method": "lora",
        "data": {"path": str(data), "split": {"train": 0.8, "val": 0.1, "test": 0.1}, "max_tokens": 64},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1},  # dropout: the RNG state must be restored on resume
        "monitor": {"live": "plain", "plots": False},
        "training": {"max_steps": 30, "per_device_train_batch_size": 8, "learning_rate": 3e-3, "logging_steps": 1,
                     "save_steps": 5, "eval_steps": 10, "save_total_limit": 3, **training},
    })
    prepare_stage(config, init_run(config))
    return config


def loss_curve(run_dir: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, eval) losses by step from the final checkpoint's trainer state (the whole history, resumed or not)."""
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]
    return ([(h["step"], h["loss"]) for h in history if "loss" in h],
            [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h])


@pytest.fixture(scope="module")
def reference(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict[str, Any]]:
    config = prepared_run(tiny_dir, tmp_path_factory.mktemp("runs"), "reference")
    return config, train_run(config, config.run_dir)


def test_the_same_config_twice_gives_the_same_run(tiny_dir: Path, tmp_path: Path,
                                                  reference: tuple[Config, dict[str, Any]]) -> None:
    config, summary = reference
    again = prepared_run(tiny_dir, tmp_path, "again")
    second = train_run(again, again.run_dir)
    assert summary["packing"] is True and summary["steps"] == 30
    assert loss_curve(Path(again.run_dir)) == loss_curve(Path(config.run_dir))
    assert second["weights_sha256"] == summary["weights_sha256"]
    train, _ = loss_curve(Path(config.run_dir))
    assert train[-1][1] < train[0][1]  # and it learns


def test_resume_refuses_another_config_or_dataset(tiny_dir: Path, tmp_path: Path) -> None:
    from tunewise.train.resume import ResumeMismatchError

    config = prepared_run(tiny_dir, tmp_path, "changed", max_steps=5, eval_steps=5)
    train_run(config, config.run_dir)
    changed = config.model_copy(update={"training": config.training.model_copy(update={"learning_rate": 1e-3})})
    with pytest.raises(ResumeMismatchError, match=r"training.learning_rate: 0.003 -> 0.001"):
        train_run(changed, config.run_dir, resume=True)
    # logging and saving cadence may change
    relaxed = config.model_copy(update={"training": config.training.model_copy(update={"logging_steps": 2, "max_steps": 6})})
    with pytest.raises(ResumeMismatchError, match="max_steps"):
        train_run(relaxed, config.run_dir, resume=True)
    train_file = Path(config.run_dir) / "data" / "train.jsonl"
    train_file.write_text(train_file.read_text().splitlines(keepends=True)[0] * 3 + train_file.read_text())
    with pytest.raises(ResumeMismatchError, match=r"data/train.jsonl changed"):
        train_run(config, config.run_dir, resume=True)


def _conflicting_data(tokenizer: Any) -> tuple[list[Any], list[Any], list[Example]]:
    """Training teaches answer A; validation expects answer B for the same questions, so eval loss only rises."""
    def rows(answer: str) -> list[Example]:
        return [Example(messages=[{"role": "user", "content": f"question {i}"},
                                  {"role": "assistant", "content": answer}]) for i in range(16)]
    val = rows("blue sky")
    return encode_examples(rows("red apple"), tokenizer), encode_examples(val, tokenizer), val


def _trainer(tokenizer: Any, tmp: Path, best: BestModel, **training: Any) -> TunewiseTrainer:
    config = config_from_dict({"method": "full", "training": {
        "max_steps": 20, "per_device_train_batch_size": 8, "learning_rate": 3e-2, "eval_steps": 2, "logging_steps": 2,
        "save_steps": 1000, "group_by_length": False, **training}})
    train, val, _ = _conflicting_data(tokenizer)
    args = training_arguments(config, tmp, has_eval=True, precision=resolve_precision(device="cpu"))
    args.disable_tqdm = True
    return TunewiseTrainer(model=random_model(tokenizer), args=args, train_dataset=to_dataset(train),
                           eval_dataset=to_dataset(val), data_collator=PackCollator(tokenizer.pad_token_id, 256),
                           callbacks=[best])


def test_early_stopping_and_the_best_evaluation_becomes_the_final_model(tiny_tokenizer: Any, tmp_path: Path) -> None:
    best = BestModel(tmp_path, "eval_loss", patience=3, min_delta=0.0)
    trainer = _trainer(tiny_tokenizer, tmp_path, best)
    trainer.train()
    evals = [(h["step"], h["eval_loss"]) for h in trainer.state.log_history if "eval_loss" in h]
    assert trainer.state.global_step < 20 and best.stopped_at == trainer.state.global_step
    assert best.best_step == min(evals, key=lambda e: e[1])[0] < trainer.state.global_step
    assert len([s for s, _ in evals if s > best.best_step]) == 3  # patience: three evaluations without improvement
    last_loss = trainer.evaluate()["eval_loss"]
    assert best.restore_best(trainer.model, trainer.state.global_step)
    restored = trainer.evaluate()["eval_loss"]
    assert restored == pytest.approx(best.best_value, rel=1e-5) and restored < last_loss


def test_a_generation_metric_chooses_the_best_model(tiny_tokenizer: Any, tmp_path: Path) -> None:
    best = BestModel(tmp_path, "exact_match", patience=2)
    trainer = _trainer(tiny_tokenizer, tmp_path, best, max_steps=6)
    _, _, val = _conflicting_data(tiny_tokenizer)
    trainer.generation_metric = GenerationMetric(tiny_tokenizer, val[:4], "exact_match", max_new_tokens=4, batch_size=4)
    trainer.train()
    scores = [h["eval_exact_match"] for h in trainer.state.log_history if "eval_loss" in h]
    assert len(scores) >= 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert best.metric == "eval_exact_match" and best.greater_is_better and best.best_step == 2


def _train_with(optimizer_name: str, tokenizer: Any, tmp: Path) -> tuple[list[float], Any]:
    config = config_from_dict({"method": "full", "training": {
        "max_steps": 8, "per_device_train_batch_size": 8, "learning_rate": 1e-2, "optimizer": optimizer_name,
        "logging_steps": 1, "save_steps": 1000, "group_by_length": False}})
    train, _, _ = _conflicting_data(tokenizer)
    args = training_arguments(config, tmp, has_eval=False, precision=resolve_precision(device="cpu"))
    args.disable_tqdm = True
    trainer = TunewiseTrainer(model=random_model(tokenizer), args=args, train_dataset=to_dataset(train),
                              data_collator=PackCollator(tokenizer.pad_token_id, 256))
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h], trainer


def test_adamw_8bit_trains_with_8bit_states(tiny_tokenizer: Any, tmp_path: Path) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    losses, trainer = _train_with("adamw_8bit", tiny_tokenizer, tmp_path / "8bit")
    reference, _ = _train_with("adamw_torch", tiny_tokenizer, tmp_path / "32bit")
    assert losses[-1] < 0.8 * losses[0]
    assert losses[-1] == pytest.approx(reference[-1], rel=0.1)  # close to 32-bit AdamW's curve
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert isinstance(optimizer, bnb.optim.optimizer.Optimizer8bit)
    states = [s for s in optimizer.state.values() if "state1" in s]
    assert any(s["state1"].dtype == torch.uint8 for s in states)  # the large matrices keep 8-bit moments


def test_two_processes_end_with_identical_weights(tiny_dir: Path, tmp_path: Path) -> None:
    config = prepared_run(tiny_dir, tmp_path, "ddp", max_steps=6, eval_steps=3, save_steps=3)
    run_dir = Path(config.run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "tunewise", "train", str(run_dir), "--nproc", "2"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ranks = [json.loads((run_dir / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [6, 6]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert (run_dir / "model" / "adapter_config.json").is_file()
    # every rank saw its own half of each batch of 8: together 2 x 8 examples a step
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["epochs"] == pytest.approx(6 * 16 / 192, abs=0.01)
    # the run's token counts are both ranks' together, in the summary and in metrics.jsonl
    own = [r["own_trained_tokens"] for r in ranks]
    assert min(own) > 0 and summary["trained_tokens"] == sum(own) == ranks[1]["trained_tokens"]
    assert summary["input_tokens"] == sum(r["own_input_tokens"] for r in ranks)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["trained_tokens"] for r in logged if r["kind"] == "train"][-1] == sum(own)


def test_the_last_step_is_evaluated_once(tiny_tokenizer: Any, tmp_path: Path) -> None:
    best = BestModel(tmp_path / "a", "eval_loss")
    trainer = _trainer(tiny_tokenizer, tmp_path / "a", best, max_steps=5, learning_rate=1e-3)
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "eval_loss" in h] == [2, 4, 5]  # 5 is off the cadence
    per_epoch = BestModel(tmp_path / "b", "eval_loss")
    trainer = _trainer(tiny_tokenizer, tmp_path / "b", per_epoch, max_steps=-1, epochs=2, eval_steps=None)
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "eval_loss" in h] == [2, 4]  # one per epoch, no repeat
