"""``tunewise monitor RUN`` (follow a run live, or show a finished one) and ``tunewise runs [DIR]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from tunewise.catalog import N_, _, translate
from tunewise.rundir import RunDir

RUN_COLUMNS = (N_("name"), N_("status"), N_("method"), N_("model"), N_("steps"), N_("best eval loss"), N_("main metric"),
               N_("created"))


def _summary_table(summary: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    from tunewise.monitor.summary import summary_lines

    table = Table(title=title, show_header=False)
    for label, value in summary_lines(summary):
        table.add_row(label, value)
    return table


def _header(record: dict[str, Any], run: Path) -> str:
    status = record.get("status", "unknown")
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "interrupted": "yellow"}.get(status, "cyan")
    parts = [f"[bold]{record.get('name', run.name)}[/]", f"[{colour}]{translate(status)}[/]"]
    if record.get("stage"):
        parts.append(_("stage {stage}").format(stage=record["stage"]))
    if record.get("method"):
        parts.append(_("{method} on {model}").format(method=record["method"], model=record.get("model")))
    for key in ("started_at", "finished_at"):
        if record.get(key):
            parts.append(f"{key.split('_')[0]} {record[key]}")
    return "  ".join(parts)


def monitor_command(
    run: Path = typer.Argument(..., help="A run directory (runs/NAME)"),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Keep following a run that is in progress"),
    interval: float = typer.Option(1.0, help="Seconds between reads while following"),
) -> None:
    """Follow a run in progress from another terminal (reads RUN/metrics.jsonl), or show a finished one."""
    from rich.console import Console

    from tunewise.cli.common import fail
    from tunewise.monitor.follow import follow as follow_run
    from tunewise.monitor.follow import run_is_active
    from tunewise.monitor.live import ViewState
    from tunewise.monitor.summary import summarize
    from tunewise.record import read_record

    console = Console()
    if not RunDir.of(run).metrics.is_file() and not RunDir.of(run).record.is_file():
        fail(_("{run} has no metrics.jsonl or run.json: pass a run directory (e.g. runs/NAME) that has started "
               "training").format(run=run))
    from tunewise.record import mark_interrupted

    console.print(_header(mark_interrupted(run), run), highlight=False)  # a killed writer: "interrupted"
    view, records = ViewState(), []
    active = (lambda: run_is_active(run)) if follow else (lambda: False)
    try:
        if console.is_terminal and follow and run_is_active(run):
            from rich.live import Live

            with Live(console=console, refresh_per_second=4, transient=True) as live:
                for batch in follow_run(run, interval=interval, active=active):
                    for record in batch:
                        view.update(record)
                    records.extend(batch)
                    live.update(view.line())
        else:
            for batch in follow_run(run, interval=interval, active=active):
                for record in batch:
                    view.update(record)
                    if record.get("kind") in ("train", "eval"):
                        console.print(view.line() if record["kind"] == "train" else view.eval_line(), highlight=False)
                    elif record.get("kind") in ("warning", "error"):
                        label = _("warning:") if record["kind"] == "warning" else _("error:")
                        console.print(f"[yellow]{label}[/] {record.get('message')}", highlight=False)
                records.extend(batch)
    except KeyboardInterrupt:
        console.print(_("stopped following (the run itself goes on)"))
        raise typer.Exit(0)
    record = read_record(run)
    console.print(_summary_table(summarize(records), f"{run.name}: {translate(record.get('status', 'unknown'))}"))
    if record.get("error"):
        label = _("error:")
        console.print(f"[red]{label}[/] {record['error']}", highlight=False)


def runs_command(
    directory: Path = typer.Argument(Path("runs"), help="Folder holding run directories (the config's output_dir)"),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON"),
) -> None:
    """List runs with status, method, model, best eval loss and the main eval metric."""
    from rich.console import Console
    from rich.table import Table

    from tunewise.cli.common import guarded
    from tunewise.monitor.runs import list_runs

    rows = guarded(lambda: list_runs(directory))
    console = Console()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print(_("no runs in {directory}").format(directory=directory))
        return
    table = Table(title=_("runs in {directory}").format(directory=directory))
    for column in RUN_COLUMNS:
        table.add_column(translate(column), justify="right" if column in ("steps", "best eval loss") else "left")
    colours = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "interrupted": "yellow"}
    for r in rows:
        metric = ""
        if r["main_metric"] and r["main_metric_value"] is not None:
            metric = f"{r['main_metric']} {r['main_metric_value']:.3f}"
            if r["main_metric_base"] is not None:
                metric += _(" (base {value:.3f})").format(value=r["main_metric_base"])
        colour = colours.get(r["status"], "cyan")
        table.add_row(
            r["name"], f"[{colour}]{translate(r['status'])}[/]", r["method"] or "", str(r["model"] or ""),
            "" if r["steps"] is None else str(r["steps"]),
            "" if r["best_eval_loss"] is None else f"{r['best_eval_loss']:.4f}",
            metric, (r["created_at"] or "").replace("T", " ").rstrip("Z"),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor_command)
    app.command("runs")(runs_command)
