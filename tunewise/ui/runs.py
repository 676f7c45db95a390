"""The dashboard's view of a folder of runs: the rows of `tunewise runs` with checklist progress, cached per run and
recomputed only when one of the files they come from changes (mtime and size), or while the run is active.

Everything is read through the CLI's own readers: :func:`tunewise.monitor.runs.run_row` (the `tunewise runs` row),
:func:`tunewise.checklist.evaluate` and :class:`tunewise.monitor.follow.MetricsTail` (metrics.jsonl).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tunewise.record import ACTIVE
from tunewise.rundir import RunDir


def _watched(run: RunDir) -> tuple[Path, ...]:
    """The files a row and its checklist progress are computed from."""
    return (run.config, run.record, run.summary, run.advice, run.estimate, run.data_report, run.metrics,
            run.comparison, run.eval_file("metrics", "tuned"), run.eval_file("errors", "tuned"), run.bench_report,
            run.export / "merge.json", run.export / "quantize.json", run.abtest, run.feedback_log, run.model)


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, -1))
    return tuple(out)


class RunIndex:
    """Rows of every run directly under ``folder`` (newest first); thread-safe, cached per run."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, tuple[tuple[tuple[int, int], ...], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        """The run directory called ``name``; FileNotFoundError for a name that is not a run here."""
        from tunewise.monitor.runs import is_run_dir

        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise FileNotFoundError(f"{name!r} is not a run name")
        path = self.folder / name
        if not is_run_dir(path):
            raise FileNotFoundError(f"no run {name!r} in {self.folder}")
        return path

    def row(self, path: Path) -> dict[str, Any]:
        from tunewise.checklist import DONE, NA, evaluate
        from tunewise.monitor.runs import run_row

        run = RunDir.of(path)
        stamp = _stamp(_watched(run))
        with self._lock:
            cached = self._cache.get(path.name)
        if cached and cached[0] == stamp and cached[1]["status"] not in ACTIVE:
            return cached[1]
        row = run_row(path)
        findings = evaluate(path)
        row["checklist_done"] = sum(f.status == DONE for _, f in findings)
        row["checklist_total"] = sum(f.status != NA for _, f in findings)
        row["checklist_flags"] = sum(f.flag is not None for _, f in findings)
        with self._lock:
            self._cache[path.name] = (_stamp(_watched(run)), row)  # after run_row: it may have marked the run interrupted
        return row

    def rows(self) -> list[dict[str, Any]]:
        from tunewise.monitor.runs import is_run_dir

        if not self.folder.is_dir():
            return []
        rows = [self.row(p) for p in self.folder.iterdir() if is_run_dir(p)]
        return sorted(rows, key=lambda r: (r["created_at"] or "", r["name"]), reverse=True)


def warnings_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The guards' findings in metrics.jsonl (warning and error records)."""
    return [{k: r.get(k) for k in ("kind", "event", "step", "message")} for r in records if r.get("kind") in ("warning", "error")]
