"""Paired significance statistics for comparing system A (baseline) with system B (candidate)
on the same examples.

Every function reports the same two things:

- **confidence interval** of delta = B - A: the paired percentile bootstrap (resample example
  indices with replacement, recompute both systems' scores on the same resample, take the
  percentiles of the resampled deltas; Efron & Tibshirani 1993, ch. 13; Koehn 2004 for MT).
- **two-sided p-value** for "A and B are equally good": the paired permutation test, called
  approximate randomization in NLP (Noreen 1989; Riezler & Maxwell 2005): under the null hypothesis
  the two outputs of each example are exchangeable, so each pair is swapped with probability 1/2 and
  the statistic |delta| is recomputed. For a mean of per-example scores a swap flips the sign of that
  example's difference, so this is the sign-flip test. When 2**n <= n_resamples every swap pattern
  is enumerated and the p-value is exact; otherwise it is the Monte Carlo estimate
  (1 + #{|delta*| >= |delta|}) / (1 + n_resamples), which never under-states p (Phipson & Smyth 2010).
  The permutation test is used for the p-value rather than a bootstrap p-value because it is exact
  (or conservative) under its null, while the shifted-bootstrap p-value is only asymptotic.

sacrebleu has paired bootstrap / AR tests too (sacrebleu.significance), but only for its own
metric objects, with a seed read from an environment variable and a fixed 95% interval; these work
on any per-example scores or corpus function and take seed and confidence as arguments.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

_CHUNK_ELEMENTS = 1 << 20  # resample rows are drawn in chunks of about this many entries (8 MB of int64)


def _validate(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _check_n(n_a: int, n_b: int, what: str = "scores") -> int:
    if n_a != n_b:
        raise ValueError(f"paired {what} must have the same length, got {n_a} and {n_b}")
    if n_a == 0:
        raise ValueError("cannot compare zero examples")
    return n_a


def _chunks(n_rows: int, n: int) -> Iterator[int]:
    per_chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_rows, per_chunk):
        yield min(per_chunk, n_rows - start)


def _bootstrap_indices(rng: np.random.Generator, n: int, n_resamples: int) -> Iterator[np.ndarray]:
    """Chunks of shape (rows, n): each row is one resample of example indices, with replacement."""
    for rows in _chunks(n_resamples, n):
        yield rng.integers(0, n, size=(rows, n))


def _swap_masks(rng: np.random.Generator, n: int, n_resamples: int) -> tuple[bool, Iterator[np.ndarray]]:
    """(exact, chunks of boolean swap masks of shape (rows, n)); all 2**n masks when that fits."""
    if 2**n <= n_resamples:
        patterns = np.arange(2**n)[:, None]
        return True, iter([((patterns >> np.arange(n)) & 1).astype(bool)])
    return False, (rng.integers(0, 2, size=(rows, n), dtype=np.int8).astype(bool) for rows in _chunks(n_resamples, n))


def _p_value(exact: bool, null_deltas: np.ndarray, observed: float, tol: float) -> float:
    # tol absorbs floating-point rounding: a swap pattern that reproduces |observed| must count
    hits = int(np.count_nonzero(np.abs(null_deltas) >= abs(observed) - tol))
    if exact:
        return hits / len(null_deltas)
    return (hits + 1) / (len(null_deltas) + 1)


def _summary(
    deltas: np.ndarray, p: float, exact: bool, confidence: float, n: int, n_resamples: int, seed: int | None
) -> dict[str, Any]:
    low, high = np.quantile(deltas, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "p_value": float(p),
        "p_value_method": "exact paired permutation" if exact else "monte carlo paired permutation",
        "n": n,
        "n_resamples": n_resamples,
        "seed": seed,
    }


def paired_bootstrap(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    n_resamples: int = 10000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare per-example scores of A and B (same examples, same order).

    Returns mean_a, mean_b, delta (mean_b - mean_a), ci_low/ci_high (percentile bootstrap interval of
    the delta at ``confidence``), p_value (two-sided paired sign-flip permutation test, exact when
    2**n <= n_resamples), p_value_method, n, n_resamples, seed. Vectorised: 10,000 resamples of
    1,000 examples take a fraction of a second.
    """
    _validate(n_resamples, confidence)
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    n = _check_n(len(a), len(b))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite numbers (found NaN or infinity)")
    diff = b - a
    delta = float(diff.mean())
    rng = np.random.default_rng(seed)

    boot = np.concatenate([diff[idx].mean(axis=1) for idx in _bootstrap_indices(rng, n, n_resamples)])

    # swapping pair i flips the sign of diff[i]: mean = (sum(diff) - 2 * sum(diff[swapped])) / n
    exact, masks = _swap_masks(rng, n, n_resamples)
    total = diff.sum()
    null = np.concatenate([(total - 2.0 * (m @ diff)) / n for m in masks])
    p = _p_value(exact, null, delta, tol=1e-9 * float(np.abs(diff).mean()))

    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "delta": delta} | _summary(
        boot, p, exact, confidence, n, len(null) if exact else n_resamples, seed
    )


