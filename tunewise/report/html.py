"""report.html: one self-contained page (images inline) with the whole run."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from tunewise.version import __version__
from tunewise.catalog import N_, _, current_language, speaking, translate
from tunewise.data.stats import describe_loading
from tunewise.rundir import RunDir, atomic_write_text, read_jsonl
from tunewise.rundir import prediction_files as predictions_in

PLOT_ORDER = ["loss", "rewards", "reward_accuracy", "lr", "grad_norm", "throughput", "memory", "data_token_lengths"]


def _load_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    return _("{minutes} min {secs} s").format(minutes=minutes, secs=secs) if minutes else _("{secs} s").format(secs=secs)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        elif isinstance(value, (int, float, str)):
            rows.append((name, _fmt(value)))
    return rows


def _delta_class(entry: dict[str, Any]) -> str:
    """"good"/"bad" for a significant improvement/regression (lower is better for e.g. perplexity)."""
    better = (entry.get("delta") or 0) * (1 if entry.get("higher_is_better", True) else -1)
    return ("good" if better > 0 else "bad" if better < 0 else "") if entry.get("significant") else ""


def _comparison_rows(comparison: dict[str, Any]) -> dict[str, Any]:
    """The comparison table: every metric (the headline first), each model's value, and each candidate's delta
    against the baseline with its interval, p-value and win / tie / loss."""
    models, baseline, main = comparison["models"], comparison.get("baseline", comparison["models"][0]), comparison.get("main_metric")
    candidates = [m for m in models if m != baseline]
    rows = []
    for metric in sorted(comparison["metrics"], key=lambda name: name != main):
        entry = comparison["metrics"][metric]
        deltas = []
        for m in candidates:
            d = (entry.get("deltas") or {}).get(m) or {}
            delta, ci, wtl = d.get("delta"), d.get("ci"), d.get("win_tie_loss")
            deltas.append({
                "delta": ("+" if (delta or 0) > 0 else "") + _fmt(delta) if delta is not None else "",
                "delta_class": _delta_class({**d, "higher_is_better": entry.get("higher_is_better", True)}),
                "ci": f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "",
                "p": _fmt(d.get("p_value"), 4) if d.get("p_value") is not None else "",
                "wtl": " / ".join(str(wtl[k]) for k in ("win", "tie", "loss")) if wtl else "",
            })
        rows.append({"metric": metric + (_(" (headline)") if metric == main and len(comparison["metrics"]) > 1 else ""),
                     "cells": [_fmt(entry["values"].get(m)) for m in models], "deltas": deltas})
    return {"models": models, "baseline": baseline, "candidates": candidates, "rows": rows, "n": comparison.get("n"),
            "split": comparison.get("split", "test")}


BASELINE_ROWS = (
    ("base", "accuracy", N_("base model, zero-shot (its generated answer)")),
    ("base_few_shot", "accuracy", N_("base model, few-shot prompt (generated)")),
    ("base", "constrained_accuracy", N_("base model, constrained (the label it ranks highest)")),
    ("base_few_shot", "constrained_accuracy", N_("base model, few-shot prompt, constrained")),
    ("tuned", "accuracy", N_("fine-tuned (generated)")),
    ("tuned", "constrained_accuracy", N_("fine-tuned, constrained")),
)


def _baselines_view(comparison: dict[str, Any], run: RunDir) -> dict[str, Any] | None:
    """"Was fine-tuning worth it?": prompting (zero-shot, few-shot, constrained) next to the tuned model, each with
    its 95% interval, on the same test rows."""
    metrics = comparison.get("metrics") or {}
    rows = []
    for model, metric, what in BASELINE_ROWS:
        entry = metrics.get(metric)
        if not entry or entry["values"].get(model) is None:
            continue
        ci = (entry.get("intervals") or {}).get(model)
        rows.append({"what": translate(what), "model": model, "metric": metric, "value": _fmt(entry["values"][model]),
                     "ci": f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""})
    if not any(r["metric"] == "constrained_accuracy" for r in rows) and not any("few_shot" in r["model"] for r in rows):
        return None
    few = _load_json(run.eval / "metrics_base_few_shot.json") or {}
    return {"rows": rows, "shots": len(few.get("shots") or []), "instruction": few.get("instruction")}


def _monitor_view(run: RunDir) -> dict[str, Any] | None:
    """monitor: the run's status (run.json), best eval loss and step, warnings and early stop (summary.json)."""
    summary, record = _load_json(run.summary), _load_json(run.record)
    if not summary and not record:
        return None
    summary, record = summary or {}, record or {}
    return {
        "status": translate(record["status"]) if record.get("status") else record.get("status"),
        "error": record.get("error"),
        "best_eval": _fmt(summary.get("min_eval_loss")) if summary.get("min_eval_loss") is not None else None,
        "best_step": summary.get("best_step"),
        "warnings": [w.get("message") for w in summary.get("warnings") or []],
        "stopped": (summary.get("stopped") or {}).get("message"),
    }


