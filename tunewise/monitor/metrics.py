"""metrics.jsonl: one JSON object per logged step or evaluation, appended and flushed as it happens.

Schema (every record): ``kind`` ("train" | "eval" | "summary"), ``step``, ``epoch``, ``time`` (unix seconds),
``elapsed_s``; train records add ``loss``, ``learning_rate``, ``grad_norm``, ``trained_tokens``, ``input_tokens``,
``tokens_per_s``, ``input_tokens_per_s``, ``eta_s``; eval records add ``eval_loss`` and any ``eval_*`` metric;
memory fields ``peak_rss_mb`` (and ``cuda_peak_allocated_mb`` / ``cuda_peak_reserved_mb`` on GPU) appear in all.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

from transformers import TrainerCallback

_RENAME = {"train_loss": "train_loss_mean"}


class MetricsWriter(TrainerCallback):
    """Appends every Trainer log to ``metrics.jsonl`` (main process only), one flushed line per record."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.start = time.time()

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        record: dict[str, Any] = {
            "kind": "eval" if any(k.startswith("eval_") for k in logs) else "train",
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "time": round(now, 3),
            "elapsed_s": round(now - self.start, 3),
        }
        if "train_runtime" in logs:
            record["kind"] = "summary"
        for key, value in logs.items():
            if isinstance(value, (int, float)):
                record[_RENAME.get(key, key)] = value if math.isfinite(value) else str(value)
        if record["kind"] == "train" and state.max_steps and state.global_step:
            per_step = (now - self.start) / state.global_step
            record["eta_s"] = round(per_step * (state.max_steps - state.global_step), 1)
        self.write(record)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl; a half-written last line (a run in progress) is skipped."""
    return list(iter_metrics(path))


def iter_metrics(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
