"""The Trainer callback that writes metrics.jsonl (schema and readers: :mod:`tunewise.monitor.metrics`)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

from transformers import TrainerCallback

from tunewise.monitor.metrics import Sink

_RENAME = {"train_loss": "train_loss_mean"}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter(TrainerCallback):
    """Appends every Trainer log to ``metrics.jsonl`` (main process only), one flushed line per record, then hands
    the record to each sink."""

    def __init__(self, path: str | Path, sinks: Iterable[Sink] = ()) -> None:
        self.path = Path(path)
        self.sinks: list[Sink] = list(sinks)
        self.start = time.time()
        self.start_step = 0
        self.state: Any = None
        self.start_fields: dict[str, Any] = {}  # added to this session's start record (a resume's token totals)

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({k: _clean(v) for k, v in record.items()}, allow_nan=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            size = f.tell()
            try:
                f.write(line)
                f.flush()
            except BaseException:
                # a half line (disk full) would glue itself to the next record: take it back
                try:
                    f.truncate(size)
                except OSError:
                    pass
                raise
        for sink in self.sinks:
            sink(record)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write an event record (``warning``/``error``) stamped with the current step; returns it."""
        state = self.state
        now = time.time()
        record = {
            "kind": kind,
            "step": state.global_step if state else 0,
            "epoch": round((state.epoch or 0.0) if state else 0.0, 4),
            "time": round(now, 3),
            "elapsed_s": round(now - self.start, 3),
            **fields,
        }
        if state is None or state.is_world_process_zero:
            self.write(record)
        return record

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.state, self.start, self.start_step = state, time.time(), state.global_step
        if state.is_world_process_zero:
            self.write(
                {
                    "kind": "start",
                    "step": state.global_step,
                    "epoch": round(state.epoch or 0.0, 4),
                    "time": round(self.start, 3),
                    "elapsed_s": 0.0,
                    "max_steps": state.max_steps,
                    "resumed": state.global_step > 0,
                    **(self.start_fields if state.global_step > 0 else {}),
                }
            )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.state = state
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
                record[_RENAME.get(key, key)] = value
        done = state.global_step - self.start_step  # steps of this session (a resume starts mid-way)
        if record["kind"] == "train" and state.max_steps and done > 0:
            per_step = (now - self.start) / done
            record["eta_s"] = round(per_step * (state.max_steps - state.global_step), 1)
        self.write(record)
