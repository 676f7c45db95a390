"""What went wrong, in one line, and what to do about it: the wording run.json's ``error`` and the command line share
for failures that are not a mistake in the config (those are :class:`tunewise.config.ConfigError`).

:func:`describe` recognises running out of disk space, out of memory (when Python sees it: ``MemoryError``, torch's
allocator errors) and training processes that cannot reach each other (a node lost, a port refused); anything else is
named by its type and message.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

EXIT_FAILED = 1  # the run could not finish (disk, memory, a bug); 2 is kept for the user's mistakes


_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


def is_disk_full(exc: BaseException, path: str | Path | None = None) -> bool:
    """An OSError with ENOSPC/EDQUOT, or a library's error that carries one in its text (safetensors: "I/O error: No
    space left on device (os error 28)"); torch's writer says only "file write failed", which counts when ``path``'s
    disk has less than 1 MiB left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if any(marker in text for marker in _DISK_FULL_TEXT):
        return True
    if "write failed" in text and path is not None:
        try:
            return shutil.disk_usage(_existing(Path(path))).free < 2**20
        except OSError:
            return False
    return False


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


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


# what torch.distributed's backends and store say when a peer cannot be reached or went away
_CONNECTION_TEXT = ("connectFullMesh", "Connection refused", "Connection reset by peer", "Connection closed by peer",
                    "timed out connecting", "Broken pipe", "DistNetworkError", "remote process exited",
                    "failed to recv, got 0 bytes")


def is_connection_lost(exc: BaseException) -> bool:
    """Training processes that could not connect to each other or lost a peer (gloo, NCCL, the rendezvous store):
    the machine or the network, not the run; starting again with --resume continues from the last checkpoint."""
    if type(exc).__name__ == "DistNetworkError" or isinstance(exc, (ConnectionError, BrokenPipeError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _CONNECTION_TEXT)


def _free_space(path: str | Path | None) -> str:
    try:
        return f"{shutil.disk_usage(_existing(Path(path) if path else Path.cwd())).free / 2**20:,.1f} MB free"
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
    if is_disk_full(exc, run_root):
        target = getattr(exc, "filename", None) or run_root
        return (f"out of disk space{where} writing {target} ({_free_space(target)}): free some space or set output_dir "
                f"to a disk with room{resume}")
    if is_out_of_memory(exc):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return f"out of memory{where} ({first}): {_memory_hint(config)}{resume}"
    if is_connection_lost(exc):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        again = resume or "; then start the job again"
        return (f"the training processes lost their connection to each other{where} ({first}): a node stopped, or a "
                "port between the nodes is closed; check that every node reaches MASTER_ADDR:MASTER_PORT and the "
                "others (on a machine with several network interfaces set GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME)"
                f"{again}")
    message = (str(exc).strip().splitlines() or [""])[0]
    return f"{stage + ': ' if stage else ''}{type(exc).__name__}: {message}"
