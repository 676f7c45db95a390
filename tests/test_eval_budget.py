"""In-training evaluation within training.eval_budget: a validation split too large for the budget is sampled (fixed,
seeded, in order), a small one is kept whole; when even the smallest sample costs more than the budget of an epoch,
evaluations are spaced by steps."""

from __future__ import annotations

from tunewise.config import config_from_dict
from tunewise.train.eval_budget import (
    FORWARD_SHARE,
    eval_sample,
    evaluation_steps,
    plan_evaluations,
    training_tokens_between_evaluations,
)


def test_a_large_validation_split_is_sampled_within_the_budget() -> None:
    val = list(range(200))
    lengths = [100] * 200
    train_tokens = training_tokens_between_evaluations([100] * 400, eval_steps=None, batch=8, accumulation=1)
    sample = eval_sample(val, lengths, train_tokens, 0.05, seed=1)
    assert sample == sorted(sample) and len(set(sample)) == len(sample)
    assert sum(lengths[i] for i in sample) * FORWARD_SHARE <= 0.05 * train_tokens
    assert len(sample) == 40  # 0.05 x 40,000 / 0.5 = 4,000 tokens
    assert eval_sample(val, lengths, train_tokens, 0.05, seed=1) == sample  # the same rows at every evaluation
    assert eval_sample(val, lengths, train_tokens, 0.05, seed=2) != sample
    assert eval_sample(val, lengths, train_tokens, 1.0, seed=1) == val


def test_a_small_split_or_frequent_evaluation_keeps_eight_rows() -> None:
    assert eval_sample(list(range(5)), [50] * 5, 10_000, 0.05, seed=0) == list(range(5))
    between = training_tokens_between_evaluations([100] * 400, eval_steps=2, batch=8, accumulation=2)
    assert between == 2 * 8 * 2 * 100
    assert len(eval_sample(list(range(100)), [100] * 100, between, 0.05, seed=0)) == 8


def test_the_sample_fills_whole_evaluation_batches_on_every_process() -> None:
    """A sample of whole global evaluation batches (per-device batch x processes): no process pads its last batch
    with repeated rows, so one process (batch 24) and two (12 each) evaluate the same rows to the same loss (the
    two-node Slurm test in test_scale.py compares the curves with training.eval_budget's default)."""
    val, lengths = list(range(96)), [30] * 96
    between = training_tokens_between_evaluations([30] * 768, eval_steps=3, batch=8, accumulation=1)
    plain = eval_sample(val, lengths, between, 0.05, seed=3)
    assert len(plain) == 8  # the budget alone: 72 tokens, so the 8-row floor
    one = eval_sample(val, lengths, between, 0.05, seed=3, multiple=24 * 1)
    two = eval_sample(val, lengths, between, 0.05, seed=3, multiple=12 * 2)
    assert one == two and len(one) == 24 and set(plain) <= set(one)
    assert len(eval_sample(val, lengths, 100_000, 0.05, seed=3, multiple=16)) == 96  # within the budget: all rows
    assert eval_sample(val[:20], lengths[:20], between, 0.05, seed=3, multiple=24) == val[:20]  # less than a batch
    big = eval_sample(val, lengths, 20_000, 0.05, seed=3, multiple=16)  # budget 2,000 tokens = 66 rows -> 64
    assert len(big) == 64


def test_when_one_evaluation_costs_more_than_the_budget_of_an_epoch_evaluations_are_spaced_by_steps() -> None:
    """24 long training rows (6 steps of 4 per epoch, 10 epochs) and the 8-row floor: one evaluation is ~17% of an
    epoch, so once per epoch would take 17% of the training (issue 17); every 20 steps keeps each within 5%."""
    training = config_from_dict({"training": {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
                                              "epochs": 10}}).training
    train, val = [300] * 24, [300] * 40
    indices, every = plan_evaluations(training, train, val)
    assert len(indices) == 8
    assert every == 20  # 8 x 300 x 0.5 / 0.05 = 24,000 training tokens = 20 steps of 1,200
    cost = sum(val[i] for i in indices) * FORWARD_SHARE
    assert cost <= 0.05 * every * 4 * 300 < cost * 1.05
    assert evaluation_steps([300] * 8, [300] * 2400, training) is None  # a long epoch: once per epoch fits
    written = config_from_dict({"training": {"per_device_train_batch_size": 4, "eval_steps": 2, "epochs": 10}}).training
    assert plan_evaluations(written, train, val)[1] is None  # the user's cadence is kept
    everything = config_from_dict({"training": {"per_device_train_batch_size": 4, "eval_budget": 1}}).training
    assert plan_evaluations(everything, train, val) == (list(range(40)), None)


def test_a_run_too_short_for_an_evaluation_within_the_budget_evaluates_nothing() -> None:
    """One pass over 24 long rows (6 steps): an evaluation of the 8-row floor would be 17% of the whole training and
    the only one, at the last step (nothing to choose between); with 3 passes (18 steps) still none fits before the
    last; 60 passes evaluate every 20 steps."""
    def plan(**training: object) -> tuple[list[int], int | None]:
        t = config_from_dict({"training": {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
                                           **training}}).training
        return plan_evaluations(t, [300] * 24, [300] * 40)

    assert plan(epochs=1) == ([], None)
    assert plan() == ([], None)  # automatic: 3 epochs
    assert plan(max_steps=18) == ([], None)
    indices, every = plan(epochs=60)
    assert len(indices) == 8 and every == 20
    assert len(plan(epochs=1, eval_budget=1)[0]) == 40