CorpusFn = Callable[[list[str], list[str]], float]


def paired_bootstrap_corpus(
    preds_a: Sequence[str],
    preds_b: Sequence[str],
    refs: Sequence[str],
    corpus_fn: CorpusFn,
    n_resamples: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare A and B on a corpus-level metric ``corpus_fn(preds, refs) -> float`` (e.g. BLEU).

    Same statistics as :func:`paired_bootstrap`, but every resample and every swap pattern recomputes
    the corpus score from the strings: 4 * n_resamples calls of ``corpus_fn`` on n examples, so it is
    slow for metrics that tokenise (corpus BLEU on 1,000 sentences takes ~0.15 s: 1,000 resamples
    take minutes). For BLEU/chrF prefer :func:`paired_bootstrap_stats` with ``Metric.stats``, which
    gives the same numbers for the same seed. Bind metric options with functools.partial.
    Returns score_a, score_b, delta and the keys of :func:`paired_bootstrap` after them.
    """
    _validate(n_resamples, confidence)
    n = _check_n(len(preds_a), len(preds_b), "predictions")
    _check_n(n, len(refs), "predictions and references")
    preds_a, preds_b, refs = list(preds_a), list(preds_b), list(refs)
    score_a, score_b = float(corpus_fn(preds_a, refs)), float(corpus_fn(preds_b, refs))
    rng = np.random.default_rng(seed)

    boot = []
    for chunk in _bootstrap_indices(rng, n, n_resamples):
        for idx in chunk:
            r = [refs[i] for i in idx]
            boot.append(corpus_fn([preds_b[i] for i in idx], r) - corpus_fn([preds_a[i] for i in idx], r))

    exact, masks = _swap_masks(rng, n, n_resamples)
    null = []
    for chunk in masks:
        for swap in chunk:
            new_a = [pb if s else pa for pa, pb, s in zip(preds_a, preds_b, swap)]
            new_b = [pa if s else pb for pa, pb, s in zip(preds_a, preds_b, swap)]
            null.append(corpus_fn(new_b, refs) - corpus_fn(new_a, refs))
    delta = score_b - score_a
    p = _p_value(exact, np.asarray(null), delta, tol=1e-9 * max(1.0, abs(score_a), abs(score_b)))
    return {"score_a": score_a, "score_b": score_b, "delta": delta} | _summary(
        np.asarray(boot), p, exact, confidence, n, len(null) if exact else n_resamples, seed
    )


def paired_bootstrap_stats(
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    score_fn: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """:func:`paired_bootstrap_corpus` for a metric whose corpus score is ``score_fn`` of summed
    per-example statistics (arrays of shape (n, k), as ``Metric.stats`` returns for BLEU and chrF).

    Resampled sums are matrix products, so only ``score_fn`` runs per resample (4 * n_resamples
    cheap calls). Same resamples and swap patterns as :func:`paired_bootstrap_corpus` for the same seed.
    """
    _validate(n_resamples, confidence)
    sa, sb = np.asarray(stats_a, dtype=np.float64), np.asarray(stats_b, dtype=np.float64)
    if sa.ndim != 2 or sa.shape[1:] != sb.shape[1:]:
        raise ValueError(f"statistics must be 2-D arrays of the same width, got {sa.shape} and {sb.shape}")
    n = _check_n(len(sa), len(sb), "statistics")
    sum_a, sum_b = sa.sum(axis=0), sb.sum(axis=0)
    score_a, score_b = float(score_fn(sum_a)), float(score_fn(sum_b))
    rng = np.random.default_rng(seed)

    boot = []
    for idx in _bootstrap_indices(rng, n, n_resamples):
        rows = len(idx)
        # how often each example occurs in each resample, so that resampled sums = counts @ stats
        flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
        boot.extend(score_fn(b) - score_fn(a) for a, b in zip(counts @ sa, counts @ sb))

    exact, masks = _swap_masks(rng, n, n_resamples)
    null = []
    for m in masks:
        moved = m.astype(np.float64) @ (sb - sa)  # swapping pair i moves its stats from one system to the other
        null.extend(score_fn(sum_b - x) - score_fn(sum_a + x) for x in moved)
    delta = score_b - score_a
    p = _p_value(exact, np.asarray(null), delta, tol=1e-9 * max(1.0, abs(score_a), abs(score_b)))
    return {"score_a": score_a, "score_b": score_b, "delta": delta} | _summary(
        np.asarray(boot), p, exact, confidence, n, len(null) if exact else n_resamples, seed
    )


def win_tie_loss(
    scores_a: Sequence[float], scores_b: Sequence[float], tol: float = 1e-9, higher_is_better: bool = True
) -> dict[str, int]:
    """Count examples where B beats A (wins), differs by at most ``tol`` (ties), or loses."""
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    n = _check_n(len(a), len(b))
    diff = (b - a) if higher_is_better else (a - b)
    wins, losses = int(np.count_nonzero(diff > tol)), int(np.count_nonzero(diff < -tol))
    return {"wins": wins, "ties": n - wins - losses, "losses": losses, "n": n}
