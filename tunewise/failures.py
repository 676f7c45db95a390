"""What went wrong, in one line, and what to do about it: the wording run.json's ``error`` and the command line share
for failures that are not a mistake in the config (those are :class:`tunewise.config.ConfigError`).

:func:`describe` recognises running out of disk space and out of memory (when Python sees it: ``MemoryError``,
torch's allocator errors); anything else is named by its type and message.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

EXIT_FAILED = 1  # the run could not finish (disk, memory, a bug); 2 is kept for the user's mistakes


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def _free_space(path: str | Path | None) -> str:
    folder = Path(path) if path else Path.cwd()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:,.0f} MB free"
    except OSError:
        return "free space unknown"


def _memory_hint(config: Any) -> str:
    if config is None:
        return "use a smaller model or a machine with more memory"
    t = config.training
    return (f"lower training.per_device_train_batch_size (now {t.per_device_train_batch_size}; raise "
            f"training.gradient_accumulation_steps to keep the effective batch) or data.max_tokens (now "
            f"{config.data.max_tokens}), or turn on training.gradient_checkpointing")


def describe(exc: BaseException, *, stage: str | None = None, config: Any = None, run_root: str | Path | None = None) -> str:
    """One line: what happened (during ``stage``) and what to do next."""
    where = f" during {stage}" if stage else ""
    resume = ""
    if run_root is not None and stage in ("train", "pipeline"):
        from tunewise.rundir import RunDir

        checkpoint = RunDir.of(run_root).last_checkpoint()
        if checkpoint is not None:
            resume = f"; {checkpoint.name} is complete: continue with `tunewise train {run_root} --resume`"
    if is_disk_full(exc):
        target = getattr(exc, "filename", None) or run_root
        return (f"out of disk space{where} writing {target} ({_free_space(target)}): free some space or set output_dir "
                f"to a disk with room{resume}")
    if is_out_of_memory(exc):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return f"out of memory{where} ({first}): {_memory_hint(config)}{resume}"
    message = (str(exc).strip().splitlines() or [""])[0]
    return f"{stage + ': ' if stage else ''}{type(exc).__name__}: {message}"
