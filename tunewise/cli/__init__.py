"""The ``tunewise`` command: parse, call the library, render with rich. No logic a library test can't reach."""

from __future__ import annotations

import json
import os
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

import typer

# torchao / bitsandbytes print harmless "Failed to load ..." warnings on import (FIELD-NOTES)
warnings.filterwarnings("ignore", message=r".*Failed to load.*")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tunewise.catalog import _  # noqa: E402
from tunewise.cli.common import console, err_console, fail, guarded, quiet_libraries  # noqa: E402,F401

app = typer.Typer(
    name="tunewise",
    help="Fine-tune language models the way best practice says: decide, prepare, train, watch, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _print_version(value: bool) -> None:
    if value:
        from tunewise.environment import tunewise_version

        console.print(f"tunewise {tunewise_version()}", highlight=False)
        raise typer.Exit()


def _choose_language(value: Optional[str]) -> Optional[str]:
    """--lang, else $TUNEWISE_LANG, else the locale: the language of every message from here on (tunewise/catalog.py).
    An explicit choice is exported, so processes tunewise starts (torchrun workers, the dashboard's runs) share it."""
    from tunewise.catalog import resolve_language, set_language

    if value is None:  # the environment's choice, read when each message is shown; a bad $TUNEWISE_LANG stops here
        guarded(lambda: resolve_language(None))
        return value
    os.environ["TUNEWISE_LANG"] = guarded(lambda: set_language(value))
    return value


@app.callback()
def _main(
    lang: Optional[str] = typer.Option(None, "--lang", is_eager=True, callback=_choose_language,
                                       help="Language of messages, tables and the report: en or zh "
                                            "[$TUNEWISE_LANG, else the locale's, else en]"),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print tunewise's version and exit (`tunewise doctor` for everything else)"),
) -> None:
    """Fine-tune language models the way best practice says: decide, prepare, train, watch, evaluate, report."""


from tunewise.cli.data import app as data_app  # noqa: E402

app.add_typer(data_app, name="data", help="Prepare, inspect, convert and split datasets.")

# Each further command group lives in its own module with a ``register(app)`` function.
_COMMAND_MODULES = ("monitor", "ship", "decide", "doctor", "checklist", "ui", "chat")


def _register_command_modules() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tunewise.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tunewise.cli.{name}":
                raise
            continue
        module.register(app)


def _eval_progress(label: str) -> Any:
    """Eval progress on the console: a bar per pass in a terminal, a line every few seconds otherwise."""
    from tunewise.evaluate.progress import EvalProgress

    return EvalProgress(console, label)


def _print_comparison(comparison: dict[str, Any]) -> None:
    from rich.table import Table

    models, main = comparison["models"], comparison.get("main_metric")
    head, base = comparison.get("headline"), comparison.get("baseline", models[0])
    names = sorted(comparison["metrics"], key=lambda n: n != main)  # the headline metric first
    table = Table(title=_("{models} on {n} held-out examples").format(models=" vs ".join(models), n=comparison["n"])
                        + (_(" (* headline: {main}, {head} - {base})").format(main=main, head=head, base=base)
                           if head and len(names) > 1 else ""))
    table.add_column(_("metric"), no_wrap=True, min_width=max(len(n) for n in names) + 2)
    for m in models:
        table.add_column(m.replace("_", " "), justify="right")
    table.add_column(f"{head} - {base}" if head else _("delta"), justify="right")
    table.add_column(_("95% CI"), justify="right", min_width=8)
    table.add_column("p", justify="right")
    for name in names:
        entry = comparison["metrics"][name]
        values = [f"{entry['values'][m]:.3f}" if entry["values"].get(m) is not None else "" for m in models]
        delta = entry.get("delta")
        ci = entry.get("ci")
        better = (delta or 0) * (1 if entry.get("higher_is_better", True) else -1)
        style = ("green" if better > 0 else "red" if better < 0 else "") if entry.get("significant") else ""
        text = f"{delta:+.3f}" if delta is not None else ""
        table.add_row(
            f"{name} *" if name == main and len(names) > 1 else name, *values,
            f"[{style}]{text}[/]" if style and text else text,
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "",
            f"{entry['p_value']:.4f}" if entry.get("p_value") is not None else "",
        )
    console.print(table)


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML config, e.g. examples/quickstart.yaml"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. training.learning_rate=1e-4"),
) -> None:
    """Every stage: prepare -> baseline eval -> train -> eval -> compare -> report."""
    from tunewise.config import load_config
    from tunewise.runlock import writing_run
    from tunewise.train.preflight import check_paths

    cfg = guarded(lambda: load_config(config, overrides or []))  # before the libraries load: a bad config fails at once
    guarded(lambda: check_paths(cfg))  # data files, DeepSpeed config and package
    with ExitStack() as held:
        guarded(lambda: held.enter_context(writing_run(cfg.run_dir, "run")))
        quiet_libraries()
        from tunewise.pipeline import run_all

        console.print(_("[bold]tunewise run[/] {name}: {method} on [cyan]{model}[/] -> {run_dir}").format(
            name=cfg.name, method=cfg.method, model=cfg.model, run_dir=cfg.run_dir))
        eval_progress = _eval_progress("evaluating")

        def notify(message: str) -> None:
            eval_progress.close()
            console.print(message, highlight=False, markup=False)

        result = guarded(lambda: run_all(cfg, notify=notify, eval_progress=eval_progress), stage="run", config=cfg,
                         run_root=cfg.run_dir)
    if "comparison" in result:
        _print_comparison(result["comparison"])
    console.print(_("report: [bold]{report}[/]").format(report=result['report']))


