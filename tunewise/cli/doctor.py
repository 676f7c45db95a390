"""``tunewise doctor``: what this machine and install are, for bug reports and speed (tunewise/environment.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

STYLE = {"ok": "green", "note": "yellow", "problem": "bold red"}


def doctor_command(
    output_dir: Path = typer.Option(Path("runs"), "--output-dir", help="Where runs will be written (its free disk is checked)"),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON"),
) -> None:
    """Versions (against the tested lock), Python, torch build and threads, CPU flags, GPU, bitsandbytes, memory and
    disk, offline models. Exits 1 when something tunewise needs is missing, with the fix."""
    from tunewise.cli import common as cli

    cli.quiet_libraries()
    from tunewise.environment import diagnose

    report = diagnose(output_dir)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        from rich.table import Table

        table = Table(show_header=False, box=None, pad_edge=False)
        for column in ("area", "check", "found"):
            table.add_column(column, overflow="fold")
        for c in report["checks"]:
            found = c["value"] + (f"\n  fix: {c['fix']}" if c["fix"] and c["status"] != "ok" else "")
            table.add_row(c["area"], c["name"], f"[{STYLE[c['status']]}]{found}[/]" if c["status"] != "ok" else found)
        cli.console.print(table)
        problems = [c for c in report["checks"] if c["status"] == "problem"]
        cli.console.print("[green]everything tunewise needs is here[/]" if not problems else
                          f"[bold red]{len(problems)} problem(s)[/]: " + "; ".join(f"{c['name']}: {c['fix']}" for c in problems))
    if not report["ok"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
