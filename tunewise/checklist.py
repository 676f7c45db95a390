"""The best-practice checklist of a run: the guide's 24 items in its order, each done / not done / not applicable from
the evidence the stages left in the run directory, with a link to that evidence and, when not done, the tunewise
command that does it. Items the evidence contradicts carry a flag (validation loss rising, test overlapping train...).

The items are a table (:data:`ITEMS`): an id, its phase and a check, a function from :class:`Evidence` to a
:class:`Finding`. Words live in tunewise/catalog.py (English and the guide's Chinese); this module holds no prose
beyond message ids, so :func:`render` is the only place a language is applied.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from tunewise.catalog import text
from tunewise.config import learning_rate_used
from tunewise.rundir import RunDir

DONE, TODO, NA = "done", "todo", "na"
PHASES = ("prepare", "data", "training", "monitoring", "evaluation", "deployment")


@dataclass(frozen=True)
class Finding:
    """What the evidence says about one item. ``note`` and ``flag`` are (message id, fields) for tunewise/catalog.py;
    ``evidence`` is the path of the file it rests on, relative to the run directory."""

    status: str
    note: tuple[str, dict[str, Any]]
    evidence: str | None = None
    command: str | None = None
    flag: tuple[str, dict[str, Any]] | None = None


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value else f"{value:.{digits}f}"
    return "?" if value is None else str(value)


def _num(value: Any) -> float | None:
    """A metrics.jsonl value as a float (non-finite numbers are written as "nan"/"inf" strings)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value) if isinstance(value, (int, float, str)) else None
    except ValueError:
        return None


class Evidence:
    """Lazy, read-only view of one run directory through :class:`RunDir` (every file is read at most once)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.root = str(run.root)

    def _json(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def rel(self, path: Path) -> str:
        return path.relative_to(self.run.root).as_posix()

    def cmd(self, *words: str) -> str:
        return "tunewise " + " ".join(shlex.quote(w) for w in words)

    @property
    def config_path(self) -> str:
        return str(self.run.config)

    @cached_property
    def config(self) -> dict[str, Any]:
        import yaml

        # libyaml's safe loader when PyYAML has it: the pure-Python one took ~80% of a checklist's time
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            data = yaml.load(self.run.config.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    def setting(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    advice = cached_property(lambda self: self._json(self.run.advice))
    estimate = cached_property(lambda self: self._json(self.run.estimate))
    data_report = cached_property(lambda self: self._json(self.run.data_report))
    comparison = cached_property(lambda self: self._json(self.run.comparison))
    summary = cached_property(lambda self: self._json(self.run.summary))
    train_summary = cached_property(lambda self: self._json(self.run.train_summary))
    bench = cached_property(lambda self: self._json(self.run.bench_report))
    abtest = cached_property(lambda self: self._json(self.run.abtest))

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """metrics.jsonl, read by the monitor's own reader (a half-written last line waits)."""
        from tunewise.monitor.follow import MetricsTail

        return MetricsTail(self.run.metrics).read()

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    @cached_property
    def counts(self) -> dict[str, Any]:
        return (self.data_report or {}).get("counts") or {}

    @property
    def train_examples(self) -> int | None:
        n = self.counts.get("train")
        return n if isinstance(n, int) else None

    @property
    def task(self) -> str:
        """The task type: as given in the config, else as the data report inferred it."""
        from tunewise.config import TASKS

        given = self.setting("decide.task")
        inferred = ((self.data_report or {}).get("task") or {}).get("type")
        return given or (inferred if inferred in TASKS else "generation")

    @property
    def minimum_examples(self) -> int:
        from tunewise.decide.advise import MIN_EXAMPLES

        return MIN_EXAMPLES[self.task]

    def lines(self, path: Path) -> int:
        try:
            with path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        except OSError:
            return 0


# --------------------------------------------------------------------------------------------------------------------
# the checks, one per item, in the guide's order


def task_goal(e: Evidence) -> Finding:
    if e.setting("decide.task"):
        return Finding(DONE, ("note.task_given", {"task": e.setting("decide.task")}), "config.yaml")
    inputs = (e.advice or {}).get("inputs") or {}
    if inputs.get("task"):
        return Finding(DONE, ("note.task_advised", {"task": inputs["task"], "source": inputs.get("task_source", "")}),
                       e.rel(e.run.advice))
    return Finding(TODO, ("note.task_missing", {}), "config.yaml", e.cmd("advise", e.config_path))


