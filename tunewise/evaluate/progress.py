"""Progress of an evaluation, shown as it runs: a bar in a terminal, a line every few seconds otherwise (a log file
or a pipe shows progress too, instead of nothing for minutes).

An evaluation makes several passes over the test rows (generating, ranking labels, the few-shot baseline); each
starts with :meth:`EvalProgress.phase`, and the callable counts the examples finished."""

from __future__ import annotations

import time
from typing import Any

LINE_INTERVAL_S = 5.0


class EvalProgress:
    """``progress(n)`` after ``n`` more examples; ``progress.phase(name, total)`` when a pass starts."""

    def __init__(self, console: Any, label: str = "", *, terminal: bool | None = None, interval: float = LINE_INTERVAL_S) -> None:
        self.console = console
        self.label = label
        self.terminal = console.is_terminal if terminal is None else terminal
        self.interval = interval
        self.name, self.total, self.done = "", 0, 0
        self.started = self.last = 0.0
        self._bar: Any = None
        self._task: Any = None

    def phase(self, name: str, total: int) -> None:
        self._finish()
        self.name, self.total, self.done = name, total, 0
        self.started = self.last = time.monotonic()
        if self.terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=self.console, transient=False)  # fmt: skip
            self._task = self._bar.add_task(self._title(), total=total)
            self._bar.start()
        else:
            self._line("started")

    def __call__(self, n: int) -> None:
        if not self.name:
            self.phase("evaluating", 0)
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
        elif time.monotonic() - self.last >= self.interval:
            self._line()

    def close(self) -> None:
        self._finish()
        self.name = ""

    def _title(self) -> str:
        return f"{self.label}: {self.name}" if self.label else self.name

    def _line(self, note: str = "") -> None:
        self.last = now = time.monotonic()
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        text = note or f"{self.done}/{self.total or '?'}{share}, {now - self.started:.0f} s"
        self.console.print(f"{self._title()}: {text}", highlight=False, markup=False)

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.name and self.done:
            self._line(f"{self.done}/{self.total or self.done} done in {time.monotonic() - self.started:.0f} s")

    def __enter__(self) -> "EvalProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