@app.command()
def train(
    target: Path = typer.Argument(..., help="A run directory (or a config file)"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in RUN/checkpoints"),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes on this machine (torchrun; gloo on CPU, one GPU each on CUDA)"),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="Machines in the job; run the same command on each (docs/scale.md)"),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", min=0, help="This machine's rank, 0 to NNODES-1 (0 at --master-addr)"),
    master_addr: Optional[str] = typer.Option(None, "--master-addr", help="Host of node rank 0, where the nodes meet"),
    master_port: Optional[int] = typer.Option(None, "--master-port", help="Port at --master-addr [29500]"),
    rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", help="HOST:PORT of a c10d rendezvous instead of --master-addr (node ranks handed out as nodes join)"),
    rdzv_id: Optional[str] = typer.Option(None, "--rdzv-id", help="Job id of the c10d rendezvous [tunewise-RUNNAME]"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Train on RUN/data and save RUN/model (on several processes or machines: docs/scale.md)."""
    import time

    from tunewise.rundir import is_main_process
    from tunewise.runlock import writing_run
    from tunewise.runs import config_of_run
    from tunewise.train.distributed import Launch, end_process_group, run_of
    from tunewise.train.preflight import check_paths

    how = guarded(lambda: Launch(nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                                 master_port=master_port, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id))
    # the config is read before the libraries load: a bad one fails at once
    if how.writes_run_directory:
        cfg, run_dir = guarded(lambda: config_of_run(target, overrides or []))
    else:  # another node writes the run directory: only read the config
        cfg, run_dir = guarded(lambda: run_of(target, overrides or []))
    guarded(lambda: check_paths(cfg, data=False))  # the sharding engine: its config file and package
    with ExitStack() as held:
        if how.writes_run_directory and is_main_process():
            # a second writer is refused before anything slow; torchrun workers inherit the lock (tunewise/runlock.py),
            # ranks > 0 write nothing (on another node they share the run folder with rank 0)
            guarded(lambda: held.enter_context(writing_run(run_dir.root, "train")))
        quiet_libraries()
        if how.distributed:
            from tunewise.lm.device import precision_for
            from tunewise.train.distributed import DistributedTrainingFailed, launch
            from tunewise.train.sharding import engine_of

            on_cpu = precision_for(cfg).device == "cpu"
            started = time.time()
            try:
                launch(run_dir.root, how, resume=resume, overrides=overrides or [],
                       sharded_on_cpu=on_cpu and engine_of(cfg) == "fsdp")
            except DistributedTrainingFailed as exc:
                fail(str(exc), code=1)
            summary_file = run_dir.train_summary
            if not (summary_file.is_file() and summary_file.stat().st_mtime >= started):
                console.print(_("this node's {nproc} process(es) finished; rank 0 writes the run to {root}").format(
                    nproc=nproc, root=run_dir.root))
                return
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        else:
            from tunewise.decide.estimate import checkpointing_choice
            from tunewise.train.run import train_run

            summary = guarded(lambda: train_run(cfg, run_dir.root, resume=resume,
                                                checkpointing=checkpointing_choice(cfg, run_dir.root)),
                              stage="train", config=cfg,
                              run_root=run_dir.root)
            end_process_group()  # a torchrun worker that trained (a failed one has exited above)
    from tunewise.rundir import is_main_process

    if not is_main_process() or os.environ.get("TUNEWISE_LAUNCHED"):  # a torchrun worker: its launcher speaks
        return
    console.print(
        _("trained {steps} steps in {train_time_s:.1f} s; final train loss {final_train_loss:.4f}; "
          "model saved to {model}").format(
            steps=summary["steps"], train_time_s=summary["train_time_s"], final_train_loss=summary["final_train_loss"],
            model=run_dir.model)
    )


@app.command("eval")
def eval_command(
    target: Optional[Path] = typer.Argument(None, help="A run directory (or a config file); omit it to evaluate --model on --data"),
    model: str = typer.Option(
        "tuned", "--model",
        help="With a run: 'tuned' (RUN/model) or 'base' (the config's model). Alone: a model folder, adapter folder, run directory or hub id",
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="Test file (jsonl/json/csv/parquet; chat, alpaca, ... rows)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Where predictions/metrics/errors go (default ./eval; RUN/eval for a run)"),
    metrics: Optional[list[str]] = typer.Option(None, "--metrics", help="Metric names (repeat or comma-separate)"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    max_examples: Optional[int] = typer.Option(None, "--max-examples"),
    split: str = typer.Option("test", help="Which prepared split to evaluate on (run mode)"),
    name: Optional[str] = typer.Option(None, "--name", help="The model's name in OUT's file names, e.g. base (--model PATH mode; default: the folder's name)"),
) -> None:
    """Generate answers and score them: on a run's test split (RUN/eval/), or any model on any test file."""
    quiet_libraries()
    names = [n.strip() for item in metrics or [] for n in item.split(",") if n.strip()] or None
    if target is None or data is not None:
        if target is not None:
            fail(_("pass either a run directory (RUN --model base|tuned) or --model PATH --data FILE, not "
                   "both"))
        if model in ("tuned", "base"):
            fail(_("--model must name a model folder, adapter folder or run directory when no run is given"))
        _eval_standalone(model, data, out, names, max_new_tokens, max_examples, name)
        return
    from tunewise.evaluate.run import evaluate_run
    from tunewise.runs import config_of_run

    if model not in ("tuned", "base"):
        fail(_("with a run directory, --model must be 'tuned' or 'base', got {model!r} (to evaluate a "
               "folder: --model PATH --data FILE)").format(model=model))
    cfg, run_dir = guarded(lambda: config_of_run(target))
    for field, value in (("metrics", names), ("max_new_tokens", max_new_tokens), ("max_examples", max_examples)):
        if value:
            guarded(lambda: setattr(cfg.eval, field, value))
    from tunewise.runlock import writing_run

    with ExitStack() as held:  # RUN/eval is the run's: not while another process writes the run (a training)
        guarded(lambda: held.enter_context(writing_run(run_dir.root, "eval")))
        with _eval_progress(model) as progress:
            result = guarded(lambda: evaluate_run(cfg, run_dir.root, model, split=split, progress=progress))
    for name, value in result["metrics"].items():
        console.print(f"{name}: {value:.4f}")
    if result.get("few_shot"):
        few = result["few_shot"]
        console.print(_("few-shot ({shots} shots): ").format(
            shots=len(few['shots'])) + ", ".join(f"{k} {v:.4f}" for k, v in few["metrics"].items()))


def _eval_standalone(model: str, data: Optional[Path], out: Optional[Path], names: Optional[list[str]],
                     max_new_tokens: Optional[int], max_examples: Optional[int], name: Optional[str] = None) -> None:
    from tunewise.evaluate.standalone import evaluate_model

    result = guarded(lambda: evaluate_model(model, data, out, metrics=names, max_new_tokens=max_new_tokens,
                                            max_examples=max_examples, name=name))
    console.print(_("{model} on {n} examples -> {out_dir}").format(
        model=result['model'], n=result['n'], out_dir=result['out_dir']))
    for name, value in result["metrics"].items():
        console.print(f"{name}: {value:.4f}")


@app.command()
def compare(
    targets: list[Path] = typer.Argument(..., help="A run directory, or two or more prediction files / folders of them"),
    out: Optional[Path] = typer.Option(None, "--out", help="comparison.json path (default: beside the first predictions)"),
) -> None:
    """Compare evaluated models with confidence intervals (RUN/eval/comparison.json, or --out)."""
    from tunewise.pipeline import compare_stage, config_of_run

    if len(targets) == 1 and (targets[0] / "config.yaml").is_file() and out is None:
        cfg, run_dir = guarded(lambda: config_of_run(targets[0]))
        _print_comparison(guarded(lambda: compare_stage(cfg, run_dir)))
        return
    from tunewise.evaluate.compare import compare_files

    result = guarded(lambda: compare_files(targets, out))
    _print_comparison(result)
    console.print(_("comparison: {path}").format(path=result["written_to"]))


@app.command()
def report(
    target: Path = typer.Argument(..., help="A run directory"),
    lang: Optional[str] = typer.Option(None, "--lang", help="Language of the report: en or zh (as `tunewise --lang`)"),
) -> None:
    """Write RUN/report.html (plots included) from what the stages left."""
    from tunewise.pipeline import report_stage
    from tunewise.runs import config_of_run

    if lang is not None:  # as the root's --lang: the report reads the language the process speaks
        _choose_language(lang)

    cfg, run_dir = guarded(lambda: config_of_run(target))
    console.print(_("report: [bold]{report}[/]").format(report=guarded(lambda: report_stage(cfg, run_dir))))


_register_command_modules()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