def need_finetuning(e: Evidence) -> Finding:
    if not e.advice:
        return Finding(TODO, ("note.no_advice", {}), None, e.cmd("advise", e.config_path))
    decision = e.advice.get("decision")
    flag = None
    if decision == "prompting" and e.run.model.is_dir():
        flag = ("flag.prompting_enough", {})
    return Finding(DONE, ("note.advised", {"decision": decision, "summary": e.advice.get("summary", "")}),
                   e.rel(e.run.advice), flag=flag)


def enough_data(e: Evidence) -> Finding:
    n = e.train_examples
    if n is None:
        return Finding(TODO, ("note.no_data", {}), None, e.cmd("data", "prepare", e.config_path))
    fields = {"n": n, "task": e.task, "minimum": e.minimum_examples}
    if n >= e.minimum_examples:
        return Finding(DONE, ("note.enough", fields), e.rel(e.run.data_report))
    return Finding(TODO, ("note.enough", fields), e.rel(e.run.data_report),
                   e.cmd("data", "prepare", e.config_path, "data.augment_paraphrase=1"),
                   flag=("flag.too_few", fields) if e.run.model.is_dir() else None)


def right_method(e: Evidence) -> Finding:
    method = e.setting("method")
    if not e.advice:
        return Finding(TODO, ("note.method_unadvised", {"method": method}), "config.yaml", e.cmd("advise", e.config_path))
    decision = e.advice.get("decision")
    same = decision == method or (decision == "lora" and method == "dora")  # DoRA is LoRA with a magnitude vector
    flag = None if same or decision == "prompting" else ("flag.method_differs", {"decision": decision, "method": method})
    return Finding(DONE, ("note.method_matches", {"method": method}), e.rel(e.run.advice), flag=flag)


def quality_data(e: Evidence) -> Finding:
    if not e.data_report:
        return Finding(TODO, ("note.no_data", {}), None, e.cmd("data", "prepare", e.config_path))
    read, kept = e.counts.get("read") or 0, e.counts.get("kept") or 0
    rejected = e.counts.get("rejected_total") or 0
    share = rejected / read if read else 0.0
    flag = ("flag.many_rejected", {"share": f"{share:.0%}"}) if share > 0.2 else None
    return Finding(DONE, ("note.quality", {"kept": kept, "read": read, "share": f"{share:.1%}"}),
                   e.rel(e.run.data_report), flag=flag)


def cleaned(e: Evidence) -> Finding:
    if not e.data_report:
        return Finding(TODO, ("note.no_data", {}), None, e.cmd("data", "prepare", e.config_path))
    config = e.data_report.get("config") or {}
    if config.get("dedup") is False:
        return Finding(TODO, ("note.not_cleaned", {}), e.rel(e.run.data_report),
                       e.cmd("data", "prepare", e.config_path, "data.dedup=true"))
    reasons = e.counts.get("rejected") or {}
    dedup = sum(v for k, v in reasons.items() if "duplicate" in k and "near" not in k)
    near = sum(v for k, v in reasons.items() if "near" in k)
    return Finding(DONE, ("note.cleaned", {
        "rejected": e.counts.get("rejected_total") or 0,
        "reasons": ", ".join(f"{k} {v}" for k, v in reasons.items()) or "-",
        "dedup": dedup, "near": near if config.get("near_dedup_threshold") else "off",
    }), e.rel(e.run.rejects) if e.run.rejects.is_file() else e.rel(e.run.data_report))


def split(e: Evidence) -> Finding:
    if not e.data_report:
        return Finding(TODO, ("note.no_data", {}), None, e.cmd("data", "prepare", e.config_path))
    overlap = e.data_report.get("overlap") or {}
    removed = sum((v or {}).get("removed", 0) for v in overlap.values())
    train_test = overlap.get("train_test") or {}
    left = (train_test.get("exact", 0) + train_test.get("near", 0)) - train_test.get("removed", 0)
    flag = ("flag.test_overlaps_train", {"n": left}) if left > 0 else None
    counts = {s: e.counts.get(s, 0) for s in ("train", "val", "test")}
    has_test = counts["test"] or e.run.split("test").is_file() and e.lines(e.run.split("test"))
    if not has_test:
        return Finding(TODO, ("note.no_test", {}), e.rel(e.run.data_report), e.cmd("data", "prepare", e.config_path),
                       flag=flag)
    return Finding(DONE, ("note.split", {**counts, "removed": removed}), e.rel(e.run.data_report), flag=flag)


