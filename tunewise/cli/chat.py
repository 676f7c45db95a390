"""``tunewise chat``: talk to a run's model in the terminal (thin command over tunewise.chat)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def chat_command(
    target: Path = typer.Argument(..., help="A run directory, adapter or model folder, export folder or .gguf file"),
    compare: Optional[str] = typer.Option(None, "--compare", help="'base': also answer every prompt with the base model"),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt (default: the run's, if it has one)"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Longest answer, in tokens"),
) -> None:
    """Chat with the tuned model: streamed answers, the run's chat template and system prompt, /reset, /system."""
    import tunewise.cli as cli

    if compare not in (None, "base"):
        cli.fail(f"--compare takes 'base', got {compare!r}")
    cli.quiet_libraries()
    from tunewise.chat import load_chat_target, run_repl

    chat = cli.guarded(lambda: load_chat_target(target, compare_base=compare == "base"))
    if system is not None:
        chat.system_prompt = system or None
    run_repl(chat, compare_base=compare == "base", max_new_tokens=max_new_tokens)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat_command)
