"""Error analysis of one model's predictions: what kind of mistakes, on which examples, labels and input lengths.

Input: the prediction records ``evaluate_run`` writes (``input``, ``reference``, ``prediction``, ``stopped``,
``scores``). Output: RUN/eval/errors_<model>.json and, for label tasks, RUN/plots/confusion_<model>.png.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tunewise.metrics import (
    classification_report,
    detect_labels,
    get_metric,
    parse_json_prediction,
)
from tunewise.rundir import atomic_write_json, errors_file

MAIN_METRIC_ORDER = ("accuracy", "exact_match", "label_found", "token_f1", "rougeL", "chrf", "bleu", "json_schema", "json_valid")
JSON_METRICS = ("json_valid", "json_schema")
# Most specific first: an example gets the first kind that applies.
ERROR_KINDS = ("empty_output", "never_stopped", "format_error", "wrong_label", "not_a_label", "wrong_answer")


def main_metric(names: Sequence[str]) -> str | None:
    """The headline metric among ``names`` (the first of MAIN_METRIC_ORDER present, else the first name)."""
    return next((m for m in MAIN_METRIC_ORDER if m in names), names[0] if names else None)


def _is_perfect(name: str, score: float) -> bool:
    return score >= get_metric(name).scale - 1e-9


def error_kind(record: dict[str, Any], *, labels: Sequence[str] | None, metric: str | None) -> str | None:
    """Why ``record`` is wrong (one of ERROR_KINDS), or None when its ``metric`` score is perfect."""
    scores = record.get("scores") or {}
    if metric is not None and metric in scores and _is_perfect(metric, scores[metric]):
        return None
    prediction = (record.get("prediction") or "").strip()
    if not prediction:
        return "empty_output"
    if record.get("stopped") is False:
        return "never_stopped"
    if any(m in scores for m in JSON_METRICS):
        try:
            parse_json_prediction(prediction)
        except ValueError:
            return "format_error"
    if labels is not None:
        return "wrong_label" if prediction in labels else "not_a_label"
    return "wrong_answer"


def _brief(record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    keys = ("index", "input", "reference", "prediction", "stopped")
    return {**{k: record.get(k) for k in keys}, **extra}


def worst_examples(records: Sequence[dict[str, Any]], metric: str, n: int) -> list[dict[str, Any]]:
    """The ``n`` records that score worst on ``metric`` (ties: input order), briefly."""
    sign = 1 if get_metric(metric).higher_is_better else -1
    ranked = sorted(range(len(records)), key=lambda i: (sign * records[i]["scores"][metric], i))
    return [_brief(records[i], score=records[i]["scores"][metric]) for i in ranked[:n]]


def by_length(
    records: Sequence[dict[str, Any]], lengths: Sequence[int], names: Sequence[str], *, buckets: int = 4
) -> list[dict[str, Any]]:
    """Mean score of each metric in ``buckets`` groups of about equal size, by ascending input length."""
    order = sorted(range(len(records)), key=lambda i: (lengths[i], i))
    out = []
    for chunk in np.array_split(np.array(order, dtype=int), min(buckets, len(order))):
        if not len(chunk):
            continue
        idx = chunk.tolist()
        out.append(
            {
                "min_length": int(lengths[idx[0]]),
                "max_length": int(lengths[idx[-1]]),
                "n": len(idx),
                "metrics": {m: float(np.mean([records[i]["scores"][m] for i in idx])) for m in names},
            }
        )
    return out


def analyze_errors(
    records: Sequence[dict[str, Any]],
    *,
    labels: Sequence[str] | None = None,
    worst_n: int = 10,
    length_buckets: int = 4,
    length_fn: Callable[[str], int] | None = None,
    length_unit: str = "characters",
) -> dict[str, Any]:
    """Error analysis of prediction records (see module doc). ``labels`` default to the references when they look
    like labels; ``length_fn`` measures an input (default: ``len``, in ``length_unit``)."""
    if not records:
        raise ValueError("no prediction records to analyse; evaluate a model first (`tunewise eval`)")
    names = list(records[0].get("scores") or {})
    metric = main_metric(names)
    refs = [r["reference"] for r in records]
    labels = list(labels) if labels is not None else detect_labels(refs)
    kinds = [error_kind(r, labels=labels, metric=metric) for r in records]
    counts = Counter(k for k in kinds if k is not None)
    result: dict[str, Any] = {
        "n": len(records),
        "main_metric": metric,
        "errors": sum(counts.values()),
        "counts_by_kind": {k: counts[k] for k in ERROR_KINDS if counts[k]},
        "examples_by_kind": {
            k: [_brief(r) for r, kind in zip(records, kinds) if kind == k][:worst_n] for k in ERROR_KINDS if counts[k]
        },
        "worst": {m: worst_examples(records, m, worst_n) for m in names},
    }
    lengths = [(length_fn or len)(r.get("input") or "") for r in records]
    result["by_input_length"] = {"unit": length_unit if length_fn else "characters", "buckets": by_length(records, lengths, names, buckets=length_buckets)}
    if labels is not None:
        per_label: dict[str, dict[str, Any]] = {}
        for r, kind in zip(records, kinds):
            entry = per_label.setdefault(r["reference"].strip(), {"n": 0, "errors": 0, "kinds": Counter()})
            entry["n"] += 1
            if kind is not None:
                entry["errors"] += 1
                entry["kinds"][kind] += 1
        result["by_label"] = {k: {**v, "kinds": dict(v["kinds"])} for k, v in sorted(per_label.items())}
        try:
            result["classification"] = classification_report([r["prediction"] for r in records], refs, labels=labels)
        except ValueError as err:  # references outside the given labels: report why instead of a table
            result["classification_error"] = str(err)
    return result


def plot_confusion(report: dict[str, Any], path: str | Path, *, title: str = "") -> Path:
    """Confusion matrix (rows: reference, columns: prediction, last column "(other)") as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = report["confusion_matrix"]
    matrix = np.array(cm["matrix"])
    size = max(4.0, 0.45 * len(cm["columns"]) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(cm["columns"])), cm["columns"], rotation=60, ha="right")
    ax.set_yticks(range(len(cm["rows"])), cm["rows"])
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title(title or "confusion matrix")
    if matrix.size <= 400:
        top = matrix.max() or 1
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_errors(
    records: Sequence[dict[str, Any]],
    model: str,
    eval_dir: str | Path,
    plots_dir: str | Path,
    **options: Any,
) -> dict[str, Any]:
    """Analyse ``records`` and write EVAL/errors_<model>.json (+ PLOTS/confusion_<model>.png for label tasks)."""
    result = analyze_errors(records, **options)
    if "classification" in result:
        plot = plot_confusion(result["classification"], Path(plots_dir) / f"confusion_{model}.png",  # RUN/plots or --out
                              title=f"{model}: confusion matrix")
        result["confusion_plot"] = str(plot)
    atomic_write_json(errors_file(eval_dir, model), {"model": model, **result})
    return result