def augmentation(e: Evidence) -> Finding:
    n = e.train_examples
    if n is None:
        return Finding(TODO, ("note.no_data", {}), None, e.cmd("data", "prepare", e.config_path))
    augmented = (e.counts.get("augmented") or {}).get("total") or 0
    fields = {"n": n, "task": e.task, "minimum": e.minimum_examples}
    if augmented:
        return Finding(DONE, ("note.augmented", {"n": augmented}), e.rel(e.run.data_report))
    if n >= e.minimum_examples:
        return Finding(NA, ("note.augment_not_needed", fields), e.rel(e.run.data_report))
    return Finding(TODO, ("note.augment_needed", fields), e.rel(e.run.data_report),
                   e.cmd("data", "prepare", e.config_path, "data.augment_paraphrase=1"))


def base_model(e: Evidence) -> Finding:
    estimate = e.estimate
    if not estimate:
        return Finding(TODO, ("note.no_estimate", {}), None, e.cmd("estimate", e.config_path))
    method = e.setting("method")
    entry = (estimate.get("methods") or {}).get(method) or next(iter((estimate.get("methods") or {}).values()), {})
    peak = ((entry or {}).get("memory") or {}).get("peak_mb")
    available = (estimate.get("hardware") or {}).get("available_mb")
    flag = ("flag.estimate_over", {}) if entry.get("fits_in_memory") is False else None
    return Finding(DONE, ("note.estimate", {"model": estimate.get("model") or e.setting("model"),
                                            "peak_gb": _fmt((peak or 0) / 1024, 2), "available_gb": _fmt((available or 0) / 1024, 1)}),
                   e.rel(e.run.estimate), flag=flag)


def _train_losses(e: Evidence) -> list[float]:
    return [v for v in (_num(r.get("loss")) for r in e.kind("train")) if v is not None]


def hyperparameters(e: Evidence) -> Finding:
    losses = _train_losses(e)
    lr = learning_rate_used(e.setting("training.learning_rate"), e.train_summary)
    batch = e.setting("training.per_device_train_batch_size")
    if len(losses) < 2:
        return Finding(TODO, ("note.not_trained", {}), "config.yaml", e.cmd("train", e.root))
    first, last = losses[0], losses[-1]
    warnings = [r for r in e.kind("warning") + e.kind("error") if r.get("event") in ("loss_spike", "nan", "grad_norm")]
    flag = None
    if not last < first:
        flag = ("flag.loss_not_falling", {"first": _fmt(first), "last": _fmt(last)})
    elif warnings:
        flag = ("flag.guard_warnings", {"n": len(warnings), "events": ", ".join(sorted({str(w.get("event")) for w in warnings}))})
    return Finding(DONE, ("note.hyper", {"lr": lr, "batch": batch, "first": _fmt(first), "last": _fmt(last)}),
                   e.rel(e.run.metrics), flag=flag)


def lr_schedule(e: Evidence) -> Finding:
    scheduler = e.setting("training.lr_scheduler", "linear")
    warmup = e.setting("training.warmup_steps") or e.setting("training.warmup_ratio") or 0
    rates = [v for v in (_num(r.get("learning_rate")) for r in e.kind("train")) if v is not None]
    if scheduler == "constant" and not warmup:
        return Finding(TODO, ("note.schedule_constant", {}), "config.yaml",
                       e.cmd("run", e.config_path, "training.lr_scheduler=cosine", "training.warmup_ratio=0.05"))
    fields = {"scheduler": scheduler, "warmup": warmup, "lo": _fmt(min(rates)) if rates else "?",
              "hi": _fmt(max(rates)) if rates else "?"}
    return Finding(DONE, ("note.schedule", fields), e.rel(e.run.metrics) if rates else "config.yaml")


def _has_val(e: Evidence) -> bool:
    if e.counts:
        return bool(e.counts.get("val"))
    return e.run.split("val").is_file() and e.lines(e.run.split("val")) > 0


