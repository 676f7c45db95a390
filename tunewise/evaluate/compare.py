"""Compare models evaluated on the same examples: values, deltas against the baseline, paired bootstrap 95%
confidence intervals, permutation-test p-values and win/tie/loss counts. Writes RUN/eval/comparison.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from tunewise.evaluate.significance import (
    paired_bootstrap,
    paired_bootstrap_stats,
    win_tie_loss,
)
from tunewise.metrics import get_metric
from tunewise.rundir import (
    RunDir,
    atomic_write_json,
    metrics_file_of,
    model_of,
    prediction_files,
    read_jsonl,
)

MAIN_METRIC_ORDER = ("preference_accuracy", "constrained_accuracy", "accuracy", "exact_match", "token_f1", "rougeL", "chrf", "bleu")
"""The headline metric is the first of these that was scored: for a classification task the label each model ranks
highest (the fair comparison: a verbose base model scores 0 on exact match by construction)."""
METRICS_WITH_TEXT = ("bleu", "chrf")  # corpus-level metrics whose bootstrap recomputes them from the predicted text
# Headline numbers without per-example scores, mapped to higher_is_better (perplexity: lower is better).
CORPUS_ONLY_METRICS = {"perplexity": False}


def _order(models: list[str]) -> list[str]:
    """Baseline first, its few-shot variant next, then the run's tuned model, then the rest by name."""
    rank = {"base": 0, "base_few_shot": 1, "tuned": 2}
    return sorted(models, key=lambda m: (rank.get(m, 3), m))


def value_interval(scores: Sequence[float], *, seed: int = 0, n_resamples: int = 2000) -> list[float]:
    """The percentile-bootstrap 95% interval of the mean of ``scores`` (the paired bootstrap against zeros: the same
    resampling as the deltas' intervals)."""
    boot = paired_bootstrap([0.0] * len(scores), list(scores), n_resamples=n_resamples, seed=seed)
    return [boot["ci_low"], boot["ci_high"]]


def headline_candidate(models: Sequence[str], baseline: str) -> str | None:
    """The model whose delta is the headline: the tuned model when there is one, else the last candidate."""
    others = [m for m in models if m != baseline]
    return "tuned" if "tuned" in others else (others[-1] if others else None)


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
    names = [k for k in predictions[baseline][0]["scores"] if all(k in predictions[m][0]["scores"] for m in models)] if n else []
    refs = [r["reference"] for r in predictions[baseline]]
    out: dict[str, Any] = {}
    for name in names:
        metric = get_metric(name)
        entry: dict[str, Any] = {"values": {m: metrics[m].get(name) for m in models}, "higher_is_better": metric.higher_is_better, "deltas": {}}
        base_scores = [r["scores"][name] for r in predictions[baseline]]
        if name not in METRICS_WITH_TEXT and n:  # each model's own 95% interval (bootstrap of its mean score)
            entry["intervals"] = {m: value_interval([r["scores"][name] for r in predictions[m]], seed=seed) for m in models}
        for m in models:
            if m == baseline:
                continue
            scores = [r["scores"][name] for r in predictions[m]]
            if metric.stats_fn is not None and name in METRICS_WITH_TEXT:
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
        # the headline candidate's comparison (the tuned model) at the top level, for a two-model table
        headline = headline_candidate(models, baseline)
        if headline in entry["deltas"]:
            entry.update(entry["deltas"][headline])
        out[name] = entry
    for name, higher in CORPUS_ONLY_METRICS.items():  # no per-example scores: values and delta, no interval
        have = [m for m in models if metrics[m].get(name) is not None]
        if baseline in have and len(have) > 1:
            deltas = {m: {"delta": metrics[m][name] - metrics[baseline][name]} for m in have if m != baseline}
            top = deltas.get(headline_candidate(models, baseline) or "", {})
            out[name] = {"values": {m: metrics[m].get(name) for m in models}, "higher_is_better": higher, "deltas": deltas, **top}
    main = next((m for m in MAIN_METRIC_ORDER if m in out), names[0] if names else None)
    return {"models": models, "baseline": baseline, "headline": headline_candidate(models, baseline), "n": n,
            "main_metric": main, "metrics": out,
            "bootstrap": {"n_resamples": n_resamples, "seed": seed, "confidence": 0.95}}


