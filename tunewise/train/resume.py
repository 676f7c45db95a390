"""What a checkpoint was trained on, so ``--resume`` refuses to continue a run with other data or settings.

At the start of a fresh training, RUN/checkpoints/fingerprint.json records the sha256 of the training-relevant
config (everything but eval/monitor/decide settings, the run's name and output folder, and the logging/saving cadence) and
of the prepared train/val files. ``--resume`` recomputes both and stops with a message naming what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from tunewise.config import Config
from tunewise.monitor.record import sha256_file
from tunewise.rundir import RunDir, atomic_write_json, is_main_process

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"
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
        "data_sha256": {name: sha256_file(run.data / name) for name in ("train.jsonl", "val.jsonl") if (run.data / name).is_file()},
        "settings": training_settings(config),
    }


def write_fingerprint(config: Config, run: RunDir) -> None:
    if is_main_process():
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.checkpoints / FINGERPRINT, fingerprint(config, run))


def _changed_settings(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for key in sorted(set(old) | set(new))
                for c in _changed_settings(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def check_resume(config: Config, run: RunDir) -> None:
    """Raise :class:`ResumeMismatchError` when the config or the prepared data differ from the checkpoints' ones."""
    path: Path = run.checkpoints / FINGERPRINT
    if not path.is_file():
        log.warning("%s has no %s (written by an older tunewise): cannot check that config and data are unchanged",
                    run.checkpoints, FINGERPRINT)
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
