"""How much of the validation split the in-training evaluations use, so that they cost a bounded share of training.

An evaluation is a forward pass over the validation rows; a LoRA training step is a forward and an input-gradient
backward over the training rows (about twice the forward's work per token; full fine-tuning: three times). With the
default cadence (once per epoch) a validation split as large as a third of a short training set took ~20% of the
training time (issue 17). When the validation tokens of one evaluation exceed the budget, the in-training evaluations
use a fixed, seeded sample of the validation rows (the same sample every time, so evaluations stay comparable); the
evaluate stage still scores the whole test split.
"""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")

# a validation token costs about this much of a training token (LoRA: forward 2 FLOPs/weight of 4)
FORWARD_SHARE = 0.5


def training_tokens_between_evaluations(train_lengths: Sequence[int], *, eval_steps: int | None, batch: int,
                                        accumulation: int, world_size: int = 1) -> float:
    """Training tokens processed from one evaluation to the next (an epoch, or ``eval_steps`` optimizer steps)."""
    per_epoch = float(sum(train_lengths))
    if not eval_steps or not train_lengths:
        return per_epoch
    mean = per_epoch / len(train_lengths)
    return min(per_epoch, eval_steps * batch * accumulation * world_size * mean)


def eval_sample(val: Sequence[T], lengths: Sequence[int], train_tokens: float, budget: float, seed: int,
                multiple: int = 1) -> list[T]:
    """``val`` itself when one evaluation of it costs at most ``budget`` of the training between evaluations, else
    the largest seeded random sample (in the original order) that does; never fewer than 8 rows (or all of them).

    The sample's size is a multiple of ``multiple`` (the global evaluation batch: per-device batch x processes), at
    least one such batch: the evaluation's last batch is then full on every process, so no process pads it with
    repeated rows, and one process and several give the same evaluation loss."""
    if budget >= 1 or not val:
        return list(val)
    allowed = budget * train_tokens / FORWARD_SHARE
    if sum(lengths) <= allowed:
        return list(val)
    order = list(range(len(val)))
    random.Random(seed).shuffle(order)
    chosen, total = [], 0
    for i in order:
        if total + lengths[i] > allowed and len(chosen) >= 8:
            break
        chosen.append(i)
        total += lengths[i]
    multiple = max(1, multiple)
    size = max(len(chosen) - len(chosen) % multiple, multiple)
    if size >= len(val):
        return list(val)
    return [val[i] for i in sorted(order[:size])]
