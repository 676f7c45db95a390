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

This module holds the schema and the readers, and imports neither torch nor transformers (the dashboard, the
checklist and ``tunewise monitor`` read metrics without them); the Trainer callback that writes the file is
:class:`tunewise.monitor.writer.MetricsWriter`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

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
