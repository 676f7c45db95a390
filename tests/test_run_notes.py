"""What `tunewise run` and `tunewise eval` print: the estimate before training and the actual after it, and eval
progress as lines every few seconds when the output is not a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from tunewise.evaluate.progress import EvalProgress
from tunewise.pipeline import actual_line, estimate_line


def test_estimate_and_closing_note():
    estimate = {"time_s": 300, "peak_mb": 2048, "time_source": "calibration", "available_mb": 16384, "peak_mb_with_checkpointing": 900}
    assert estimate_line(estimate) == "estimate: training ~5.0 min, peak memory ~2.0 GB (calibration)"
    big = {**estimate, "peak_mb": 20000}
    assert estimate_line(big).endswith("more than the 16.0 GB available: training.gradient_checkpointing=true needs ~0.9 GB")
    train = {"train_time_s": 330, "peak_rss_mb": 2560}
    assert actual_line(estimate, train) == "training took 5.5 min, peak memory 2.5 GB (estimated 5.0 min, 2.0 GB)"
    assert actual_line(None, train) == "training took 5.5 min, peak memory 2.5 GB"


def test_progress_prints_lines_when_not_a_terminal(monkeypatch):
    out = io.StringIO()
    clock = iter(range(0, 1000, 3))  # every call to the clock moves 3 s
    monkeypatch.setattr("tunewise.evaluate.progress.time.monotonic", lambda: next(clock))
    progress = EvalProgress(Console(file=out, width=200), "base", terminal=False, interval=5)
    progress.phase("generating", 40)
    for _ in range(4):
        progress(10)
    progress.phase("ranking labels", 40)
    progress(40)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "base: generating: started"
    # not every call prints: only once 5 s have passed since the last line
    assert [l.split(",")[0] for l in lines[1:3]] == ["base: generating: 20/40 (50%)", "base: generating: 40/40 (100%)"]
    assert lines[3].startswith("base: generating: 40/40 done in") and lines[4] == "base: ranking labels: started"
    assert lines[-1].startswith("base: ranking labels: 40/40 done in") and len(lines) == 6
