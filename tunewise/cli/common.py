"""What every command module shares: the consoles, one-line failures with the right exit code, quiet libraries."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import typer
from rich.console import Console

from tunewise.catalog import _

console = Console()
err_console = Console(stderr=True)


def quiet_libraries() -> None:
    # torchao logs "Failed to load ..." and torch's pytree logs deprecation notes on import (harmless, FIELD-NOTES):
    # silence them before transformers imports torchao
    for name in ("torchao", "torch.utils._pytree", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars; tunewise shows its own progress
    from tunewise.rundir import is_main_process

    # torchrun workers other than rank 0 only say what went wrong
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING, format="%(message)s")
    for name in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    # escaped: a message naming `tunewise[deepspeed]` or a path with brackets is text, not rich markup
    label = _("error:")
    err_console.print(f"[bold red]{label}[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], Any], *, stage: str | None = None, config: Any = None,
            run_root: str | Path | None = None) -> Any:
    """Run ``fn``; whatever goes wrong becomes one red line that says what to do, and an exit code: 2 for the user's
    mistakes (bad config, missing file, bad data, a run another process writes), 130 for Ctrl-C, 1 when the work
    could not finish (disk full, out of memory, a bug: its traceback goes to RUN/error.log, or is shown with
    TUNEWISE_DEBUG=1). ``stage``, ``config`` and ``run_root`` make the message name the stage, the settings to
    change and the checkpoint to resume from."""
    from tunewise.config import ConfigError
    from tunewise.runlock import RunLocked

    try:
        from tunewise.errors import DataError
    except ImportError:  # pragma: no cover
        DataError = ConfigError  # type: ignore[misc,assignment]
    try:
        return fn()
    except (typer.Exit, typer.Abort):
        raise
    except (ConfigError, DataError, RunLocked, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        where = _(" during {stage}").format(stage=stage) if stage else ""
        fail(str(exc) or _("cancelled (Ctrl-C){where}; what was being written was not kept: run the command "
                           "again").format(where=where), code=130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into a message
        from tunewise.failures import (
            EXIT_FAILED,
            describe,
            is_connection_lost,
            is_disk_full,
            is_out_of_memory,
        )

        if os.environ.get("TUNEWISE_DEBUG"):
            raise
        message = describe(exc, stage=stage, config=config, run_root=run_root)
        if not (is_disk_full(exc, run_root) or is_out_of_memory(exc) or is_connection_lost(exc)):
            where = _save_traceback(run_root)
            message += _(" (this looks like a bug: the traceback is in {where}; please report it with that file)").format(
                where=where)
        fail(message, code=EXIT_FAILED)


def _save_traceback(run_root: str | Path | None) -> str:
    """Write the current exception's traceback to RUN/error.log (or a temporary file); returns where it went."""
    import tempfile
    import traceback

    from tunewise.rundir import RunDir, atomic_write_text

    text = traceback.format_exc()
    places = [RunDir.of(run_root).error_log] if run_root is not None and Path(run_root).is_dir() else []
    places.append(Path(tempfile.gettempdir()) / f"tunewise-error-{os.getpid()}.log")
    for place in places:
        try:
            atomic_write_text(place, text)
            return str(place)
        except OSError:
            continue
    return _("nowhere (the disk is full?); rerun with TUNEWISE_DEBUG=1 to see it")
