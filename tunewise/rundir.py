"""The run directory: where every stage reads and writes (see DESIGN.md), and atomic writes into it.

This module is the only place a run directory's file names are spelled: stages ask :class:`RunDir` for a path (and
its readers for a split or a JSON file) instead of joining names of their own. A data folder (``RUN/data``, or any
folder ``tunewise data split`` writes) has its names here too (:func:`split_file` and friends)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

SPLITS = ("train", "val", "test")


def split_path(folder: str | Path, name: str) -> Path:
    """``folder/<name>.jsonl``: one split of a data folder (train, val, test)."""
    return Path(folder) / f"{name}.jsonl"


def rejects_file(folder: str | Path) -> Path:
    """``folder/rejects.jsonl``: every rejected row with its line and reason."""
    return Path(folder) / "rejects.jsonl"


def data_report_file(folder: str | Path) -> Path:
    """``folder/data_report.json``: counts, token statistics and rejects of a prepared data folder."""
    return Path(folder) / "data_report.json"


def predictions_file(folder: str | Path, model: str) -> Path:
    """``folder/predictions_<model>.jsonl``: one record per test example (an eval folder: RUN/eval or --out)."""
    return Path(folder) / f"predictions_{model}.jsonl"


def errors_file(folder: str | Path, model: str) -> Path:
    """``folder/errors_<model>.json``: the error analysis of one model (an eval folder)."""
    return Path(folder) / f"errors_{model}.json"


def metrics_file_of(predictions: Path) -> Path:
    """The ``metrics_<model>.json`` written beside a ``predictions_<model>.jsonl``."""
    return predictions.with_name("metrics_" + predictions.name.removeprefix("predictions_").removesuffix(".jsonl") + ".json")


def model_of(predictions: Path) -> str:
    """``<model>`` of a ``predictions_<model>.jsonl``."""
    return predictions.name.removeprefix("predictions_").removesuffix(".jsonl")


def prediction_files(folder: str | Path) -> dict[str, Path]:
    """{model: predictions file} of an eval folder, sorted by model name."""
    return {model_of(p): p for p in sorted(Path(folder).glob("predictions_*.jsonl"))}


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
    record = property(lambda self: self.root / "run.json")  # status, stages, hashes (tunewise/record.py)
    pipeline = property(lambda self: self.root / "pipeline.json")  # `tunewise run`: timings and headline numbers
    advice = property(lambda self: self.root / "advice.json")  # `tunewise advise`
    estimate = property(lambda self: self.root / "estimate.json")  # `tunewise estimate` / before training
    train_summary = property(lambda self: self.root / "train_summary.json")  # what training did (train/run.py)
    tensorboard = property(lambda self: self.root / "tensorboard")
    export = property(lambda self: self.root / "export")  # merged and quantized models, merge.json, quantize.json
    merge_report = property(lambda self: self.export / "merge.json")
    quantize_report = property(lambda self: self.export / "quantize.json")
    bench = property(lambda self: self.root / "bench")
    bench_report = property(lambda self: self.bench / "bench.json")
    fingerprint = property(lambda self: self.checkpoints / "fingerprint.json")  # what a resume must match
    rejects = property(lambda self: rejects_file(self.data))
    data_report = property(lambda self: data_report_file(self.data))
    comparison = property(lambda self: self.eval / "comparison.json")

    def split(self, name: str) -> Path:
        """RUN/data/<name>.jsonl (train, val, test)."""
        return split_path(self.data, name)

    def predictions(self, model: str) -> Path:
        """RUN/eval/predictions_<model>.jsonl."""
        return predictions_file(self.eval, model)

    def eval_metrics(self, model: str) -> Path:
        """RUN/eval/metrics_<model>.json."""
        return metrics_file_of(self.predictions(model))

    def errors(self, model: str) -> Path:
        """RUN/eval/errors_<model>.json (error analysis)."""
        return errors_file(self.eval, model)

    def plot(self, name: str) -> Path:
        """RUN/plots/<name>.png."""
        return self.plots / f"{name}.png"

    def read_json(self, path: Path, default: Any = None) -> Any:
        """A JSON file of this run (e.g. ``run.read_json(run.comparison)``); ``default`` when it is missing or torn."""
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return default

    def read_split(self, name: str) -> list[dict[str, Any]]:
        """The records of RUN/data/<name>.jsonl; FileNotFoundError says to prepare the data first."""
        path = self.split(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: prepare the data first: `tunewise data prepare CONFIG`")
        return read_jsonl(path)

    def last_checkpoint(self, warn: bool = False) -> Path | None:
        """The newest complete checkpoint-N in RUN/checkpoints (see :func:`last_checkpoint`)."""
        return last_checkpoint(self.checkpoints, warn=warn)

    def require(self, *parts: str, hint: str) -> Path:
        """The path ``root/parts...``; a missing one raises FileNotFoundError with ``hint`` (what to run first)."""
        path = self.root.joinpath(*parts)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {hint}")
        return path

    # the serving logs and the checklist's evidence (tunewise/checklist.py, tunewise/ui/)
    serve_logs = property(lambda self: self.root / "serve" / "logs")  # `tunewise serve RUN`'s default --log-dir
    abtest = property(lambda self: self.serve_logs / "abtest.json")  # `tunewise abtest RUN/serve/logs`
    feedback_log = property(lambda self: self.serve_logs / "feedback.jsonl")
    serve_errors_log = property(lambda self: self.serve_logs / "errors.jsonl")

    def eval_file(self, kind: str, model: str) -> Path:
        """RUN/eval/<kind>_<model>.json(l): kind is metrics, errors (json) or predictions (jsonl)."""
        return {"metrics": self.eval_metrics, "errors": self.errors, "predictions": self.predictions}[kind](model)


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
