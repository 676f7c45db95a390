"""The run directory: where every stage reads and writes (see DESIGN.md), and atomic writes into it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def of(cls, path: str | Path) -> "RunDir":
        return cls(Path(path))

    config = property(lambda self: self.root / "config.yaml")
    data = property(lambda self: self.root / "data")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    model = property(lambda self: self.root / "model")
    eval = property(lambda self: self.root / "eval")
    plots = property(lambda self: self.root / "plots")
    report = property(lambda self: self.root / "report.html")
    summary = property(lambda self: self.root / "summary.json")
    fsdp_config = property(lambda self: self.root / "fsdp_config.json")  # training.sharding: fsdp (what ran)
    deepspeed_config = property(lambda self: self.root / "deepspeed_config.json")  # sharding: zero2/zero3, or your file
    lock = property(lambda self: self.root / "run.lock")  # who writes the run now (tunewise/runlock.py)
    error_log = property(lambda self: self.root / "error.log")  # the traceback of the last unexpected failure

    def last_checkpoint(self, warn: bool = False) -> Path | None:
        """The newest complete checkpoint-N in RUN/checkpoints (see :func:`last_checkpoint`)."""
        return last_checkpoint(self.checkpoints, warn=warn)

    def require(self, *parts: str, hint: str) -> Path:
        """The path ``root/parts...``; a missing one raises FileNotFoundError with ``hint`` (what to run first)."""
        path = self.root.joinpath(*parts)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {hint}")
        return path

    # dashboard: the files the checklist (tunewise/checklist.py) and the dashboard (tunewise/ui/) read
    record = property(lambda self: self.root / "run.json")
    advice = property(lambda self: self.root / "advice.json")
    estimate = property(lambda self: self.root / "estimate.json")
    train_summary = property(lambda self: self.root / "train_summary.json")
    data_report = property(lambda self: self.data / "data_report.json")
    rejects = property(lambda self: self.data / "rejects.jsonl")
    comparison = property(lambda self: self.eval / "comparison.json")
    export = property(lambda self: self.root / "export")
    bench = property(lambda self: self.root / "bench" / "bench.json")
    serve_logs = property(lambda self: self.root / "serve" / "logs")  # `tunewise serve RUN`'s default --log-dir
    abtest = property(lambda self: self.serve_logs / "abtest.json")  # `tunewise abtest RUN/serve/logs`
    feedback_log = property(lambda self: self.serve_logs / "feedback.jsonl")
    serve_errors_log = property(lambda self: self.serve_logs / "errors.jsonl")

    def split(self, name: str) -> Path:
        """RUN/data/<name>.jsonl (train, val, test)."""
        return self.data / f"{name}.jsonl"

    def eval_file(self, kind: str, model: str) -> Path:
        """RUN/eval/<kind>_<model>.json(l): kind is metrics, errors (json) or predictions (jsonl)."""
        return self.eval / f"{kind}_{model}.{'jsonl' if kind == 'predictions' else 'json'}"


def checkpoint_step(folder: Path) -> int | None:
    """N of a ``checkpoint-N`` folder (None for any other name)."""
    tail = folder.name.rsplit("-", 1)[-1]
    return int(tail) if folder.name.startswith("checkpoint-") and tail.isdigit() else None


def complete_checkpoint(folder: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint without a readable one was cut off (killed)."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(checkpoints: Path, *, warn: bool = True) -> Path | None:
    """The newest complete checkpoint-N in ``checkpoints`` (an incomplete newer one is skipped, with a warning)."""
    import logging

    found = sorted((p for p in Path(checkpoints).glob("checkpoint-*") if checkpoint_step(p) is not None),
                   key=lambda p: checkpoint_step(p) or 0)
    for folder in reversed(found):
        if complete_checkpoint(folder):
            return folder
        if warn:
            logging.getLogger(__name__).warning("%s is incomplete (the run was stopped while saving it): skipping it",
                                                folder)
    return None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Files written into the yielded temporary folder appear in ``path`` together, when the block ends without an
    error: ``path`` is replaced by a folder with them and with the entries of the old ``path`` the block did not
    write (hard-linked, so a folder of the user's keeps its other files). On an error ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.is_dir():
            for entry in path.iterdir():
                if not (tmp / entry.name).exists() and not os.path.lexists(tmp / entry.name):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.copytree(entry, tmp / entry.name, symlinks=True, copy_function=_link_or_copy)
                    else:
                        _link_or_copy(str(entry), str(tmp / entry.name))
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _swap_in(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``: the old folder is renamed aside first and deleted after, so a crash leaves
    the old or the new folder (or, for an instant, none), never a half-deleted one."""
    if not path.exists():
        os.replace(new, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    os.rmdir(old)
    os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def process_rank() -> int:
    """This process's rank under torchrun / accelerate (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Only the main process writes the run's shared files (run.json, the model, the report)."""
    return process_rank() == 0
