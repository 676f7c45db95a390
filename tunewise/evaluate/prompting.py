"""Prompting baselines: the untuned model given an instruction and a few examples from the training split
(few-shot), on the same rows as the tuned model. The advisor (tunewise/decide/baseline.py) measures prompting on a
validation sample before training; the eval stage measures it on the test split next to the tuned model."""

from __future__ import annotations

import random
from typing import Any, Sequence

from tunewise.example import Example


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


def choose_shots(pool: Sequence[Example], k: int, *, seed: int, labels: Sequence[str] | None) -> list[int]:
    """Indices of ``k`` shots from ``pool`` (examples with an answer), chosen once with ``seed``: for a
    classification task one per label first (most frequent label first), then at random."""
    rng = random.Random(seed)
    order = [i for i in range(len(pool)) if pool[i].reference is not None]
    rng.shuffle(order)
    chosen: list[int] = []
    if labels:
        by_label: dict[str, int] = {}
        for i in order:
            by_label.setdefault((pool[i].reference or "").strip(), i)
        counts = {label: sum(1 for e in pool if (e.reference or "").strip() == label) for label in by_label}
        chosen = [by_label[label] for label in sorted(by_label, key=lambda l: -counts[l])][:k]
    for i in order:
        if len(chosen) >= k:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen
