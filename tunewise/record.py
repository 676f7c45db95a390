"""RUN/run.json: the record of a run, shaped like a hosted fine-tuning job.

``status`` is one of :data:`STATUSES`: ``validating`` (the data is being prepared and checked), ``queued`` (ready to
train), ``running``, then ``succeeded``, ``failed`` (with ``error``), ``cancelled`` (Ctrl-C) or ``interrupted`` (the
process died without a word, e.g. SIGKILL or the machine went down: found by the next command that looks at the run,
:func:`mark_interrupted`, with ``checkpoint``, the last complete one to resume from). Besides the status the record
keeps timestamps (ISO 8601, UTC), ``progress`` with the ETA while running, sha256 hashes of the config and of the
prepared data, the seed, the versions of Python, torch, transformers, peft and tunewise, the device and host, and one
entry per stage under ``stages``.

A stage runs inside :func:`tracked`. The outermost tracked block in a process is the *job* (``tunewise run``: the
whole pipeline; ``tunewise train``: training alone): only it sets the final ``succeeded``; any stage sets ``failed``
or ``cancelled``.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import platform
import socket
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from tunewise.rundir import RunDir, atomic_write_json, is_main_process, rejects_file

STATUSES = ("validating", "queued", "running", "succeeded", "failed", "cancelled", "interrupted")
ACTIVE = ("validating", "queued", "running")

_in_job: contextvars.ContextVar[bool] = contextvars.ContextVar("tunewise_in_job", default=False)


def now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def record_path(run_root: str | Path) -> Path:
    return RunDir.of(run_root).record


def read_record(run_root: str | Path) -> dict[str, Any]:
    """run.json as a dict ({} when absent or unreadable)."""
    import json

    path = record_path(run_root)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def update_record(run_root: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into run.json (a dict value is merged one level deep) and write it atomically.
    Under torchrun only rank 0 writes."""
    record = read_record(run_root)
    if not is_main_process():
        return record
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    record["updated_at"] = now_iso()
    atomic_write_json(record_path(run_root), record)
    return record


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_hashes(run_root: str | Path) -> dict[str, str]:
    """sha256 of each prepared split in RUN/data (what training and evaluation actually read)."""
    data = Path(run_root) / "data"
    return {p.name: sha256_file(p) for p in sorted(data.glob("*.jsonl")) if p != rejects_file(data)}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "accelerate", "tunewise"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out["tunewise"] is None:
        from tunewise.version import __version__

        out["tunewise"] = __version__
    return out


def device_info() -> dict[str, Any]:
    """The host's device: what training runs on, and the machine."""
    import torch

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device="cuda", name=props.name, gpus=torch.cuda.device_count(),
                    memory_gb=round(props.total_memory / 2**30, 1))
    else:
        info.update(device="cpu", name=platform.processor() or platform.machine(), torch_threads=torch.get_num_threads())
    return info


def identity(config: Any, run_root: str | Path) -> dict[str, Any]:
    """The fields that say what exactly ran: config and data hashes, seed, versions, device."""
    return {
        "name": config.name,
        "method": config.method,
        "model": config.model,
        "seed": config.training.seed,
        "config_sha256": hashlib.sha256(config.to_yaml().encode("utf-8")).hexdigest(),
        "data_sha256": data_hashes(run_root),
        "versions": versions(),
        "device": device_info(),
    }


def ensure_record(config: Any, run_root: str | Path) -> dict[str, Any]:
    """Create run.json if the run has none (status ``validating``); an existing record keeps its status."""
    if record_path(run_root).is_file():
        return read_record(run_root)
    return update_record(run_root, status="validating", created_at=now_iso(), error=None, **identity(config, run_root))


@contextmanager
def tracked(
    run_root: str | Path,
    stage: str,
    config: Any = None,
    *,
    status: str = "running",
    done_status: str = "succeeded",
) -> Iterator[None]:
    """Mark ``stage`` in run.json: ``status`` while it runs; afterwards ``done_status`` if this is the outermost
    tracked block (the job), ``failed`` with the error, or ``cancelled`` on Ctrl-C (KeyboardInterrupt)."""
    is_job = not _in_job.get()
    token = _in_job.set(True)
    started = now_iso()
    fields: dict[str, Any] = identity(config, run_root) if config is not None else {}
    if is_job:
        fields.update(started_at=started, finished_at=None, error=None, checkpoint=None, progress={})
        fields.setdefault("created_at", read_record(run_root).get("created_at") or started)
    update_record(run_root, status=status, stage=stage, pid=os.getpid(),
                  stages={stage: {"status": status, "started_at": started, "finished_at": None}}, **fields)
    try:
        yield
    except KeyboardInterrupt as exc:
        message = str(exc) or f"cancelled (Ctrl-C) during {stage}"
        _record_end(run_root, status="cancelled", error=message, finished_at=now_iso(),
                    checkpoint=getattr(exc, "checkpoint", None),
                    stages={stage: {"status": "cancelled", "finished_at": now_iso(), "error": message}})
        raise
    except BaseException as exc:
        from tunewise.failures import describe

        record = read_record(run_root)
        message = f"{stage}: {exc}" if _is_user_error(exc) else describe(exc, stage=stage, config=config, run_root=run_root)
        if record.get("status") == "failed" and record.get("error"):
            message = record["error"]  # an inner stage already said what failed
        _record_end(run_root, status="failed", error=message, finished_at=now_iso(),
                    stages={stage: {"status": "failed", "finished_at": now_iso(), "error": message}})
        raise
    else:
        fields = {"stages": {stage: {"status": "succeeded", "finished_at": now_iso()}}}
        if is_job:
            fields.update(status=done_status, finished_at=now_iso() if done_status == "succeeded" else None)
        elif done_status != "succeeded":  # e.g. prepare inside a pipeline: queued until the next stage starts
            fields.update(status=done_status)
        update_record(run_root, **fields)
    finally:
        _in_job.reset(token)


