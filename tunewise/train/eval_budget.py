"""How much of the validation split the in-training evaluations use, so that they cost a bounded share of training.

An evaluation is a forward pass over the validation rows; a LoRA training step is a forward and an input-gradient
backward over the training rows (about twice the forward's work per token; full fine-tuning: three times). With the
default cadence (once per epoch) a validation split as large as a third of a short training set took ~20% of the
training time (issue 17). When the validation tokens of one evaluation exceed the budget, the in-training evaluations
use a fixed, seeded sample of the validation rows (the same sample every time, so evaluations stay comparable); the
evaluate stage still scores the whole test split.

A sample has a floor (8 rows, or one global evaluation batch): on a training set of a few long rows one evaluation of
it alone can cost more than the budget of an epoch (24 rows of 200-400 tokens: 17.7% of the training time at once per
epoch, issue 17). Then, when ``training.eval_steps`` is not set, evaluations are spaced by optimizer steps instead of
epochs (:func:`evaluation_steps`); the last step is evaluated whatever the cadence (tunewise/train/best.py), so the
best-model choice always has the end of training. When that spacing leaves no evaluation before the last step (a
short run), there is nothing to choose between and the one evaluation would only cost time: training evaluates
nothing (the evaluate stage still scores the test split; ``training.eval_budget: 1`` evaluates anyway).
"""

from __future__ import annotations

import math
import random
from typing import Sequence, TypeVar

from tunewise.config import TrainingConfig
from tunewise.train.schedule import steps_per_epoch, total_steps

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


def evaluation_steps(sample_lengths: Sequence[int], train_lengths: Sequence[int], training: TrainingConfig,
                     world_size: int = 1) -> int | None:
    """Optimizer steps between in-training evaluations when once per epoch (``eval_steps`` null) would cost more than
    ``training.eval_budget`` of the training even on the sample (``sample_lengths``): each evaluation then follows
    enough training to stay within it. None when once per epoch fits, or ``eval_steps`` is set (the user's cadence)."""
    t = training
    if t.eval_steps or t.eval_budget >= 1 or not sample_lengths or not train_lengths:
        return None
    epoch_tokens = float(sum(train_lengths))
    needed = sum(sample_lengths) * FORWARD_SHARE / t.eval_budget  # training tokens one evaluation may follow
    if epoch_tokens >= needed:
        return None
    per_step = epoch_tokens / steps_per_epoch(len(train_lengths), t, world_size)
    return math.ceil(needed / per_step)


def plan_evaluations(training: TrainingConfig, train_lengths: Sequence[int], val_lengths: Sequence[int],
                     world_size: int = 1) -> tuple[list[int], int | None]:
    """(indices of the validation rows the in-training evaluations use, optimizer steps between evaluations or None
    for the configured cadence): what training does and the estimate counts. No rows: the run is too short for an
    evaluation within the budget before its last step, so it evaluates nothing."""
    t = training
    between = training_tokens_between_evaluations(train_lengths, eval_steps=t.eval_steps,
                                                  batch=t.per_device_train_batch_size,
                                                  accumulation=t.gradient_accumulation_steps, world_size=world_size)
    indices = eval_sample(list(range(len(val_lengths))), val_lengths, between, t.eval_budget, t.seed,
                          multiple=t.per_device_eval_batch_size * world_size)
    every = evaluation_steps([val_lengths[i] for i in indices], train_lengths, t, world_size)
    if every is not None and every >= total_steps(t, len(train_lengths), world_size):
        return [], None
    return indices, every
