"""``tunewise estimate CONFIG`` and ``tunewise advise CONFIG``: thin commands over :mod:`tunewise.decide`."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer

from tunewise.catalog import N_, _, translate

SOURCES = (N_("given"), N_("inferred"))  # where advice.json says a task or format came from


def _cli() -> Any:
    from tunewise.cli import common as cli

    cli.quiet_libraries()
    return cli


@contextmanager
def _working(console: Any) -> Iterator[tuple[Callable[[str], None], Callable[[int], None]]]:
    """A spinner whose line says what is being done, and a counter for generated answers."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    status = progress.add_task("starting", total=None)
    with progress:
        yield (lambda message: progress.update(status, description=message),
               lambda n: progress.advance(status, n))


def _mb(value: float) -> str:
    return f"{value / 1024:.2f} GB" if value >= 1024 else f"{value:.0f} MB"


def _money(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.2f}" if value >= 1 else f"{value:.4f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.1f} s"


def estimate_table(report: dict[str, Any], title: str) -> Any:
    """Methods side by side: trainable parameters, peak memory, time, cost."""
    from rich.table import Table

    table = Table(title=title)
    columns = [N_("method"), N_("trainable params"), N_("peak memory"), N_("with grad. ckpt"), N_("time / epoch"),
               N_("total time"), N_("time from")]
    has_device_cost = any("device_cost" in m["cost"] for m in report["methods"].values())
    has_api_cost = any("api_cost" in m["cost"] for m in report["methods"].values())
    columns += (([N_("device cost")] if has_device_cost else []) + ([N_("API cost")] if has_api_cost else [])
                + [N_("fits")])
    for column in columns:
        table.add_column(translate(column), justify="left" if column in ("method", "time from", "fits") else "right")
    available = report["hardware"]["available_mb"]
    for name, m in report["methods"].items():
        p, mem, t, cost = m["parameters"], m["memory"], m["time"], m["cost"]
        share = p["trainable"] / p["total"] if p["total"] else 0
        fits = m.get("fits_in_memory")
        row = [
            name, f"{p['trainable']:,} ({share:.2%})", _mb(mem["peak_mb_without_checkpointing"]),
            _mb(mem["peak_mb_with_checkpointing"]), _duration(t["epoch_s"]), _duration(t["total_s"] + t["load_s"]),
            t["source"],
        ]
        if has_device_cost:
            row.append(_money(cost.get("device_cost")))
        if has_api_cost:
            row.append(_money(cost.get("api_cost")))
        row.append("[green]" + _("yes") + "[/]" if fits else "[red]" + _("no") + "[/]" if fits is False else "?")
        table.add_row(*row)
    work = report["workload"]
    table.caption = _("{device}, {available} available; {examples:,} examples, {steps} steps/epoch, peak batch {rows} x "
                      "{length} tokens").format(
                          device=report["device"], available=_mb(available), examples=work["examples"],
                                                steps=work["steps_per_epoch"], rows=work["peak_batch"]["rows"],
                                                length=work["peak_batch"]["length"])
    return table


def parts_table(report: dict[str, Any]) -> Any:
    """Where each method's peak memory goes (MB), methods side by side."""
    from rich.table import Table

    rows = [(N_("runtime"), "runtime"), (N_("weights"), "weights"), (N_("  of which adapters"), "adapters_in_weights"),
            (N_("  of which quantized"), "quantized_in_weights"), (N_("mapped checkpoint"), "mapped_checkpoint"),
            (N_("gradients"), "gradients"), (N_("optimizer states"), "optimizer_states"),
            (N_("optimizer step temporary"), "optimizer_step_temporary"), (N_("activations"), "activations"),
            (N_("  with gradient checkpointing"), "activations_checkpointed"), (N_("logits"), "logits")]
    methods = report["methods"]
    factor = next(iter(methods.values()))["memory"]["activation_factor"] if methods else 1.0
    table = Table(title=_("memory parts (MB); the peak counts activations x {factor:g}").format(factor=factor))
    table.add_column(_("part"))
    for name in methods:
        table.add_column(name, justify="right")
    for label, key in rows:
        values = [m["memory"]["parts_mb"].get(key, 0.0) for m in methods.values()]
        if any(values):
            table.add_row(translate(label), *(f"{v:,.1f}" for v in values))
    table.add_row("[bold]" + _("peak") + "[/]", *(f"[bold]{m['memory']['peak_mb']:,.0f}[/]" for m in methods.values()))
    return table


