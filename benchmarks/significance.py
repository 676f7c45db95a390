"""Benchmark: tunewise's vectorised paired bootstrap + sign-flip test vs the same statistics in a plain Python loop.

    python benchmarks/significance.py [--n 1000] [--resamples 10000]

Prints the seconds of each way and the ratio loop/vectorised, both run here in one process, and checks that the
two give intervals and p-values that agree (different random draws: within Monte Carlo error). The comparison of a
baseline and a tuned model on a 1,000-row test set runs this on every metric, so it must take well under a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def loop_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int = 0) -> dict[str, float]:
    """The textbook version: one resample (and one random sign flip) per Python iteration."""
    rng = np.random.default_rng(seed)
    diff = b - a
    n = len(diff)
    delta = float(diff.mean())
    boot = [float(diff[rng.integers(0, n, n)].mean()) for _ in range(n_resamples)]
    null = [float((diff * rng.choice((-1.0, 1.0), n)).mean()) for _ in range(n_resamples)]
    extreme = sum(abs(x) >= abs(delta) - 1e-12 for x in null)
    return {"ci_low": float(np.percentile(boot, 2.5)), "ci_high": float(np.percentile(boot, 97.5)),
            "p_value": (extreme + 1) / (n_resamples + 1)}


def main() -> None:
    from tunewise.evaluate.significance import paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="examples (pairs of scores)")
    parser.add_argument("--resamples", type=int, default=10000)
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    a = rng.random(args.n)
    b = a + 0.01 + rng.normal(0.0, 0.1, args.n)

    started = time.perf_counter()
    loop = loop_bootstrap(a, b, args.resamples)
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    fast = paired_bootstrap(a, b, n_resamples=args.resamples)
    fast_s = time.perf_counter() - started

    print(f"{args.n} pairs, {args.resamples} resamples")
    print(f"{'way':<12} {'seconds':>8} {'ci_low':>9} {'ci_high':>9} {'p':>8}")
    for name, r, s in (("python loop", loop, loop_s), ("tunewise", fast, fast_s)):
        print(f"{name:<12} {s:>8.3f} {r['ci_low']:>9.5f} {r['ci_high']:>9.5f} {r['p_value']:>8.4f}")
    print(f"speed tunewise/loop: {loop_s / fast_s:.1f}x")
    width = loop["ci_high"] - loop["ci_low"]
    agree = abs(loop["ci_low"] - fast["ci_low"]) < 0.1 * width and abs(loop["ci_high"] - fast["ci_high"]) < 0.1 * width
    print("intervals agree within 10% of their width" if agree else "WARNING: the intervals disagree")


if __name__ == "__main__":
    main()
