"""``tunewise data prepare | stats | preview | convert | split | from-feedback``: thin commands over :mod:`tunewise.data`
(and :mod:`tunewise.serve.feedback`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console

from tunewise.catalog import _

app = typer.Typer(help="Prepare, inspect, convert and split datasets.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)  # fmt: skip
console = Console()
err_console = Console(stderr=True)


def _run(fn: Callable[[], Any], **context: Any) -> Any:
    """Run ``fn``; any failure becomes one red line on stderr and an exit code (2 for bad data or config; see
    :func:`tunewise.cli.guarded`)."""
    from tunewise.cli.common import guarded

    return guarded(fn, **context)


def _tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    from tunewise.errors import DataError
    from tunewise.lm.loading import load_tokenizer

    try:
        return load_tokenizer(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise DataError(_("cannot load the tokenizer of {name!r}: {reason}").format(
            name=name, reason=str(exc).splitlines()[0])) from None


def _run_dir(path: Path) -> tuple[Any, Path] | None:
    """(config, data folder) when ``path`` is a run directory (it has config.yaml)."""
    from tunewise.config import load_config

    if path.is_dir() and (path / "config.yaml").is_file():
        return load_config(path / "config.yaml"), path / "data"
    return None


@app.command()
def prepare(
    config: Path = typer.Argument(..., help="The run's YAML config."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. data.max_tokens=512"),
    out: Optional[Path] = typer.Option(None, help="Data folder to write (default: RUN/data)."),
    progress: bool = typer.Option(True, help="Show a progress line."),
) -> None:
    """Load, clean, deduplicate, split and measure the data of CONFIG into RUN/data/."""

    from contextlib import ExitStack

    from tunewise.config import load_config
    from tunewise.record import tracked
    from tunewise.runlock import writing_run

    cfg = _run(lambda: load_config(config, overrides or []))

    def go() -> None:
        from tunewise.data.prepare import prepare_data
        from tunewise.data.stats import plot_token_histograms, render_report
        from tunewise.runs import init_run

        if out is None:
            init_run(cfg)  # the run directory gets its resolved config.yaml, so later stages can run on it
        tokenizer = _tokenizer(cfg.model, cfg.trust_remote_code)
        paraphraser = None
        if cfg.data.augment_paraphrase:
            from tunewise.data.augment import Paraphraser
            from tunewise.lm.loading import load_model

            name = cfg.data.paraphrase_model or cfg.model
            model_tok = tokenizer if name == cfg.model else _tokenizer(name, cfg.trust_remote_code)
            paraphraser = Paraphraser(load_model(name, trust_remote_code=cfg.trust_remote_code), model_tok, seed=cfg.data.seed)
        data_dir = out or cfg.run_dir / "data"
        report = prepare_data(cfg.data, tokenizer, data_dir, loss_on=cfg.training.loss_on, progress=progress, paraphraser=paraphraser,
                              objective=cfg.objective)
        plot = plot_token_histograms(report, str(cfg.run_dir / "plots" / "data_token_lengths.png"))
        render_report(report, console)
        console.print(_("wrote {data_dir}/ (train/val/test.jsonl, rejects.jsonl, data_report.json) and {plot}").format(
            data_dir=data_dir, plot=plot))

    def tracked_go() -> None:
        from tunewise.pipeline import check_for_prepare

        check_for_prepare(cfg)  # data paths and token limit, before anything is written
        if out is not None:
            return go()
        # run.json follows the preparation: validating -> queued, or failed / cancelled with the reason
        with tracked(cfg.run_dir, "prepare", cfg, status="validating", done_status="queued"):
            go()

    with ExitStack() as held:
        if out is None:  # one writer per run
            _run(lambda: held.enter_context(writing_run(cfg.run_dir, "data prepare")))
        _run(tracked_go, stage="data prepare", config=cfg, run_root=cfg.run_dir if out is None else None)


@app.command()
def stats(
    target: Path = typer.Argument(..., help="A run directory, a prepared data folder, or a data file (needs --model)."),
    model: Optional[str] = typer.Option(None, help="Tokenizer to measure a data file with."),
) -> None:
    """Show the counts, rejections, token lengths and labels of prepared data."""

    def go() -> None:
        from tunewise.data.stats import render_report
        from tunewise.errors import DataError
        from tunewise.rundir import data_report_file

        run = _run_dir(target)
        folder = run[1] if run else target
        report_path = data_report_file(folder)
        if folder.is_dir() and report_path.is_file():
            render_report(json.loads(report_path.read_text(encoding="utf-8")), console)
            return
        if not target.exists():
            raise DataError(_("{target} not found; pass a run directory, a prepared data folder or a data file").format(
                target=target))
        if not model:
            raise DataError(_("{target} has no data_report.json; run `tunewise data prepare` first, or pass "
                              "--model to measure a file").format(target=target))
        import tempfile

        from tunewise.config import DataConfig
        from tunewise.data.prepare import prepare_data

        with tempfile.TemporaryDirectory() as tmp:
            report = prepare_data(DataConfig(path=str(target)), _tokenizer(model), Path(tmp), progress=False)
        render_report(report, console)

    _run(go)


@app.command()
def preview(
    target: Path = typer.Argument(..., help="A run directory (its prepared data) or a data file (needs --model)."),
    n: int = typer.Option(3, "--n", "-n", help="How many examples."),
    split: str = typer.Option("train", help="Split of a run to show."),
    model: Optional[str] = typer.Option(None, help="Tokenizer to render a data file with (default: the run's model)."),
    loss_on: Optional[str] = typer.Option(None, help="answers | all | last_turn (default: the run's)."),
) -> None:
    """Show examples exactly as the model sees them: trained tokens highlighted, masked ones dimmed."""

    def go() -> None:
        from tunewise.data.preview import preview_examples, template_warnings
        from tunewise.errors import DataError

        run = _run_dir(target)
        generation_tokenizer = None
        eos_ids = None
        if run:
            cfg, data_dir = run
            from tunewise.data.prepare import load_split

            examples = load_split(data_dir, split)
            tokenizer = _tokenizer(model or cfg.model, cfg.trust_remote_code)
            mode, max_tokens = loss_on or cfg.training.loss_on, cfg.data.max_tokens
            tuned = target / "model"
            if (tuned / "tokenizer_config.json").is_file():
                generation_tokenizer = _tokenizer(str(tuned), cfg.trust_remote_code)
            gen_cfg = tuned / "generation_config.json"
            if gen_cfg.is_file():
                value = json.loads(gen_cfg.read_text(encoding="utf-8")).get("eos_token_id")
                eos_ids = [value] if isinstance(value, int) else value
        else:
            if not model:
                raise DataError(_("pass --model to preview a data file (its tokenizer renders the examples)"))
            import io
            import itertools

            from tunewise.config import DataConfig
            from tunewise.data.io import iter_rows
            from tunewise.data.prepare import RejectLog, normalised

            rows = normalised(iter_rows(str(target)), DataConfig(path=str(target)), RejectLog(io.StringIO()), {})
            examples = [ex for _line, ex in itertools.islice(rows, n)]
            tokenizer = _tokenizer(model)
            mode, max_tokens = loss_on or "answers", None
        for warning in template_warnings(tokenizer, generation_tokenizer=generation_tokenizer, generation_eos_ids=eos_ids):
            err_console.print(_("[bold yellow]warning:[/] {warning}").format(warning=warning), highlight=False)
        if not examples:
            raise DataError(_("no example to show in {target}").format(target=target))
        preview_examples(examples, tokenizer, console, n=n, loss_on=mode, max_tokens=max_tokens)

    _run(go)


@app.command()
def convert(
    src: str = typer.Argument(..., help="Input file, folder or glob (any supported format)."),
    dst: Path = typer.Argument(..., help="Output file (.jsonl, or .json for one JSON array)."),
    to: str = typer.Option("chat", "--to", help="alpaca | chat | completion"),
    format: str = typer.Option("auto", "--format", help="Input format (auto detects it)."),
    column: Optional[List[str]] = typer.Option(None, "--column", help="field=column mapping, e.g. output=answer"),
) -> None:
    """Write a dataset as alpaca, chat or completion JSONL (or JSON)."""

    def go() -> None:
        from tunewise.data.convert import convert_file

        result = convert_file(src, dst, to, format=format, columns=_columns(column))
        console.print(_("wrote {written:,} rows to {dst} as {to}").format(written=result.written, dst=dst, to=to))
        if result.rejected:
            console.print(_("[yellow]{n:,} rows not converted[/] ({rejected}); see {rejects_path}").format(
                n=sum(result.rejected.values()), rejected=_reasons(result.rejected), rejects_path=result.rejects_path))

    _run(go)


@app.command("split")
def split_cmd(
    src: str = typer.Argument(..., help="Input file, folder or glob."),
    out: Path = typer.Argument(..., help="Folder for train/val/test.jsonl."),
    train: float = typer.Option(0.8, help="Ratio (or count) for train."),
    val: float = typer.Option(0.1, help="Ratio (or count) for validation."),
    test: float = typer.Option(0.1, help="Ratio (or count) for test."),
    seed: int = typer.Option(42),
    stratify_by: Optional[str] = typer.Option(None, help="Label field to stratify by, e.g. label."),
    format: str = typer.Option("auto", "--format"),
) -> None:
    """Split a dataset into train / validation / test (seeded, optionally stratified)."""

    def go() -> None:
        from pydantic import ValidationError

        from tunewise.config import DataConfig, SplitConfig, format_errors
        from tunewise.data.formats import check_format
        from tunewise.data.prepare import split_file
        from tunewise.errors import DataError

        check_format(format)
        try:
            cfg = DataConfig(path=src, format=format, split=SplitConfig(train=train, val=val, test=test), seed=seed, stratify_by=stratify_by)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise DataError(format_errors(exc).replace("\n  ", " ")) from None
        counts = split_file(src, out, cfg)
        console.print(_("train {train:,}, val {val:,}, test {test:,} -> {out}/").format(
            train=counts['train'], val=counts['val'], test=counts['test'], out=out)
                      + (_("; {rejected:,} rows rejected (see {out}/rejects.jsonl)").format(
                          rejected=counts['rejected'], out=out) if counts["rejected"] else ""))  # fmt: skip

    _run(go)


@app.command("from-feedback")
def from_feedback(
    log: Path = typer.Argument(..., help="The server's log folder (--log-dir of `tunewise serve`)."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write (data.path of a KTO or DPO run)."),
    kind: str = typer.Option("kto", "--kind", help="kto (thumbs up/down -> prompt, completion, label) or dpo "
                             "(preferred alternatives -> prompt, chosen, rejected)."),
) -> None:
    """Turn a server's logged responses and the feedback on them (POST /v1/feedback) into KTO or DPO data."""

    def go() -> None:
        from tunewise.serve.feedback import write_feedback_data

        data = write_feedback_data(log, out, kind)
        what = (f"{sum(1 for r in data.rows if r['label'])} desirable, {sum(1 for r in data.rows if not r['label'])} "
                "undesirable answers" if kind == "kto" else "preference pairs")
        console.print(_("wrote {n_rows:,} rows to {out} ({what}) from {responses:,} responses and "
                        "{feedback:,} feedback records").format(n_rows=len(data.rows), out=out, what=what,
                                                                 responses=data.responses, feedback=data.feedback)
                      + (_("; skipped: {skipped}").format(skipped=_reasons(dict(data.skipped))) if data.skipped else ""))
        console.print(_("train on them with objective: {kind} and data.path: {out}").format(kind=kind, out=out))

    _run(go)


def _columns(items: Optional[List[str]]) -> dict[str, str]:
    from tunewise.errors import DataError

    out = {}
    for item in items or []:
        if "=" not in item:
            raise DataError(_("--column {item!r} must look like field=column, e.g. output=answer").format(item=item))
        k, _sep, v = item.partition("=")
        out[k.strip()] = v.strip()
    return out


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