def _rising(losses: list[float]) -> int:
    """How many of the last evaluations each raised the loss over the one before."""
    n = 0
    for before, after in zip(reversed(losses[:-1]), reversed(losses[1:])):
        if after > before:
            n += 1
        else:
            break
    return n


def _eval_losses(e: Evidence) -> list[tuple[int, float]]:
    return [(int(r.get("step", 0)), v) for r in e.kind("eval") if (v := _num(r.get("eval_loss"))) is not None]


def _rising_flag(e: Evidence) -> tuple[str, dict[str, Any]] | None:
    patience = int(e.setting("monitor.overfit_patience", 3) or 3)
    n = _rising([v for _, v in _eval_losses(e)])
    return ("flag.val_rising", {"n": n}) if n >= patience else None


def early_stopping(e: Evidence) -> Finding:
    patience = e.setting("training.early_stopping_patience")
    on_overfit = e.setting("monitor.early_stopping")
    if not _has_val(e) and e.data_report:
        return Finding(TODO, ("note.no_val_for_stopping", {}), e.rel(e.run.data_report), e.cmd("data", "prepare", e.config_path))
    if patience or on_overfit:
        how = (f"training.early_stopping_patience: {patience} ({e.setting('training.metric_for_best_model', 'eval_loss')})"
               if patience else f"monitor.early_stopping: overfitting over {e.setting('monitor.overfit_patience', 3)} evaluations")
        stopped = (e.summary or {}).get("stopped")
        return Finding(DONE, ("note.early_stopping", {"how": how}), e.rel(e.run.summary) if stopped else "config.yaml")
    return Finding(TODO, ("note.no_early_stopping", {}), "config.yaml",
                   e.cmd("run", e.config_path, "training.early_stopping_patience=3"), flag=_rising_flag(e))


def train_loss(e: Evidence) -> Finding:
    if not e.run.metrics.is_file():
        return Finding(TODO, ("note.no_metrics", {}), None, e.cmd("train", e.root))
    losses = _train_losses(e)
    if not losses:
        return Finding(TODO, ("note.not_trained", {}), e.rel(e.run.metrics), e.cmd("train", e.root))
    return Finding(DONE, ("note.train_loss", {"n": len(losses), "first": _fmt(losses[0]), "last": _fmt(losses[-1])}),
                   e.rel(e.run.metrics))


def val_loss(e: Evidence) -> Finding:
    evals = _eval_losses(e)
    if not evals:
        if e.data_report and not _has_val(e):
            return Finding(TODO, ("note.no_val", {}), e.rel(e.run.data_report), e.cmd("data", "prepare", e.config_path))
        return Finding(TODO, ("note.no_evals", {}), e.rel(e.run.metrics) if e.run.metrics.is_file() else None,
                       e.cmd("train", e.root))
    step, best = min(evals, key=lambda x: x[1])
    return Finding(DONE, ("note.val_loss", {"n": len(evals), "best": _fmt(best), "step": step}), e.rel(e.run.metrics),
                   flag=_rising_flag(e))


def learning_rate(e: Evidence) -> Finding:
    rates = [r for r in e.kind("train") if _num(r.get("learning_rate")) is not None]
    if not rates:
        return Finding(TODO, ("note.not_trained", {}), None, e.cmd("train", e.root))
    return Finding(DONE, ("note.lr_logged", {"n": len(rates)}), e.rel(e.run.metrics))


def memory(e: Evidence) -> Finding:
    for name in ("cuda_peak_allocated_mb", "peak_rss_mb"):
        values = [v for v in (_num(r.get(name)) for r in e.records) if v is not None]
        if values:
            return Finding(DONE, ("note.memory", {"mb": f"{max(values):,.0f}", "field": name}), e.rel(e.run.metrics))
    return Finding(TODO, ("note.not_trained", {}), None, e.cmd("train", e.root))


def test_eval(e: Evidence) -> Finding:
    path = e.run.eval_file("metrics", "tuned")
    if not path.is_file():
        return Finding(TODO, ("note.no_test_eval", {}), None, e.cmd("eval", e.root))
    models = sorted(p.stem.removeprefix("metrics_") for p in e.run.eval.glob("metrics_*.json"))
    n = (e._json(path) or {}).get("n") or (e.comparison or {}).get("n") or "?"
    return Finding(DONE, ("note.test_eval", {"models": ", ".join(models), "n": n}), e.rel(path))