def _perfect(metric: str) -> float:
    from tunewise.metrics import get_metric

    return get_metric(metric).scale - 1e-9


def _errors_view(run: RunDir, models: list[str], worst_n: int) -> dict[str, Any] | None:
    """The error analysis of the tuned model (else the last model evaluated): counts by kind, worst examples."""
    found = {p.stem.removeprefix("errors_"): p for p in run.eval.glob("errors_*.json")} if run.eval.is_dir() else {}
    if not found:
        return None
    model = "tuned" if "tuned" in found else next((m for m in reversed(models) if m in found), sorted(found)[-1])
    errors = _load_json(found[model]) or {}
    metric = errors.get("main_metric")
    per_class = (errors.get("classification") or {}).get("per_class") or {}
    return {
        "model": model,
        "n": errors.get("n"),
        "errors": errors.get("errors"),
        "metric": metric,
        "kinds": [(k.replace("_", " "), v) for k, v in (errors.get("counts_by_kind") or {}).items()],
        "worst": [ex for ex in (errors.get("worst") or {}).get(metric, []) if ex["score"] < _perfect(metric)][:worst_n] if metric else [],
        "classes": [(label, _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), c["support"]) for label, c in per_class.items()],
        "lengths": [
            (f"{b['min_length']}-{b['max_length']}", b["n"], _fmt(b["metrics"].get(metric)))
            for b in (errors.get("by_input_length") or {}).get("buckets", [])
        ],
        "length_unit": (errors.get("by_input_length") or {}).get("unit", ""),
    }


def _labels_view(data_report: dict[str, Any] | None) -> dict[str, Any] | None:
    """Examples per label in each split, for a classification task."""
    if not data_report or (data_report.get("task") or {}).get("type") != "classification":
        return None
    labels = data_report.get("labels") or {}
    splits = [s for s in ("train", "val", "test") if s in labels]
    names = sorted({k for s in splits for k in labels[s]})
    return {"splits": splits, "rows": [(n, [labels[s].get(n, 0) for s in splits]) for n in names[:50]]}


def build_report(run_dir: str | Path, *, examples: int = 10, lang: str | None = None) -> Path:
    """Render RUN/report.html from what the stages left in the run directory (any of them may be missing); ``lang``
    (en, zh; default: the language tunewise speaks, tunewise/catalog.py) is the language of the whole page."""
    with speaking(lang or current_language()) as language:
        return _build_report(run_dir, examples, language)


