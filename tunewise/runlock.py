"""One writer per run: RUN/run.lock says which process writes the run directory now.

``with writing(run_root, "train"):`` takes an exclusive ``flock`` on RUN/run.lock and writes the holder into it
(pid, host, command, start time). A second ``train`` / ``run`` / ``data prepare`` on the same run fails at once
with :class:`RunLocked`, naming the holder. The kernel drops the lock when its process dies, however it dies
(SIGKILL included), so a lock file that still names a process nobody holds the lock for is stale: the next writer
takes it over with a warning. A clean exit empties the file.

The lock is re-entrant within a process (``tunewise run`` holds it while its stages take it again) and inherited by
the processes it starts (``train --nproc``: the torchrun workers write the run its parent locked), through the
environment variable ``TUNEWISE_RUN_LOCKS``. ``flock`` works on local file systems and on NFS (Linux emulates it with
byte-range locks); on a system without ``fcntl`` (Windows) runs are not locked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from tunewise.rundir import RunDir

log = logging.getLogger(__name__)

INHERITED = "TUNEWISE_RUN_LOCKS"
_held: dict[str, list[int]] = {}  # lock path -> [fd, depth]


class RunLocked(RuntimeError):
    """Another live process writes this run directory."""

    def __init__(self, run_root: Path, holder: dict[str, Any]) -> None:
        self.holder = holder
        elsewhere = holder.get("host") not in (None, socket.gethostname())
        who = (f"pid {holder.get('pid')}" + (f" on {holder['host']}" if elsewhere else "")
               + (f", `tunewise {holder['command']}`" if holder.get("command") else "")
               + (f", started {holder['started_at']}" if holder.get("started_at") else ""))
        super().__init__(
            f"{run_root} is being written by another tunewise process ({who}); two writers would mix their checkpoints "
            f"and metrics. Wait for it to finish (`tunewise monitor {run_root}`), stop it (kill {holder.get('pid')}), "
            "or use another run name"
        )


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", errors="replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _inherited() -> set[str]:
    return {p for p in os.environ.get(INHERITED, "").split(os.pathsep) if p}


def _set_inherited(paths: set[str]) -> None:
    if paths:
        os.environ[INHERITED] = os.pathsep.join(sorted(paths))
    else:
        os.environ.pop(INHERITED, None)


def _acquire(path: Path, command: str, wait_s: float, quiet: bool) -> int:
    import fcntl

    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            same_host = holder.get("host") in (None, socket.gethostname())
            if holder.get("pid") and (not same_host or _pid_alive(holder["pid"])):
                raise RunLocked(path.parent, holder) from None
            # held, but the file names no live holder: a holder writing its name, or `tunewise runs` looking: retry
            if time.monotonic() > deadline:
                raise RunLocked(path.parent, holder or {"pid": "unknown"}) from None
            time.sleep(0.05)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the file was replaced between open and lock: lock the one now at the path
            os.close(fd)
            continue
        break
    previous = _read(fd)
    if previous.get("pid") and not quiet:
        log.warning("%s: taking over the lock of pid %s (`tunewise %s`, started %s), which stopped without releasing it",
                    path.parent, previous.get("pid"), previous.get("command", "?"), previous.get("started_at", "?"))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started_at": _now_iso()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    return fd


@contextmanager
def writing(run_root: str | Path, command: str, *, wait_s: float = 2.0, quiet: bool = False) -> Iterator[None]:
    """Hold the run's lock while the block runs (module docstring). Raises :class:`RunLocked` when another live
    process holds it, and OSError when the run directory cannot be created. ``quiet``: take over a stale lock
    without the warning."""
    run = RunDir.of(run_root)
    run.root.mkdir(parents=True, exist_ok=True)
    path = run.lock
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows: no advisory locks here
        yield
        return
    if key in _inherited():  # a child of the process that holds it (torchrun worker)
        yield
        return
    fd = _acquire(path, command, wait_s, quiet)
    _held[key] = [fd, 1]
    _set_inherited(_inherited() | {key})
    try:
        yield
    finally:
        del _held[key]
        _set_inherited(_inherited() - {key})
        try:
            os.ftruncate(fd, 0)  # a clean exit leaves no holder behind
        except OSError:
            pass
        os.close(fd)


@contextmanager
def writing_run(run_root: str | Path, command: str, **options: Any) -> Iterator[None]:
    """:func:`writing`, with a run folder that cannot be created or written reported as a config error that names
    ``output_dir`` (a read-only place, ``/proc``, a file where a folder should be)."""
    from tunewise.config import ConfigError

    stack = ExitStack()
    try:
        stack.enter_context(writing(run_root, command, **options))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"output_dir {str(Path(run_root).parent)!r}: can't create or write the run folder {run_root} "
                          f"({reason}); set output_dir to a folder you can write to") from None
    with stack:
        yield


def lock_holder(run_root: str | Path) -> dict[str, Any] | None:
    """Who holds the run's lock now: their info ({} when held but unnamed); None when nobody holds it. Raises
    FileNotFoundError when the run has no lock file (never locked, or written by an older tunewise)."""
    path = RunDir.of(run_root).lock
    key = str(path.resolve())
    if key in _held:
        return _read(_held[key][0])
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        raise FileNotFoundError(path) from None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
