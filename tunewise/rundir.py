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

    def require(self, *parts: str, hint: str) -> Path:
        """The path ``root/parts...``; a missing one raises FileNotFoundError with ``hint`` (what to run first)."""
        path = self.root.joinpath(*parts)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {hint}")
        return path


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
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def process_rank() -> int:
    """This process's rank under torchrun / accelerate (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Only the main process writes the run's shared files (run.json, the model, the report)."""
    return process_rank() == 0
