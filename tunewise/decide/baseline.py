"""Measured prompting baselines: the untuned base model answers a validation sample zero-shot and few-shot (shots
from the training split), scored with the run's metrics through the eval stage's own
:func:`tunewise.evaluate.run.evaluate_examples`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tunewise.data.example import Example


@dataclass
class Sample:
    """The rows prompting is measured on, and the shots few-shot prompts show."""

    rows: list[Example]
    shots: list[Example]
    from_val: int
    from_train: int


def instruction(task: str, labels: Sequence[str] | None, strict_format: bool, json_answers: bool) -> str | None:
    """What a prompt engineer would add to the system message for this task (None: nothing to add)."""
    if labels:
        return "Answer with exactly one of these labels and nothing else: " + ", ".join(labels) + "."
    if json_answers:
        return "Answer with JSON only, no other text."
    if strict_format:
        return "Answer in exactly the format of the examples, with nothing else."
    return None


def with_instruction(messages: list[dict[str, Any]], text: str | None) -> list[dict[str, Any]]:
    """``messages`` with ``text`` appended to the system message (one is added when there is none)."""
    if not text:
        return list(messages)
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n{text}".strip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def few_shot(example: Example, shots: Sequence[Example], text: str | None) -> Example:
    """``example`` with each shot's question and answer as earlier turns, after the system message."""
    messages = with_instruction(example.messages, text)
    head = [m for m in messages[:1] if m.get("role") == "system"]
    turns: list[dict[str, Any]] = []
    for shot in shots:
        prompt = [m for m in shot.prompt_messages if m.get("role") != "system"]
        turns += [*({"role": m["role"], "content": m.get("content")} for m in prompt),
                  {"role": "assistant", "content": shot.reference or ""}]
    return Example(messages=[*head, *turns, *messages[len(head):]], meta=dict(example.meta))


def zero_shot(example: Example, text: str | None) -> Example:
    return Example(messages=with_instruction(example.messages, text), meta=dict(example.meta))


def choose_sample(train: Sequence[Example], val: Sequence[Example], *, size: int, shots: int, seed: int,
                  labels: Sequence[str] | None) -> Sample:
    """Validation rows first, topped up with training rows the shots don't use (the base model has seen neither);
    shots from the training split, one per label (most frequent first) for a classification task."""
    rng = random.Random(seed)
    pool = [e for e in train if e.reference is not None]
    order = list(range(len(pool)))
    rng.shuffle(order)
    chosen: list[int] = []
    if labels:
        by_label: dict[str, int] = {}
        for i in order:
            by_label.setdefault((pool[i].reference or "").strip(), i)
        counts = {label: sum(1 for e in pool if (e.reference or "").strip() == label) for label in by_label}
        chosen = [by_label[label] for label in sorted(by_label, key=lambda l: -counts[l])][:shots]
    for i in order:
        if len(chosen) >= shots:
            break
        if i not in chosen:
            chosen.append(i)
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