def compare_run(run_dir: str | Path, models: Sequence[str] | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Compare the models evaluated in RUN/eval (default: all of them, baseline = "base" when present)."""
    run = RunDir.of(run_dir)
    found = prediction_files(run.eval)
    chosen = _order(list(models or found))
    missing = [m for m in chosen if m not in found]
    if missing or len(chosen) < 2:
        raise FileNotFoundError(
            f"need predictions of at least two models in {run.eval} (found {sorted(found)}, missing {missing}); "
            "run `tunewise eval RUN --model base` and `tunewise eval RUN --model tuned` first"
        )
    predictions = {m: read_jsonl(found[m]) for m in chosen}
    metrics = {m: run.read_json(run.eval_metrics(m))["metrics"] for m in chosen}
    result = compare_predictions(predictions, metrics, baseline=chosen[0], seed=seed)
    split = run.read_json(run.eval_metrics(chosen[0])).get("split", "test")
    result["split"] = split
    atomic_write_json(run.comparison, result)
    return result


def _prediction_files(target: str | Path) -> dict[str, Path]:
    """predictions_*.jsonl files named by ``target``: one file, a folder of them, or a run directory (its eval/)."""
    path = Path(target)
    if path.is_file():
        return {model_of(path): path}
    folder = path / "eval" if (path / "config.yaml").is_file() else path
    found = prediction_files(folder)
    if not found:
        raise FileNotFoundError(f"no predictions_*.jsonl in {folder}; evaluate a model first (`tunewise eval`)")
    return found


def _headline(pred_file: Path, records: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    """The metrics_<model>.json beside ``pred_file`` when present, else the scores recomputed from ``records``."""
    from tunewise.metrics import compute_metrics

    metrics_file = metrics_file_of(pred_file)
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text(encoding="utf-8"))["metrics"]
    from tunewise.evaluate.labels import METRIC

    preds, refs = [r["prediction"] for r in records], [r["reference"] for r in records]
    out = compute_metrics(preds, refs, [n for n in names if n not in ("json_schema", METRIC)])
    if METRIC in names and records:  # scored from label log-likelihoods: the mean of its per-example scores
        out[METRIC] = sum(r["scores"][METRIC] for r in records) / len(records)
    return out


def _owner(predictions: Path) -> str:
    """What a predictions file belongs to: its run's name for RUN/eval/predictions_*.jsonl, else its folder's name."""
    folder = predictions.parent
    in_run = folder.name == "eval" and (folder.parent / "config.yaml").is_file()
    return folder.parent.name if in_run else folder.name


def compare_files(targets: Sequence[str | Path], out: str | Path | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Compare the predictions in ``targets`` (files, folders or run directories; the first model found is the
    baseline) on the metrics they all scored. Writes ``out`` (default: :func:`default_comparison_path` beside the first
    file)."""
    found = [(name, path) for target in targets for name, path in _prediction_files(target).items()]
    names = [name for name, _ in found]
    files: dict[str, Path] = {}
    for name, path in found:  # the same model of two runs ("tuned" and "tuned"): each named by its run
        key = name if names.count(name) == 1 else f"{_owner(path)}/{name}"
        files[key if key not in files else f"{path.parent}/{name}"] = path
    if len(files) < 2:
        raise FileNotFoundError(f"need predictions of at least two models, found {list(files)} in {[str(t) for t in targets]}")
    predictions = {m: read_jsonl(p) for m, p in files.items()}
    common = [n for n in next(iter(predictions.values()))[0]["scores"] if all(n in recs[0]["scores"] for recs in predictions.values() if recs)]
    if not common:
        raise ValueError("the prediction files share no scored metric; evaluate them with the same --metrics")
    predictions = {m: [{**r, "scores": {n: r["scores"][n] for n in common}} for r in recs] for m, recs in predictions.items()}
    metrics = {m: _headline(files[m], predictions[m], common) for m in files}
    models = list(files)
    result = compare_predictions(predictions, metrics, baseline=models[0], seed=seed)
    result["files"] = {m: str(p) for m, p in files.items()}
    path = Path(out) if out else default_comparison_path(files[models[0]].parent, models)
    atomic_write_json(path, result)
    result["written_to"] = str(path)
    return result


def default_comparison_path(folder: Path, models: Sequence[str]) -> Path:
    """comparison.json in ``folder``; in a run's eval/ folder, whose comparison.json is the run's own (base vs tuned:
    the report and model card read it), ``comparison_<model>_vs_<model>....json`` instead."""
    if not (folder.name == "eval" and (folder.parent / "config.yaml").is_file()):
        return folder / "comparison.json"
    name = "_vs_".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", m).strip("-") for m in models)
    return folder / f"comparison_{name}.json"
