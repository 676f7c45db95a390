"""Following a run from another process: new metrics.jsonl records as they are appended, until the run ends."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from tunewise.record import ACTIVE, process_alive, read_record


class MetricsTail:
    """Reads the complete lines appended to a metrics.jsonl since the last call (a half-written line waits)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.pending = b""

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        if self.path.stat().st_size < self.offset:  # the file was replaced (a fresh run): start over
            self.offset, self.pending = 0, b""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def run_is_active(run_root: str | Path) -> bool:
    """run.json says the run is in progress, and (when it can be told) its process is still alive."""
    record = read_record(run_root)
    return record.get("status") in ACTIVE and process_alive(record) is not False


def follow(
    run_root: str | Path,
    *,
    interval: float = 1.0,
    active: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[dict[str, Any]]]:
    """Yield batches of new records (the first batch is everything so far) every ``interval`` seconds while the run
    is active; the last batch is read after it ends."""
    tail = MetricsTail(Path(run_root) / "metrics.jsonl")
    active = active or (lambda: run_is_active(run_root))
    while True:
        still = active()
        yield tail.read()
        if not still:
            return
        sleep(interval)
