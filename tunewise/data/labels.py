"""Classification data: the label set of a split's answers, and what a split is stratified by."""

from __future__ import annotations

from typing import Any, Callable

from tunewise.example import Example
from tunewise.metrics import detect_labels  # noqa: F401  (the label set: the metrics' too)

ANSWER = "answer"  # data.stratify_by value that always means "the reference answer" (the label of a classification row)


def answer_label(example: Example) -> str | None:
    """The reference answer of ``example`` as a label (stripped), None when it has none."""
    ref = example.reference
    return None if ref is None else ref.strip()


def meta_label(name: str) -> Callable[[Example], Any]:
    """``meta[name]`` of an Example (``meta.x`` and ``x`` are the same field)."""
    key = name.removeprefix("meta.")
    return lambda ex: ex.meta.get(key)
