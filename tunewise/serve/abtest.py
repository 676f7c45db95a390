"""Summarise a server's logs as an A/B test: per-variant latency and quality, each with a confidence interval,
and every variant against the control (the difference of means, its interval and a p-value).

Quality comes from what users recorded: a reference answer (``metadata.reference`` on the request, or a later
``/v1/feedback`` with ``reference``) scored with an eval metric, and feedback scores in [0, 1].

The groups of an A/B test are different requests, so the statistics are the *unpaired* versions of those in
:mod:`tunewise.evaluate.significance` (which compares two systems on the same examples): a percentile bootstrap
resampling each group on its own, and a permutation test that shuffles the group labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tunewise.serve.logs import ERRORS, FEEDBACK

_ROWS = 500  # resamples drawn per chunk


def read_logs(path: str | Path) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], int]:
    """({variant: records}, feedback records, number of error records) from a log folder (or one variant file)."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"{path}: no JSONL logs; pass the folder `tunewise serve` logs into (--log-dir)")
    variants: dict[str, list[dict[str, Any]]] = {}
    feedback: list[dict[str, Any]] = []
    errors = 0
    for f in files:
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        if f.stem == FEEDBACK:
            feedback.extend(rows)
        elif f.stem == ERRORS:
            errors += len(rows)
        else:
            for row in rows:
                variants.setdefault(str(row.get("variant") or f.stem), []).append(row)
    return variants, feedback, errors


def mean_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Mean with a percentile-bootstrap interval (``ci`` is None below 2 values)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return {"n": 0, "mean": None, "ci": None}
    if x.size < 2:
        return {"n": 1, "mean": float(x[0]), "ci": None}
    rng = np.random.default_rng(seed)
    means = np.concatenate([x[rng.integers(0, x.size, (min(_ROWS, n_resamples - i), x.size))].mean(axis=1)
                            for i in range(0, n_resamples, _ROWS)])
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"n": int(x.size), "mean": float(x.mean()), "ci": [float(low), float(high)]}


def difference(control: Sequence[float], variant: Sequence[float], *, confidence: float = 0.95,
               n_resamples: int = 10000, seed: int = 0) -> dict[str, Any] | None:
    """mean(variant) - mean(control): unpaired bootstrap interval and two-sided permutation p-value."""
    a, b = np.asarray(control, dtype=float), np.asarray(variant, dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    rng = np.random.default_rng(seed)
    observed = float(b.mean() - a.mean())
    boot, null = [], []
    pooled = np.concatenate([a, b])
    for i in range(0, n_resamples, _ROWS):
        rows = min(_ROWS, n_resamples - i)
        boot.append(b[rng.integers(0, b.size, (rows, b.size))].mean(axis=1) -
                    a[rng.integers(0, a.size, (rows, a.size))].mean(axis=1))
        shuffled = pooled[np.argsort(rng.random((rows, pooled.size)), axis=1)]
        null.append(shuffled[:, a.size:].mean(axis=1) - shuffled[:, : a.size].mean(axis=1))
    low, high = np.quantile(np.concatenate(boot), [(1 - confidence) / 2, (1 + confidence) / 2])
    null_all = np.concatenate(null)
    tol = 1e-12 * max(1.0, abs(observed))
    p = (int(np.count_nonzero(np.abs(null_all) >= abs(observed) - tol)) + 1) / (null_all.size + 1)
    return {"delta": observed, "ci": [float(low), float(high)], "p_value": p, "significant": bool(low > 0 or high < 0)}


def _references(records: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(response, reference) pairs; a reference sent as feedback overrides one sent with the request."""
    later = {f["id"]: f["reference"] for f in feedback if f.get("reference") is not None}
    pairs = []
    for r in records:
        reference = later.get(r.get("id"), (r.get("metadata") or {}).get("reference"))
        if reference is not None:
            pairs.append((r.get("response") or "", str(reference)))
    return pairs


def summarize(
    path: str | Path,
    *,
    metric: str = "exact_match",
    control: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-variant latency / quality with intervals, and each variant against ``control`` (default: ``base`` if
    served, else the first variant in name order)."""
    from tunewise.metrics import per_example_scores

    variants, feedback, errors = read_logs(path)
    if not variants:
        raise ValueError(f"{path}: the logs hold no answered request yet")
    stats = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
    names = sorted(variants)
    control = control or ("base" if "base" in variants else names[0])
    if control not in variants:
        raise ValueError(f"control {control!r} has no requests in the logs; variants there: {', '.join(names)}")

    samples: dict[str, dict[str, list[float]]] = {}
    summary: dict[str, Any] = {}
    for name in names:
        ok = [r for r in variants[name] if r.get("status", 200) == 200]
        scores = {f["id"]: f["score"] for f in feedback if f.get("score") is not None}
        pairs = _references(ok, feedback)
        samples[name] = {
            "latency_s": [r["latency_s"] for r in ok if r.get("latency_s") is not None],
            "ttft_s": [r["ttft_s"] for r in ok if r.get("ttft_s") is not None],
            metric: per_example_scores([p for p, _ in pairs], [q for _, q in pairs], [metric])[metric] if pairs else [],
            "feedback": [scores[r["id"]] for r in ok if r.get("id") in scores],
        }
        latency = samples[name]["latency_s"]
        tokens = sum(r.get("completion_tokens") or 0 for r in ok)
        summary[name] = {
            "requests": len(ok),
            "failed": len(variants[name]) - len(ok),
            "assignment": {how: sum(r.get("assignment") == how for r in ok) for how in ("user-hash", "random", "explicit")},
            "latency_s": {**mean_ci(latency, **stats),
                          **({"p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95))}
                             if latency else {})},
            "ttft_s": mean_ci(samples[name]["ttft_s"], **stats),
            "tokens_per_s": tokens / sum(latency) if latency and sum(latency) > 0 else None,
            metric: mean_ci(samples[name][metric], **stats),
            "feedback": mean_ci(samples[name]["feedback"], **stats),
        }
    comparisons = {
        name: {key: difference(samples[control][key], samples[name][key], **stats)
               for key in ("latency_s", metric, "feedback")}
        for name in names if name != control
    }
    return {"log": str(path), "control": control, "metric": metric, "confidence": confidence, "errors": errors,
            "feedback_records": len(feedback), "variants": summary, "versus_control": comparisons}
