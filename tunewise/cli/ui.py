"""``tunewise ui``: the local web dashboard (tunewise/ui/, docs/dashboard.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def ui_command(
    runs: Path = typer.Argument(Path("runs"), help="The folder that holds your runs (the configs' output_dir)"),
    host: str = typer.Option("127.0.0.1", help="Loopback address to listen on"),
    port: int = typer.Option(8765, help="Port"),
    configs: Optional[list[Path]] = typer.Option(None, "--configs", help="Config files or folders the new-run page offers "
                                                 "[./examples when it exists] (each run's config.yaml is offered too)"),
    lang: Optional[str] = typer.Option(None, "--lang", help="en or zh [$TUNEWISE_LANG, else en]"),
) -> None:
    """The dashboard on http://HOST:PORT: runs, live curves, checklist, compare, playground, new runs."""
    import tunewise.cli as cli
    from tunewise.catalog import resolve_language
    from tunewise.serve.server import check_loopback

    cli.guarded(lambda: check_loopback(host))
    language = cli.guarded(lambda: resolve_language(lang))
    if not runs.is_dir():
        if runs.exists():
            cli.fail(f"{runs} is not a folder; pass the folder that holds your runs (the configs' output_dir)")
        runs.mkdir(parents=True)
    from tunewise.ui.app import create_app, serve

    places = configs if configs is not None else [p for p in (Path("examples"),) if p.is_dir()]
    app = create_app(runs, configs=places, lang=language)
    cli.console.print(f"tunewise dashboard: http://{host}:{port}/ (runs in {runs}; Ctrl-C stops it)", highlight=False)
    cli.guarded(lambda: serve(app, host, port))


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
