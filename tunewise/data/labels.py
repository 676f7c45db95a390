"""Classification data: the label set of a split's answers, and what a split is stratified by."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from tunewise.data.example import Example

ANSWER = "answer"  # data.stratify_by value that always means "the reference answer" (the label of a classification row)


def detect_labels(refs: Sequence[str], *, max_labels: int = 50, max_words: int = 4, max_chars: int = 40) -> list[str] | None:
    """The label set when ``refs`` look like class labels (few distinct short strings), else None.

    Labels: at least 2 and at most ``max_labels`` distinct stripped references, at most half as many as
    there are references (each label recurs), each at most ``max_words`` words and ``max_chars`` characters.
    """
    distinct = sorted({r.strip() for r in refs})
    if not 2 <= len(distinct) <= min(max_labels, max(2, len(refs) // 2)):
        return None
    if any(not d or len(d) > max_chars or len(d.split()) > max_words for d in distinct):
        return None
    return distinct


def answer_label(example: Example) -> str | None:
    """The reference answer of ``example`` as a label (stripped), None when it has none."""
    ref = example.reference
    return None if ref is None else ref.strip()


def meta_label(name: str) -> Callable[[Example], Any]:
    """``meta[name]`` of an Example (``meta.x`` and ``x`` are the same field)."""
    key = name.removeprefix("meta.")
    return lambda ex: ex.meta.get(key)
