"""Measured prompting baselines: the untuned base model answers a validation sample zero-shot and few-shot (shots
from the training split), scored with the run's metrics through the eval stage's own
:func:`tunewise.evaluate.run.evaluate_examples`. Prompts and shots are built by :mod:`tunewise.evaluate.prompting`,
the same code that builds the eval stage's few-shot baseline on the test split."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tunewise.evaluate.prompting import (
    choose_shots,
    few_shot,
    instruction,
    with_instruction,
    zero_shot,
)
from tunewise.example import Example

__all__ = ["Sample", "choose_sample", "few_shot", "instruction", "measure_prompting", "with_instruction", "zero_shot"]


@dataclass
class Sample:
    """The rows prompting is measured on, and the shots few-shot prompts show."""

    rows: list[Example]
    shots: list[Example]
    from_val: int
    from_train: int


def choose_sample(train: Sequence[Example], val: Sequence[Example], *, size: int, shots: int, seed: int,
                  labels: Sequence[str] | None) -> Sample:
    """Validation rows first, topped up with training rows the shots don't use (the base model has seen neither);
    shots from the training split, one per label (most frequent first) for a classification task."""
    pool = [e for e in train if e.reference is not None]
    chosen = choose_shots(pool, shots, seed=seed, labels=labels)
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    shot_examples = [pool[i] for i in chosen]
    rows = [e for e in val if e.reference is not None][:size]
    from_val = len(rows)
    rest = [pool[i] for i in order if i not in chosen]
    rows += rest[: max(size - from_val, 0)]
    return Sample(rows=rows, shots=shot_examples, from_val=from_val, from_train=len(rows) - from_val)


def measure_prompting(
    model: Any,
    tokenizer: Any,
    sample: Sample,
    metric_names: Sequence[str],
    *,
    text: str | None,
    max_new_tokens: int,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Zero-shot and few-shot scores of the base model on ``sample`` (metrics, a few predictions, timing)."""
    from tunewise.evaluate.run import evaluate_examples

    results: dict[str, Any] = {}
    variants = {"zero_shot": [zero_shot(e, text) for e in sample.rows]}
    if sample.shots:
        variants["few_shot"] = [few_shot(e, sample.shots, text) for e in sample.rows]
    for name, examples in variants.items():
        records, scored = evaluate_examples(
            model, tokenizer, examples, metric_names, max_new_tokens=max_new_tokens, batch_size=batch_size,
            progress=progress,
        )
        results[name] = {
            "metrics": scored["metrics"],
            "n": scored["n"],
            "stopped_share": scored["stopped_share"],
            "generation_time_s": scored["generation_time_s"],
            "examples": [{k: r[k] for k in ("input", "reference", "prediction")} for r in records[:5]],
        }
    return results
