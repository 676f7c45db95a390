"""The stages in order, each reading and writing the run directory: prepare -> baseline eval -> train -> eval ->
compare -> report. ``tunewise run CONFIG`` calls :func:`run_all`; each stage is also callable alone."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from tunewise.catalog import _
from tunewise.config import Config
from tunewise.record import tracked
from tunewise.rundir import RunDir, atomic_write_json
from tunewise.runlock import writing_run
from tunewise.runs import config_of_run, init_run  # noqa: F401  (the stages' entry points, with the run's own)

log = logging.getLogger(__name__)

Notify = Callable[[str], None]


def prepare_stage(config: Config, run: RunDir) -> dict[str, Any]:
    from tunewise.data.prepare import prepare_data
    from tunewise.data.stats import plot_token_histograms
    from tunewise.lm.loading import load_tokenizer

    # monitor: run.json says "validating" while the data is prepared, "queued" (ready to train) after
    with writing_run(run.root, "prepare"), tracked(run.root, "prepare", config, status="validating", done_status="queued"):
        check_for_prepare(config)
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        report = prepare_data(config.data, tokenizer, run.data, loss_on=config.training.loss_on, objective=config.objective)
        plot_token_histograms(report, str(run.plots / "data_token_lengths.png"))
        return report.to_dict()


def check_for_prepare(config: Config) -> None:
    """Before preparing: the data paths exist and the token limit fits the model (tunewise/train/preflight.py)."""
    from tunewise.train.preflight import check_context, check_paths

    check_paths(config)
    check_context(config)


def estimate_stage(config: Config, run: RunDir) -> dict[str, Any] | None:
    """Time and peak memory of training ``config.method`` on the prepared data, before training (RUN/estimate.json;
    calibrated on a few real steps when ``decide.calibrate``). None, with a warning, when it cannot be estimated:
    an estimate never stops a run."""
    from tunewise.decide.estimate import estimate_run

    try:
        report = estimate_run(config, run.root, [config.method], calibrate=config.decide.calibrate,
                              calibration_steps=config.decide.calibration_steps)  # fmt: skip
    except Exception as err:  # noqa: BLE001 - the estimate is advice; training goes on without it
        log.warning("no estimate before training: %s", err)
        return None
    method = report["methods"][config.method]
    memory = method["memory"]
    return {"time_s": method["time"]["total_s"], "peak_mb": memory["peak_mb"], "time_source": method["time"]["source"],
            "available_mb": report["hardware"]["available_mb"],
            "peak_mb_with_checkpointing": None if memory.get("gradient_checkpointing") else memory.get("peak_mb_with_checkpointing"),
            "checkpointing_automatic": config.training.gradient_checkpointing is None,
            "memory": memory}  # the parts, which the automatic checkpointing choice reads (no second estimate)


def estimate_line(estimate: dict[str, Any]) -> str:
    """The estimate printed before training; a hint when the peak would not fit in the memory available."""
    line = _("estimate: training ~{minutes:.1f} min, peak memory ~{gb:.1f} GB ({source})").format(
        minutes=estimate["time_s"] / 60, gb=estimate["peak_mb"] / 1024, source=estimate["time_source"])
    available, checkpointed = estimate.get("available_mb"), estimate.get("peak_mb_with_checkpointing")
    if available and estimate["peak_mb"] > 0.9 * available:
        line += _("; more than the {gb:.1f} GB available").format(gb=available / 1024)
        if checkpointed and estimate.get("checkpointing_automatic"):
            line += _(": training turns on gradient checkpointing by itself (~{gb:.1f} GB)").format(gb=checkpointed / 1024)
        elif checkpointed:
            line += _(": training.gradient_checkpointing=true needs ~{gb:.1f} GB").format(gb=checkpointed / 1024)
    return line


def actual_line(estimate: dict[str, Any] | None, train: dict[str, Any]) -> str:
    """The closing note: what training took against what was estimated before it."""
    peak = train.get("cuda_peak_allocated_mb") or train.get("peak_rss_mb") or 0
    took = _("training took {minutes:.1f} min, peak memory {gb:.1f} GB").format(
        minutes=train.get("train_time_s", 0) / 60, gb=peak / 1024)
    if not estimate:
        return took
    return took + _(" (estimated {minutes:.1f} min, {gb:.1f} GB)").format(minutes=estimate["time_s"] / 60,
                                                                        gb=estimate["peak_mb"] / 1024)


def compare_stage(config: Config, run: RunDir) -> dict[str, Any]:
    from tunewise.evaluate.compare import compare_run

    return compare_run(run.root, seed=config.training.seed)


def report_stage(config: Config, run: RunDir) -> Path:
    from tunewise.monitor.plots import write_plots
    from tunewise.report.html import build_report

    if run.metrics.is_file():
        write_plots(run.metrics, run.plots)
    from tunewise.model_card import write_model_cards  # branch ship: the cards get the results table

    write_model_cards(config, run.root)
    return build_report(run.root, examples=config.eval.examples_in_report)


def run_all(config: Config, *, notify: Notify = log.info, eval_progress: Any = None) -> dict[str, Any]:
    """Every stage in order. Returns timings and the headline numbers; also written to RUN/pipeline.json."""
    with writing_run(config.run_dir, "run"):
        return _run_all(config, notify, eval_progress)


def _run_all(config: Config, notify: Notify, eval_progress: Any) -> dict[str, Any]:
    from tunewise.train.preflight import check_config

    check_config(config)  # paths, packages, the model's limits: before anything is written or loaded
    run = init_run(config)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"run_dir": str(run.root)}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        notify(_("[{stage}] started").format(stage=name))
        started = time.time()
        if name in ("prepare", "train"):  # these record their own stage in run.json
            value = fn()
        else:
            with tracked(run.root, name):  # monitor: run.json per stage
                value = fn()
        timings[name] = round(time.time() - started, 2)
        notify(_("[{stage}] done in {seconds:.1f} s").format(stage=name, seconds=timings[name]))
        return value

    with tracked(run.root, "pipeline", config):  # monitor: the whole pipeline is the job in run.json
        _run_stages(config, run, result, stage, eval_progress, notify)
    # the report was rendered while the job was still "running": render the page again with its final status
    from tunewise.report.html import build_report

    build_report(run.root, examples=config.eval.examples_in_report)
    result["timings_s"] = timings
    atomic_write_json(run.pipeline, {k: v for k, v in result.items() if k in ("timings_s", "report", "estimate")})
    return result


def _run_stages(config: Config, run: RunDir, result: dict[str, Any], stage: Callable[[str, Callable[[], Any]], Any],
                eval_progress: Any, notify: Notify) -> None:
    from tunewise.data.stats import describe_loading
    from tunewise.evaluate.run import evaluate_run
    from tunewise.train.run import train_run

    result["data"] = stage("prepare", lambda: prepare_stage(config, run))
    from tunewise.train.preflight import check_data

    check_data(config, run)  # before the baseline evaluation and the training
    for line in describe_loading(result["data"]):
        notify(line)
    if config.eval.baseline:
        result["base"] = stage("eval base", lambda: evaluate_run(config, run.root, "base", progress=eval_progress))
    result["estimate"] = stage("estimate", lambda: estimate_stage(config, run))
    if result["estimate"]:
        notify(estimate_line(result["estimate"]))
    from tunewise.decide.estimate import checkpointing_choice

    # training.gradient_checkpointing null: on when the estimate just printed says the batch would not fit
    estimate = result["estimate"] or {}
    result["train"] = stage("train", lambda: train_run(config, run.root, checkpointing=checkpointing_choice(
        config, run.root, estimate.get("memory"), estimate.get("available_mb"))))
    notify(actual_line(result["estimate"], result["train"]))
    result["tuned"] = stage("eval tuned", lambda: evaluate_run(config, run.root, "tuned", progress=eval_progress))
    if config.eval.baseline:  # a comparison needs the baseline's predictions
        result["comparison"] = stage("compare", lambda: compare_stage(config, run))
    result["report"] = str(stage("report", lambda: report_stage(config, run)))