def baseline(e: Evidence) -> Finding:
    c = e.comparison
    if not c or "base" not in (c.get("models") or []):
        todo = (e.cmd("compare", e.root) if e.run.eval_file("predictions", "base").is_file()
                else e.cmd("eval", e.root, "--model", "base") + " && " + e.cmd("compare", e.root))
        return Finding(TODO, ("note.no_comparison", {}), None, todo)
    metric = c.get("main_metric")
    entry = (c.get("metrics") or {}).get(metric) or {}
    delta = ((entry.get("deltas") or {}).get("tuned") or {}) if "tuned" in (entry.get("deltas") or {}) else entry
    ci = delta.get("ci") or [None, None]
    values = entry.get("values") or {}
    flag = None
    if delta.get("delta") is not None:
        better = delta["delta"] * (1 if entry.get("higher_is_better", True) else -1)
        if delta.get("significant") and better < 0:
            flag = ("flag.worse", {"metric": metric})
        elif not delta.get("significant"):
            flag = ("flag.not_better", {"metric": metric})
    return Finding(DONE, ("note.baseline", {"metric": metric, "base": _fmt(values.get("base")), "tuned": _fmt(values.get("tuned")),
                                            "delta": _fmt(delta.get("delta")), "lo": _fmt(ci[0]), "hi": _fmt(ci[1])}),
                   e.rel(e.run.comparison), flag=flag)


def error_analysis(e: Evidence) -> Finding:
    path = e.run.eval_file("errors", "tuned")
    errors = e._json(path)
    if not errors:
        return Finding(TODO, ("note.no_errors", {}), None, e.cmd("eval", e.root))
    return Finding(DONE, ("note.errors", {"errors": errors.get("errors"), "n": errors.get("n"),
                                          "metric": errors.get("main_metric")}), e.rel(path))


def _bench_variant(e: Evidence) -> tuple[str, dict[str, Any]] | None:
    variants = (e.bench or {}).get("variants") or {}
    for name in ("tuned", "merged", *variants):
        if name in variants:
            return name, variants[name]
    return None


def deployment_cost(e: Evidence) -> Finding:
    found = _bench_variant(e)
    if not found:
        return Finding(TODO, ("note.no_bench", {}), None, e.cmd("bench", e.root))
    name, v = found
    best = max(v.get("throughput") or [{}], key=lambda t: t.get("tokens_per_s") or 0)
    return Finding(DONE, ("note.cost", {"variant": name, "weights": _fmt(v.get("weights_mb"), 1),
                                        "peak": _fmt(v.get("peak_memory_mb"), 0), "tps": _fmt(best.get("tokens_per_s"), 1),
                                        "batch": best.get("batch_size", "?")}), e.rel(e.run.bench_report))


def compression(e: Evidence) -> Finding:
    merge, quantize = e._json(e.run.export / "merge.json"), e._json(e.run.export / "quantize.json")
    done = (["merged"] if merge else []) + sorted((quantize or {}).get("schemes") or {})
    if not done:
        adapter = (e.run.model / "adapter_config.json").is_file()
        return Finding(TODO, ("note.not_compressed", {}), None,
                       e.cmd("export", e.root, "--merge") if adapter else e.cmd("export", e.root, "--quantize", "int8"))
    return Finding(DONE, ("note.compressed", {"what": ", ".join(done)}),
                   e.rel(e.run.export / ("quantize.json" if quantize else "merge.json")))


def inference_perf(e: Evidence) -> Finding:
    variants = (e.bench or {}).get("variants") or {}
    if not variants:
        return Finding(TODO, ("note.no_bench", {}), None, e.cmd("bench", e.root))
    name, v = _bench_variant(e) or next(iter(variants.items()))
    return Finding(DONE, ("note.perf", {"variants": ", ".join(variants), "ttft": _fmt((v.get("ttft_ms") or {}).get("p50"), 1),
                                        "per_token": _fmt((v.get("per_token_ms") or {}).get("p50"), 2)}), e.rel(e.run.bench_report))