def _build_report(run_dir: str | Path, examples: int, lang: str) -> Path:
    from tunewise.checklist import checklist

    run = RunDir.of(run_dir)
    config_text = run.config.read_text(encoding="utf-8") if run.config.is_file() else ""
    import yaml

    config = yaml.safe_load(config_text) if config_text else {}
    train = _load_json(run.train_summary)
    comparison = _load_json(run.comparison)
    data_report = _load_json(run.data_report)
    models = (comparison or {}).get("models") or []
    scored = _load_json(run.eval_metrics(models[0])) if models else None  # same references for every model

    cards = []
    if comparison:
        main = comparison.get("main_metric")
        entry = comparison["metrics"].get(main) if main else None
        if entry:
            for m in comparison["models"]:
                cards.append({"label": f"{main}: {m}", "value": _fmt(entry["values"].get(m))})
    if train:
        cards.append({"label": _("final train loss"), "value": _fmt(train.get("final_train_loss"))})
        if train.get("final_eval_loss") is not None:
            cards.append({"label": _("final eval loss"), "value": _fmt(train.get("final_eval_loss"))})
        cards.append({"label": _("training time"), "value": _duration(train.get("train_time_s"))})

    found = sorted(run.plots.glob("*.png")) if run.plots.is_dir() else []
    found.sort(key=lambda p: (PLOT_ORDER.index(p.stem) if p.stem in PLOT_ORDER else len(PLOT_ORDER), p.stem))
    plots = [{"name": p.stem, "data": base64.b64encode(p.read_bytes()).decode("ascii")} for p in found]

    example_rows: list[dict[str, Any]] = []
    example_models: list[str] = []
    prediction_files = predictions_in(run.eval)
    order = [m for m in (comparison or {}).get("models", []) if m in prediction_files] or sorted(prediction_files)
    if order and examples:
        per_model = {m: read_jsonl(prediction_files[m])[:examples] for m in order}
        example_models = order
        first = per_model[order[0]]
        for i, rec in enumerate(first):
            preds = []
            for m in order:
                other = per_model[m][i] if i < len(per_model[m]) else {}
                scores = other.get("scores") or {}
                correct = bool(scores.get("accuracy", scores.get("exact_match", 0)))
                preds.append({"text": other.get("prediction", ""), "correct": correct})
            example_rows.append({"index": rec["index"], "input": rec["input"], "reference": rec["reference"], "predictions": preds})

    train_view = None
    if train:
        memory = train.get("cuda_peak_allocated_mb") or train.get("peak_rss_mb")
        train_view = {
            "steps": train.get("steps"),
            "epochs": train.get("epochs"),
            "time": _duration(train.get("train_time_s")),
            "trainable": _fmt(train.get("trainable_parameters")),
            "total": _fmt(train.get("total_parameters")),
            "tokens": _fmt(train.get("trained_tokens")),
            "tps": _fmt(train.get("tokens_per_s"), 1),
            "memory": f"{memory:,.0f} MiB" if memory else _("n/a"),
        }

    env = Environment(loader=PackageLoader("tunewise.report", "templates"), autoescape=select_autoescape(["html"]))
    env.globals["_"] = _  # the template's words are in the catalogue too (pybabel reads them: scripts/i18n.sh)
    html = env.get_template("report.html").render(
        lang=lang,
        name=config.get("name", run.root.name),
        model=config.get("model", ""),
        method=config.get("method", ""),
        created=time.strftime("%Y-%m-%d %H:%M"),
        version=__version__,
        cards=cards,
        comparison=_comparison_rows(comparison) if comparison else None,
        baselines=_baselines_view(comparison, run) if comparison else None,
        loading=describe_loading(data_report) if data_report else [],
        labels=_labels_view(data_report),
        tokenization=(scored or {}).get("tokenization"),
        plots=plots,
        train=train_view,
        data=_flatten(data_report.get("counts", data_report)) if data_report else None,
        examples=example_rows,
        example_models=example_models,
        config=config_text,
        monitor=_monitor_view(run),
        checklist=checklist(run.root, lang),  # dashboard: the guide's checklist, at the top
        errors=_errors_view(run, (comparison or {}).get("models", []), examples or 10),
    )
    atomic_write_text(run.report, html)
    return run.report