def sharding_table(report: dict[str, Any]) -> Any:
    """Per-device peak memory of each method sharded over the report's devices (fsdp, zero2, zero3)."""
    from rich.table import Table

    methods = {name: m for name, m in report["methods"].items() if "sharding" in m}
    if not methods:
        return None
    devices = next(iter(methods.values()))["sharding"]["devices"]
    table = Table(title=_("per-device peak memory sharded over {devices} devices (training.sharding; docs/scale.md)").format(
        devices=devices))
    engines = list(next(iter(methods.values()))["sharding"]["engines"])
    for column in [_("method"), _("one device"), *engines]:
        table.add_column(column, justify="left" if column == _("method") else "right")
    for name, m in methods.items():
        cells = []
        for engine in engines:
            e = m["sharding"]["engines"][engine]
            mark = ("[green]" + _("fits") + "[/]" if e["fits_in_memory"] else "[red]" + _("no") + "[/]"
                    if e["fits_in_memory"] is False else "")
            cells.append(f"{_mb(e['peak_mb'])} {mark}".strip())
        table.add_row(name, _mb(m["memory"]["peak_mb"]), *cells)
    return table


def _prepared(cfg: Any, run_dir: Any, say: Callable[[str], None]) -> None:
    if run_dir.split("train").is_file():
        return
    from tunewise.pipeline import prepare_stage

    say("preparing the data")
    prepare_stage(cfg, run_dir)


def _decide_options(**options: Any) -> list[str]:
    """Command-line options given (not None) as overrides of the config's decide: section, e.g. decide.target=0.5."""
    return [f"decide.{name}={json.dumps(value)}" for name, value in options.items() if value is not None]


