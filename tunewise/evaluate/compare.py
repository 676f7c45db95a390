"""Compare models evaluated on the same examples: values, deltas against the baseline, paired bootstrap 95%
confidence intervals, permutation-test p-values and win/tie/loss counts. Writes RUN/eval/comparison.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from tunewise.evaluate.metrics import get_metric
from tunewise.evaluate.significance import paired_bootstrap, paired_bootstrap_stats, win_tie_loss
from tunewise.rundir import RunDir, atomic_write_json, read_jsonl

MAIN_METRIC_ORDER = ("accuracy", "exact_match", "token_f1", "rougeL", "chrf", "bleu")


def _order(models: list[str]) -> list[str]:
    """Baseline first, the run's tuned model next, then the rest by name."""
    rank = {"base": 0, "tuned": 1}
    return sorted(models, key=lambda m: (rank.get(m, 2), m))


def compare_predictions(
    predictions: dict[str, list[dict[str, Any]]],
    metrics: dict[str, dict[str, float]],
    *,
    baseline: str,
    seed: int = 0,
    n_resamples: int = 10000,
) -> dict[str, Any]:
    """``predictions[model]`` are prediction records (same examples, same order) with per-example ``scores``;
    ``metrics[model]`` the headline scores. Each non-baseline model is compared with ``baseline``."""
    models = list(predictions)
    n = len(predictions[baseline])
    for m in models:
        if len(predictions[m]) != n or any(a["reference"] != b["reference"] for a, b in zip(predictions[m], predictions[baseline])):
            raise ValueError(f"predictions of {m!r} and {baseline!r} are not on the same examples; evaluate both on one test split")
    names = list(predictions[baseline][0]["scores"]) if n else []
    refs = [r["reference"] for r in predictions[baseline]]
    out: dict[str, Any] = {}
    for name in names:
        metric = get_metric(name)
        entry: dict[str, Any] = {"values": {m: metrics[m].get(name) for m in models}, "higher_is_better": metric.higher_is_better, "deltas": {}}
        base_scores = [r["scores"][name] for r in predictions[baseline]]
        for m in models:
            if m == baseline:
                continue
            scores = [r["scores"][name] for r in predictions[m]]
            if metric.stats_fn is not None:
                stats_a, score_fn = metric.stats([r["prediction"] for r in predictions[baseline]], refs)
                stats_b, _ = metric.stats([r["prediction"] for r in predictions[m]], refs)
                boot = paired_bootstrap_stats(stats_a, stats_b, score_fn, n_resamples=min(n_resamples, 2000), seed=seed)
            else:
                boot = paired_bootstrap(base_scores, scores, n_resamples=n_resamples, seed=seed)
            wtl = win_tie_loss(base_scores, scores, higher_is_better=metric.higher_is_better)
            delta = (metrics[m].get(name) or 0.0) - (metrics[baseline].get(name) or 0.0)
            entry["deltas"][m] = {
                "delta": delta,
                "ci": [boot["ci_low"], boot["ci_high"]],
                "p_value": boot["p_value"],
                "p_value_method": boot.get("p_value_method"),
                "significant": bool(boot["p_value"] < 0.05),
                "win_tie_loss": {"win": wtl["wins"], "tie": wtl["ties"], "loss": wtl["losses"]},
            }
        # the last candidate's comparison at the top level, for a two-model table
        if entry["deltas"]:
            entry.update(list(entry["deltas"].values())[-1])
        out[name] = entry
    main = next((m for m in MAIN_METRIC_ORDER if m in out), names[0] if names else None)
    return {"models": models, "baseline": baseline, "n": n, "main_metric": main, "metrics": out,
            "bootstrap": {"n_resamples": n_resamples, "seed": seed, "confidence": 0.95}}


def compare_run(run_dir: str | Path, models: Sequence[str] | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Compare the models evaluated in RUN/eval (default: all of them, baseline = "base" when present)."""
    run = RunDir.of(run_dir)
    found = {p.stem.removeprefix("predictions_"): p for p in run.eval.glob("predictions_*.jsonl")}
    chosen = _order(list(models or found))
    missing = [m for m in chosen if m not in found]
    if missing or len(chosen) < 2:
        raise FileNotFoundError(
            f"need predictions of at least two models in {run.eval} (found {sorted(found)}, missing {missing}); "
            "run `tunewise eval RUN --model base` and `tunewise eval RUN --model tuned` first"
        )
    predictions = {m: read_jsonl(found[m]) for m in chosen}
    metrics = {m: json.loads((run.eval / f"metrics_{m}.json").read_text(encoding="utf-8"))["metrics"] for m in chosen}
    result = compare_predictions(predictions, metrics, baseline=chosen[0], seed=seed)
    split = json.loads((run.eval / f"metrics_{chosen[0]}.json").read_text(encoding="utf-8")).get("split", "test")
    result["split"] = split
    atomic_write_json(run.eval / "comparison.json", result)
    return result