def ab_test(e: Evidence) -> Finding:
    ab = e.abtest
    if not ab:
        logs = e.run.serve_logs
        todo = e.cmd("abtest", str(logs)) if logs.is_dir() and any(logs.glob("*.jsonl")) else e.cmd("serve", e.root)
        return Finding(TODO, ("note.no_ab", {}), None, todo)
    metric = ab.get("metric")
    worse = [name for name, d in (ab.get("versus_control") or {}).items()
             if (d.get(metric) or {}).get("significant") and (d[metric].get("delta") or 0) < 0]
    variants = ", ".join(f"{n} {v.get('requests')}" for n, v in (ab.get("variants") or {}).items())
    return Finding(DONE, ("note.ab", {"variants": variants, "control": ab.get("control")}), e.rel(e.run.abtest),
                   flag=("flag.ab_worse", {"variant": worse[0], "metric": metric}) if worse else None)


def live_monitoring(e: Evidence) -> Finding:
    n = e.lines(e.run.feedback_log)
    if not n:
        return Finding(TODO, ("note.no_feedback", {}), None, e.cmd("serve", e.root))
    return Finding(DONE, ("note.feedback", {"n": n, "errors": e.lines(e.run.serve_errors_log)}), e.rel(e.run.feedback_log))


@dataclass(frozen=True)
class Item:
    id: str
    phase: str
    check: Callable[[Evidence], Finding] = field(repr=False)


ITEMS: tuple[Item, ...] = (
    Item("task_goal", "prepare", task_goal),
    Item("need_finetuning", "prepare", need_finetuning),
    Item("enough_data", "prepare", enough_data),
    Item("right_method", "prepare", right_method),
    Item("quality_data", "data", quality_data),
    Item("cleaned", "data", cleaned),
    Item("split", "data", split),
    Item("augmentation", "data", augmentation),
    Item("base_model", "training", base_model),
    Item("hyperparameters", "training", hyperparameters),
    Item("lr_schedule", "training", lr_schedule),
    Item("early_stopping", "training", early_stopping),
    Item("train_loss", "monitoring", train_loss),
    Item("val_loss", "monitoring", val_loss),
    Item("learning_rate", "monitoring", learning_rate),
    Item("memory", "monitoring", memory),
    Item("test_eval", "evaluation", test_eval),
    Item("baseline", "evaluation", baseline),
    Item("error_analysis", "evaluation", error_analysis),
    Item("deployment_cost", "evaluation", deployment_cost),
    Item("compression", "deployment", compression),
    Item("inference_perf", "deployment", inference_perf),
    Item("ab_test", "deployment", ab_test),
    Item("live_monitoring", "deployment", live_monitoring),
)
"""The guide's checklist, in its order: four items in each of its six phases."""


def evaluate(run_dir: str | Path) -> list[tuple[Item, Finding]]:
    """Every item of the checklist with what the run directory's evidence says about it."""
    run = RunDir.of(run_dir)
    if not run.root.is_dir():
        raise FileNotFoundError(f"{run.root} is not a run directory; pass RUN (a folder under your output_dir)")
    evidence = Evidence(run)
    return [(item, item.check(evidence)) for item in ITEMS]


def render(findings: list[tuple[Item, Finding]], lang: str = "en") -> dict[str, Any]:
    """The checklist as plain data in ``lang``: progress and, per item, its phase, title, status, note, flag,
    evidence (a path relative to the run directory) and command (when not done)."""
    items = []
    for item, f in findings:
        items.append({
            "id": item.id,
            "phase": item.phase,
            "phase_title": text(f"phase.{item.phase}", lang),
            "title": text(f"item.{item.id}", lang),
            "status": f.status,
            "status_text": text(f"status.{f.status}", lang),
            "note": text(f.note[0], lang, **f.note[1]),
            "flag": text(f.flag[0], lang, **f.flag[1]) if f.flag else None,
            "evidence": f.evidence,
            "command": f.command if f.status == TODO else None,
        })
    done = sum(i["status"] == DONE for i in items)
    total = sum(i["status"] != NA for i in items)
    return {
        "lang": lang,
        "title": text("checklist.title", lang),
        "done": done,
        "total": total,
        "flags": sum(i["flag"] is not None for i in items),
        "progress_text": text("checklist.progress", lang, done=done, total=total),
        "items": items,
    }


def checklist(run_dir: str | Path, lang: str = "en") -> dict[str, Any]:
    """:func:`evaluate` then :func:`render` in ``lang``."""
    return render(evaluate(run_dir), lang)
