"""Paired bootstrap intervals and permutation p-values."""

from functools import partial

import numpy as np
import pytest

from tunewise import metrics as M
from tunewise.evaluate.significance import (
    paired_bootstrap,
    paired_bootstrap_corpus,
    paired_bootstrap_stats,
    win_tie_loss,
)


def _scores(n=1000, shift=0.0, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.random(n)
    return a, a + shift + rng.normal(0.0, 0.1, n)


def test_identical_inputs_give_zero_delta_and_p_one():
    a, _ = _scores()
    r = paired_bootstrap(a, a)
    assert r["delta"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0
    assert r["p_value"] == 1.0
    assert r["mean_a"] == r["mean_b"] == pytest.approx(a.mean())


def test_clear_improvement_is_significant():
    a, b = _scores(shift=0.05)
    r = paired_bootstrap(a, b)
    assert r["delta"] == pytest.approx(b.mean() - a.mean())
    assert 0.0 < r["ci_low"] < r["delta"] < r["ci_high"]
    assert r["p_value"] < 0.001
    assert r["p_value_method"] == "monte carlo paired permutation"
    reverse = paired_bootstrap(b, a)
    assert reverse["ci_high"] < 0.0 and reverse["p_value"] < 0.001


def test_no_real_difference_is_not_significant():
    a, b = _scores(n=200, shift=0.0, seed=3)
    r = paired_bootstrap(a, b)
    assert r["ci_low"] < 0.0 < r["ci_high"]
    assert r["p_value"] > 0.05


def test_deterministic_under_seed():
    a, b = _scores(n=300, shift=0.01)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7)["ci_low"] != paired_bootstrap(a, b, seed=8)["ci_low"]


def test_exact_permutation_p_values_by_hand():
    # 5 pairs all improved by 1: only "no swap" and "swap all" reach |mean| = 1 -> p = 2 / 32
    r = paired_bootstrap([0.0] * 5, [1.0] * 5)
    assert r["p_value"] == pytest.approx(2 / 32)
    assert r["p_value_method"] == "exact paired permutation" and r["n_resamples"] == 32
    assert r["ci_low"] == r["ci_high"] == 1.0
    # diffs (1, 2): swap means 1.5, 0.5, -0.5, -1.5 -> two of four reach 1.5
    assert paired_bootstrap([0.0, 0.0], [1.0, 2.0])["p_value"] == pytest.approx(0.5)


def test_monte_carlo_p_value_agrees_with_exact():
    a, b = _scores(n=12, shift=0.05, seed=5)
    exact = paired_bootstrap(a, b, n_resamples=4096)
    monte_carlo = paired_bootstrap(a, b, n_resamples=4095)
    assert exact["p_value_method"].startswith("exact")
    assert monte_carlo["p_value_method"].startswith("monte carlo")
    assert monte_carlo["p_value"] == pytest.approx(exact["p_value"], abs=0.03)


def test_confidence_level_widens_interval():
    a, b = _scores(n=300, shift=0.02)
    narrow, wide = paired_bootstrap(a, b, confidence=0.8), paired_bootstrap(a, b, confidence=0.99)
    assert wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]


def test_input_errors():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="zero examples"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([1.0, float("nan")], [1.0, 1.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0], [1.0], confidence=95)


def test_corpus_version_of_a_mean_matches_per_example_version():
    a, b = _scores(n=40, shift=0.05, seed=2)
    preds_a, preds_b = [str(x) for x in a], [str(x) for x in b]
    refs = [""] * 40
    mean = lambda preds, _refs: float(np.mean([float(p) for p in preds]))  # noqa: E731
    per_example = paired_bootstrap(a, b, n_resamples=300, seed=4)
    corpus = paired_bootstrap_corpus(preds_a, preds_b, refs, mean, n_resamples=300, seed=4)
    for key in ("delta", "ci_low", "ci_high", "p_value"):
        assert corpus[key] == pytest.approx(per_example[key])


def test_corpus_bleu_bootstrap_strings_and_statistics_agree():
    refs = ["the cat sat on the mat", "hello there world", "a quick brown fox", "jumps over the lazy dog"] * 3
    preds_a = ["the cat sat on a mat", "hello world", "the quick fox", "jump over lazy dog"] * 3
    preds_b = ["the cat sat on the mat", "hello there world", "a quick fox", "jumps over the dog"] * 3
    slow = paired_bootstrap_corpus(preds_a, preds_b, refs, partial(M.bleu, tokenize="13a"), n_resamples=40)
    stats_a, score_fn = M.METRICS["bleu"].stats(preds_a, refs)
    stats_b, _ = M.METRICS["bleu"].stats(preds_b, refs)
    fast = paired_bootstrap_stats(stats_a, stats_b, score_fn, n_resamples=40)
    assert slow == pytest.approx(fast)
    assert fast["score_a"] == pytest.approx(M.bleu(preds_a, refs))
    assert fast["delta"] > 0 and fast["ci_low"] > 0
    same = paired_bootstrap_stats(stats_a, stats_a, score_fn, n_resamples=200)
    assert same["delta"] == 0.0 and same["p_value"] == 1.0


def test_win_tie_loss():
    a, b = [0.5, 0.5, 0.5, 0.2], [0.7, 0.5, 0.1, 0.2 + 1e-12]
    assert win_tie_loss(a, b) == {"wins": 1, "ties": 2, "losses": 1, "n": 4}
    assert win_tie_loss(a, b, higher_is_better=False) == {"wins": 1, "ties": 2, "losses": 1, "n": 4}
    assert win_tie_loss([1.0, 2.0], [0.0, 3.0], higher_is_better=False)["wins"] == 1
    assert win_tie_loss(a, b, tol=0.3) == {"wins": 0, "ties": 3, "losses": 1, "n": 4}
