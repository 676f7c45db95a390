"""``tunewise checklist RUN``: the guide's best-practice checklist from the run directory's evidence
(tunewise/checklist.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

MARK = {"done": "[green]✓[/]", "todo": "[yellow]·[/]", "na": "[dim]–[/]"}


def checklist_command(
    run: Path = typer.Argument(..., help="A run directory"),
    lang: Optional[str] = typer.Option(None, "--lang", help="en or zh [$TUNEWISE_LANG, else en]"),
    as_json: bool = typer.Option(False, "--json", help="Print the checklist as JSON"),
) -> None:
    """Each of the guide's 24 items done, not done or not applicable, with its evidence and the command that does it."""
    import tunewise.cli as cli
    from rich.markup import escape

    from tunewise.catalog import resolve_language, text
    from tunewise.checklist import checklist

    language = cli.guarded(lambda: resolve_language(lang))
    result = cli.guarded(lambda: checklist(run, language))
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    console = cli.console
    console.print(f"[bold]{escape(result['title'])}[/]: {run} — {escape(result['progress_text'])}", highlight=False)
    phase = None
    for item in result["items"]:
        if item["phase"] != phase:
            phase = item["phase"]
            console.print(f"\n[bold]{escape(item['phase_title'])}[/]", highlight=False)
        console.print(f" {MARK[item['status']]} {escape(item['title'])} [dim]({escape(item['status_text'])})[/]: "
                      f"{escape(item['note'])}", highlight=False, soft_wrap=True)
        if item["flag"]:
            console.print(f"     [bold red]! {escape(text('checklist.flag', language))}:[/] {escape(item['flag'])}",
                          highlight=False, soft_wrap=True)
        if item["evidence"]:
            console.print(f"     [dim]{escape(text('checklist.evidence', language))}: {escape(str(run / item['evidence']))}[/]",
                          highlight=False, soft_wrap=True)
        if item["command"]:
            console.print(f"     [cyan]{escape(text('checklist.command', language))}: {escape(item['command'])}[/]",
                          highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("checklist")(checklist_command)