def _is_user_error(exc: BaseException) -> bool:
    """A mistake the message of the exception already explains (bad config, data, missing file)."""
    from tunewise.config import ConfigError
    from tunewise.errors import DataError

    return isinstance(exc, (ConfigError, DataError, FileNotFoundError))


def _record_end(run_root: str | Path, **fields: Any) -> None:
    """Write how a stage ended into run.json even on a full disk: when the write fails for lack of space, free what
    the interrupted writes left behind (cut-off checkpoints, temporary files) and try once more; never raises (the
    error being reported matters more)."""
    import logging

    from tunewise.failures import is_disk_full

    try:
        update_record(run_root, **fields)
        return
    except OSError as exc:
        if not is_disk_full(exc, run_root):
            logging.getLogger(__name__).warning("could not write %s: %s", record_path(run_root), exc)
            return
    free_after_disk_full(run_root)
    try:
        update_record(run_root, **fields)
    except OSError as exc:
        logging.getLogger(__name__).warning("could not write %s: %s", record_path(run_root), exc)


def free_after_disk_full(run_root: str | Path) -> None:
    """Remove what a write cut off by a full disk left: incomplete checkpoint folders and atomic writes' temporary
    files (``.NAME.*``) in the run directory."""
    import shutil

    from tunewise.rundir import RunDir, checkpoint_step, complete_checkpoint

    run = RunDir.of(run_root)
    for folder in run.checkpoints.glob("checkpoint-*"):
        if checkpoint_step(folder) is not None and folder.is_dir() and not complete_checkpoint(folder):
            shutil.rmtree(folder, ignore_errors=True)
    for folder in (run.root, run.data, run.checkpoints, run.eval):
        for tmp in folder.glob(".*.*") if folder.is_dir() else ():
            if tmp.name != run.lock.name:
                shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def process_alive(record: dict[str, Any]) -> bool | None:
    """Is the process that wrote an active record still running? False when no process has worked on it yet;
    None when that can't be told (another host)."""
    pid, host = record.get("pid"), (record.get("device") or {}).get("host")
    if not pid:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_alive(run_root: str | Path, record: dict[str, Any] | None = None) -> bool | None:
    """Is a process writing the run now? From its lock (RUN/run.lock, held until the writer dies); for a run
    without one, from the pid in run.json (None when that can't be told: another host)."""
    from tunewise.runlock import lock_holder

    try:
        return lock_holder(run_root) is not None
    except FileNotFoundError:
        return process_alive(record if record is not None else read_record(run_root))


def mark_interrupted(run_root: str | Path) -> dict[str, Any]:
    """run.json of the run, first set to ``interrupted`` when it says the run is active but no process writes it
    (the writer was killed): the error says what to do, ``checkpoint`` names the last complete checkpoint."""
    from tunewise.rundir import RunDir, last_checkpoint
    from tunewise.runlock import RunLocked, writing

    record = read_record(run_root)
    if record.get("status") not in ACTIVE or not record.get("pid") or writer_alive(run_root, record) is not False:
        return record  # not active, never started by a process, or its writer is alive (or can't be checked)
    try:
        with writing(run_root, "runs", wait_s=0.0, quiet=True):  # now the writer ourselves, for the moment
            record = read_record(run_root)
            if record.get("status") not in ACTIVE:
                return record
            run = RunDir.of(run_root)
            checkpoint = last_checkpoint(run.checkpoints, warn=False)
            stage = record.get("stage") or "run"
            what = (f"the {stage} process (pid {record.get('pid')}) stopped without finishing (killed, out of memory, or "
                    "the machine went down)")
            if checkpoint is not None:
                todo = f"{checkpoint.name} is complete: continue with `tunewise train {run.root} --resume`"
            elif stage == "prepare":
                todo = f"prepare the data again: `tunewise data prepare {run.config}`"
            else:
                todo = f"no checkpoint was saved: start again with `tunewise train {run.root}`"
            return update_record(run_root, status="interrupted", error=f"{what}; {todo}",
                                 checkpoint=checkpoint.name if checkpoint else None, interrupted_at=now_iso(),
                                 stages={stage: {"status": "interrupted"}})
    except RunLocked:  # a writer started meanwhile: it owns the record
        return read_record(run_root)
