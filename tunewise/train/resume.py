"""Exact resume: what a checkpoint was trained on, and what tunewise adds to it so a new process continues the run
as if it had never stopped.

* At the start of a fresh training, RUN/checkpoints/fingerprint.json records the sha256 of the training-relevant
  config (everything but eval/monitor/decide settings, the run's name and output folder, and the logging/saving
  cadence) and of the prepared train/val files. ``--resume`` recomputes both and stops with a message naming what
  changed.
* The fingerprint also records the precision training chose (bf16/fp16 autocast or fp32). Left automatic
  (``training.bf16`` and ``fp16`` null), a resume on the same kind of device keeps it: resumed on another CPU, the
  automatic rule (bf16 where the CPU has bf16 units) would otherwise switch the arithmetic in the middle of the run.
* :class:`ResumeState` (a stateful Trainer callback, kept in every checkpoint's trainer_state.json) records the token
  totals so far and how long metrics.jsonl was when the checkpoint was written. ``--resume`` cuts metrics.jsonl back
  to that length (the killed session's steps after the checkpoint are redone, not counted twice) and continues the
  token count (:func:`restore_checkpoint_state`).
* The Trainer restores the model, optimizer, scheduler and RNG states itself and skips the batches already trained
  in the current epoch; the data order of each epoch depends on the seed and the epoch only
  (tunewise/train/trainer.py). An evaluation due at the end of an epoch runs before that step's checkpoint is
  written, so a resume from it never skips one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from tunewise.config import Config
from tunewise.lm.device import Precision
from tunewise.monitor.metrics import cut_metrics
from tunewise.record import sha256_file
from tunewise.rundir import (
    RunDir,
    atomic_write_json,
    checkpoint_step,
    complete_checkpoint,
    is_main_process,
)

log = logging.getLogger(__name__)

# settings that do not change what is computed: changing them between an interrupted run and its resume is fine
_FREE_TRAINING_KEYS = ("logging_steps", "save_steps", "save_total_limit")


class ResumeMismatchError(ValueError):
    """The run directory's checkpoints were trained with another config or other data."""


def training_settings(config: Config) -> dict[str, Any]:
    settings = config.model_dump(mode="json", exclude={"name", "output_dir", "eval", "monitor", "decide"})
    for key in _FREE_TRAINING_KEYS:
        settings["training"].pop(key, None)
    return settings


def fingerprint(config: Config, run: RunDir) -> dict[str, Any]:
    settings = json.dumps(training_settings(config), sort_keys=True)
    return {
        "config_sha256": hashlib.sha256(settings.encode("utf-8")).hexdigest(),
        "data_sha256": {path.name: sha256_file(path) for path in (run.split("train"), run.split("val")) if path.is_file()},
        "settings": training_settings(config),
    }


def write_fingerprint(config: Config, run: RunDir, precision: Any = None) -> None:
    """Record what the run trains on (config and data hashes) and, given ``precision``, the precision it chose."""
    if is_main_process():
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        chosen = {} if precision is None else {"precision": {"device": _device_kind(precision.device),
                                                             "bf16": precision.bf16, "fp16": precision.fp16}}
        atomic_write_json(run.fingerprint, {**fingerprint(config, run), **chosen})


def _device_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else str(device)


def started_precision(config: Config, run: RunDir, device: str) -> Config:
    """``config`` with training.bf16 / fp16 set as the run started, when both are automatic (null) and the run's
    fingerprint recorded them for this kind of device (``device``); else ``config`` itself."""
    t = config.training
    try:
        saved = json.loads(run.fingerprint.read_text(encoding="utf-8")).get("precision")
    except (OSError, ValueError):
        return config
    if t.bf16 is not None or t.fp16 is not None or not saved or saved.get("device") != _device_kind(device):
        return config
    started = Precision(device=device, bf16=bool(saved["bf16"]), fp16=bool(saved["fp16"]))
    log.info("precision: %s, as this run started (training.bf16 / training.fp16 decide otherwise)",
             started.name if started.name == "fp32" else f"{started.name} autocast")
    return config.model_copy(update={"training": t.model_copy(update={"bf16": started.bf16, "fp16": started.fp16})})


