"""metrics.jsonl: one JSON object per logged step, evaluation or event, appended and flushed as it happens.

Schema (documented in docs/monitoring.md and checked by :func:`validate_record`). Every record has ``kind``,
``step`` (optimizer steps done), ``epoch``, ``time`` (unix seconds) and ``elapsed_s`` (seconds since this training
session started). By kind:

* ``start``: a training session began (a fresh run or a resume); adds ``max_steps`` and ``resumed`` (bool); a resumed
  session also has ``trained_tokens`` / ``input_tokens``: the totals it continues from.
* ``train``: ``loss``, ``learning_rate``, ``grad_norm``, ``trained_tokens``, ``input_tokens``, ``tokens_per_s``,
  ``input_tokens_per_s``, ``eta_s``.
* ``eval``: ``eval_loss`` and any other ``eval_*`` metric the Trainer reports.
* ``summary``: the Trainer's end-of-training numbers (``train_runtime``, ``train_loss_mean``, ...).
* ``warning`` / ``error``: a guard's finding: ``event`` (``loss_spike``, ``overfitting``, ``library_warning``,
  ``nan``, ``grad_norm``, ``incorrect_gradients``),
  ``message``.

A resume cuts the file back to its length when the checkpoint was written (:func:`cut_metrics`): the records of
the interrupted session after its last checkpoint are gone, and the steps are logged again by the resumed one.
``trained_tokens`` / ``input_tokens`` count the whole training (all sessions, each step once).

Memory fields ``peak_rss_mb`` (and ``cuda_peak_allocated_mb`` / ``cuda_peak_reserved_mb`` on GPU) appear in train,
eval and summary records. A non-finite number is written as the string ``"nan"`` / ``"inf"`` (the file stays JSON).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from transformers import TrainerCallback

_RENAME = {"train_loss": "train_loss_mean"}

KINDS = ("start", "train", "eval", "summary", "warning", "error")
COMMON_FIELDS = ("kind", "step", "epoch", "time", "elapsed_s")
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "start": ("max_steps", "resumed"),
    "train": ("loss", "learning_rate", "trained_tokens", "tokens_per_s", "peak_rss_mb"),
    "eval": ("eval_loss", "peak_rss_mb"),
    "summary": ("train_runtime",),
    "warning": ("event", "message"),
    "error": ("event", "message"),
}

Sink = Callable[[dict[str, Any]], None]
"""Anything that receives every record after it is written (TensorBoard, MLflow, the live view, run.json)."""


def validate_record(record: dict[str, Any]) -> list[str]:
    """Problems with one record against the schema above (empty when it conforms)."""
    kind = record.get("kind")
    if kind not in KINDS:
        return [f"unknown kind {kind!r}"]
    problems = [f"{kind}: missing {f}" for f in (*COMMON_FIELDS, *REQUIRED_FIELDS[kind]) if f not in record]
    if not isinstance(record.get("step"), int):
        problems.append(f"{kind}: step must be an int")
    for key, value in record.items():
        if not isinstance(value, (int, float, str, bool)) and value is not None:
            problems.append(f"{kind}: {key} must be a scalar")
    return problems


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


def cut_metrics(path: str | Path, *, size: int | None = None, after_step: int | None = None) -> None:
    """Cut metrics.jsonl back to what it held when a checkpoint was written: its first ``size`` bytes (the length the
    checkpoint recorded), or, for a checkpoint that recorded none, without the train/eval/summary/warning/error
    records of steps after ``after_step`` (rewritten atomically)."""
    path = Path(path)
    if not path.is_file():
        return
    if size is not None:
        if path.stat().st_size > size:
            os.truncate(path, size)  # one system call: the file is either cut or not
        return
    if after_step is None:
        return
    from tunewise.rundir import atomic_write_jsonl

    kept = [r for r in read_metrics(path) if r.get("kind") == "start" or int(r.get("step", 0)) <= after_step]
    atomic_write_jsonl(path, kept)


def effective_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the training that counts: when a session resumes from step S, the earlier session's train and
    eval records after S (work thrown away with the interrupted run) are dropped."""
    out: list[dict[str, Any]] = []
    for record in records:
        if record.get("kind") == "start":
            start = int(record.get("step", 0))
            out = [r for r in out if r.get("kind") not in ("train", "eval") or int(r.get("step", 0)) <= start]
        out.append(record)
    return out


def number(value: Any) -> float | None:
    """A record's value as a float (``"nan"`` strings included), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