def estimate_command(
    config: Path = typer.Argument(..., help="YAML config (or a run directory)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. training.per_device_train_batch_size=4"),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods to compare [config decide.methods: "
                                          "full,lora,qlora]"),
    calibrate: Optional[bool] = typer.Option(None, "--calibrate/--no-calibrate",
                                             help="Time a few real training steps, else FLOPs [decide.calibrate: on]"),
    steps: Optional[int] = typer.Option(None, help="Timed calibration steps after one warmup step [decide.calibration_steps: 4]"),
    price_per_hour: Optional[float] = typer.Option(None, help="Device price per hour, for the cost column [decide.price_per_hour]"),
    api_price_per_1m: Optional[float] = typer.Option(None, "--api-price-per-1m",
                                                     help="API training price per 1M tokens [decide.api_price_per_1m]"),
    examples: Optional[int] = typer.Option(None, help="Without data: number of training examples to assume"),
    seq_len: Optional[int] = typer.Option(None, help="Without data: tokens per example to assume"),
    devices: Optional[int] = typer.Option(None, min=1, help="Also per-device memory sharded over N devices "
                                          "(fsdp/zero2/zero3) [decide.devices: this machine's GPUs]"),
) -> None:
    """Peak memory, time and cost of each method, side by side (writes RUN/estimate.json)."""
    cli = _cli()
    from tunewise.decide.estimate import estimate_run
    from tunewise.runs import config_of_run

    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    options = _decide_options(methods=names, calibrate=calibrate, calibration_steps=steps, price_per_hour=price_per_hour,
                              api_price_per_1m=api_price_per_1m, devices=devices)
    cfg, run_dir = cli.guarded(lambda: config_of_run(config, [*(overrides or []), *options]))
    d = cfg.decide
    workload = None
    if not cfg.data.path and not run_dir.split("train").is_file():
        if not (examples and seq_len):
            cli.fail(_("the config has no data.path: give --examples N and --seq-len TOKENS to estimate without data"))
        from tunewise.decide.workload import synthetic_workload

        workload = synthetic_workload(cfg, examples, seq_len, max(seq_len // 4, 1))
    with _working(cli.err_console) as (say, _advance):
        if workload is None:
            cli.guarded(lambda: _prepared(cfg, run_dir, say))
        report = cli.guarded(lambda: estimate_run(
            cfg, run_dir.root, d.methods, calibrate=d.calibrate and workload is None, calibration_steps=d.calibration_steps,
            price_per_hour=d.price_per_hour, api_price_per_1m=d.api_price_per_1m, workload=workload, progress=say,
        ))
    cli.console.print(estimate_table(report, _("{model}: estimated per method").format(model=cfg.model)))
    cli.console.print(parts_table(report))
    sharded = sharding_table(report)
    if sharded is not None:
        cli.console.print(sharded)
    for line in report["assumptions"]:
        cli.console.print(f"[dim]- {line}[/]", highlight=False)
    cli.console.print(_("written: {path}").format(path=run_dir.estimate))


def advise_command(
    config: Path = typer.Argument(..., help="YAML config (or a run directory)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
    task: Optional[str] = typer.Option(None, help="classification, extraction, summarisation, generation, code or "
                                       "domain-specific [decide.task; default: inferred from the data]"),
    strict_format: Optional[bool] = typer.Option(None, "--strict-format/--free-format",
                                                 help="Whether outputs must follow a strict format [decide.strict_format; "
                                                 "default: inferred]"),
    budget_hours: Optional[float] = typer.Option(None, help="Most device-hours to spend on training [decide.budget_hours]"),
    budget_usd: Optional[float] = typer.Option(None, help="Most money to spend, needs a price [decide.budget_usd]"),
    price_per_hour: Optional[float] = typer.Option(None, help="Device price per hour [decide.price_per_hour]"),
    api_price_per_1m: Optional[float] = typer.Option(None, "--api-price-per-1m",
                                                     help="API training price per 1M tokens [decide.api_price_per_1m]"),
    target: Optional[float] = typer.Option(None, help="Prompting is enough when its best score reaches this, 0-1 "
                                           "[decide.target: 0.9]"),
    sample: Optional[int] = typer.Option(None, help="Rows the base model is prompted on, validation first "
                                         "[decide.sample: 48]"),
    shots: Optional[int] = typer.Option(None, help="Few-shot examples from the training split [decide.shots: 4]"),
    calibrate: Optional[bool] = typer.Option(None, "--calibrate/--no-calibrate",
                                             help="Time real steps of the chosen method [decide.calibrate: on]"),
    devices: Optional[int] = typer.Option(None, min=1, help="Devices training can shard over; a method too large "
                                          "for one may fit sharded [decide.devices: this machine's GPUs]"),
) -> None:
    """Prompting, LoRA, QLoRA or full fine-tuning? Measures, estimates, lists every rule (writes RUN/advice.json).
    Every option can be set in the config's `decide:` section instead; an option given here wins."""
    cli = _cli()
    from rich.panel import Panel
    from rich.table import Table

    from tunewise.decide.advise import advise_run
    from tunewise.pipeline import prepare_stage
    from tunewise.runs import config_of_run

    options = _decide_options(task=task, strict_format=strict_format, budget_hours=budget_hours, budget_usd=budget_usd,
                              price_per_hour=price_per_hour, api_price_per_1m=api_price_per_1m, target=target,
                              sample=sample, shots=shots, calibrate=calibrate, devices=devices)
    # the options become the config's decide: section (validated there, kept in the run's config.yaml)
    cfg, run_dir = cli.guarded(lambda: config_of_run(config, [*(overrides or []), *options]))
    with _working(cli.err_console) as (say, advance):
        if not run_dir.split("train").is_file():
            say(_("preparing the data"))
            cli.guarded(lambda: prepare_stage(cfg, run_dir))
        advice = cli.guarded(lambda: advise_run(
            cfg, run_dir.root, progress=say, generation_progress=advance,
        ))
    console = cli.console
    a = advice.to_dict()
    inputs = a["inputs"]
    console.print(Panel(a["summary"], title=_("decision: {decision}").format(decision=a["decision"]), expand=False))
    console.print(_("task {task} ({source}); strict format {strict} ({strict_source}); {examples:,} usable training "
                    "examples; {device}").format(
        task=inputs["task"], source=translate(inputs["task_source"]), strict=_("yes") if inputs["strict_format"] else _("no"),
        strict_source=translate(inputs["strict_format_source"]), examples=inputs["usable_examples"],
        device=inputs["device"]), highlight=False)
    for reason in a["reasons"]:
        console.print(f"  - {reason}", highlight=False)
    for method, why in a["not_chosen"].items():
        console.print(_("  [dim]not {method}:[/] {why}").format(method=method, why=why), highlight=False)

    b = a["baselines"]
    base = Table(title=_("measured prompting baseline: base model on {n} rows ({from_val} validation, {from_train} "
                         "unused training), {shots} shots").format(**b))
    metric_names = list(next(iter(b["variants"].values()))["metrics"]) if b["variants"] else []
    base.add_column(_("prompt"))
    for name in metric_names:
        base.add_column(name, justify="right")
    for variant, result in b["variants"].items():
        base.add_row(variant.replace("_", "-"), *(f"{result['metrics'][m]:.3f}" for m in metric_names))
    console.print(base)

    rules = Table(title=_("rules"))
    for column in ("", _("rule"), _("evidence")):
        rules.add_column(column)
    for r in a["rules"]:
        rules.add_row(_("[green]fired[/]") if r["fired"] else _("[dim]not fired[/]"), r["description"], r["evidence"])
    console.print(rules)
    console.print(estimate_table(a["estimates"], _("estimates")))
    console.print(_("written: {path}").format(path=run_dir.advice))


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_command)
    app.command("advise")(advise_command)