def _changed_settings(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for key in sorted(set(old) | set(new))
                for c in _changed_settings(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def check_resume(config: Config, run: RunDir) -> None:
    """Raise :class:`ResumeMismatchError` when the config or the prepared data differ from the checkpoints' ones."""
    path: Path = run.fingerprint
    if not path.is_file():
        log.warning("%s has no %s (written by an older tunewise): cannot check that config and data are unchanged",
                    run.checkpoints, run.fingerprint.name)
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    now = fingerprint(config, run)
    problems = []
    if saved["config_sha256"] != now["config_sha256"]:
        changes = _changed_settings(saved.get("settings", {}), now["settings"])
        problems.append("the config changed (" + ("; ".join(changes[:5]) or "settings differ") + ")")
    for name in sorted(set(saved["data_sha256"]) | set(now["data_sha256"])):
        if saved["data_sha256"].get(name) != now["data_sha256"].get(name):
            problems.append(f"data/{name} changed")
    if problems:
        raise ResumeMismatchError(
            f"can't resume {run.root}: {', and '.join(problems)} since its checkpoints were written. Resume with the "
            "original config and data, or train from the start (without --resume, or in a new run directory)."
        )


# --------------------------------------------------------------------------------------------------------------------
# checkpoints: which one to resume from, and what tunewise keeps in it


def remove_incomplete_checkpoints(checkpoints: Path) -> list[str]:
    """Delete checkpoint folders that were cut off while being written (they would be taken for data otherwise);
    returns their names."""
    removed = []
    for folder in Path(checkpoints).glob("checkpoint-*"):
        if checkpoint_step(folder) is not None and folder.is_dir() and not complete_checkpoint(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return sorted(removed)


def remove_checkpoints(checkpoints: Path) -> list[str]:
    """Delete every checkpoint-N and best-N folder (a fresh start); returns their names."""
    removed = []
    for folder in sorted(Path(checkpoints).glob("*-*")):
        if folder.is_dir() and (checkpoint_step(folder) is not None or folder.name.startswith("best-")):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


class ResumeState(TrainerCallback, ExportableState):
    """Saved in every checkpoint: token totals so far and the length of metrics.jsonl (module docstring). Also makes
    an end-of-epoch evaluation run before the checkpoint of the same step (the Trainer evaluates per epoch only
    after the step's save, which a resume from that checkpoint would skip)."""

    def __init__(self, metrics: str | Path | None = None) -> None:
        self.metrics = Path(metrics) if metrics else None
        self.trainer: Any = None  # set by build_trainer
        self.evaluated_step: int | None = None

    def state(self) -> dict[str, Any]:
        trained, inputs = self.trainer.saved_token_totals() if self.trainer is not None else (0, 0)
        size = self.metrics.stat().st_size if self.metrics is not None and self.metrics.is_file() else 0
        return {"args": {}, "attributes": {"trained_tokens": trained, "input_tokens": inputs, "metrics_bytes": size}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # a checkpoint written before this callback existed has no entry: the Trainer's save would fail without one
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
        epoch_done = state.epoch is not None and float(state.epoch).is_integer()
        if strategy == "epoch" and control.should_save and (epoch_done or state.global_step >= state.max_steps):
            control.should_evaluate = True

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.evaluated_step = state.global_step

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.evaluated_step == state.global_step:
            control.should_evaluate = False  # done before this step's checkpoint


def saved_callback_state(checkpoint: Path, name: str) -> dict[str, Any] | None:
    """The state a stateful callback called ``name`` saved in ``checkpoint`` (None when it saved none)."""
    try:
        saved = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")).get("stateful_callbacks", {})
    except (OSError, ValueError):
        return None
    value = saved.get(name)
    return (value[-1] if value else None) if isinstance(value, list) else value


def restore_checkpoint_state(checkpoint: Path, run: RunDir, trainer: Any) -> dict[str, int]:
    """Before training resumes from ``checkpoint``: cut metrics.jsonl back to what it held when the checkpoint was
    written and continue the token totals from there. Returns the restored attributes."""
    saved = (saved_callback_state(checkpoint, ResumeState.__name__) or {}).get("attributes", {})
    step = checkpoint_step(checkpoint) or 0
    if is_main_process():
        cut_metrics(run.metrics, size=saved.get("metrics_bytes"), after_step=step)
    if "trained_tokens" in saved:
        trainer.restore_token_totals(saved["trained_tokens"], saved.get("input_tokens", 0))
    return saved
