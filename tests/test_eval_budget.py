"""In-training evaluation within training.eval_budget: a validation split too large for the budget is sampled (fixed,
seeded, in order), a small one is kept whole."""

from __future__ import annotations

from tunewise.train.eval_budget import FORWARD_SHARE, eval_sample, training_tokens_between_evaluations


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
