"""Monitor pieces that need no training: schema validation, resume stitching, summary, guards' rules, plots, the
run record, following a file, the live view's plain lines and `tunewise runs`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tunewise.monitor.follow import MetricsTail, follow
from tunewise.monitor.guards import OverfitWatch, SpikeWatch
from tunewise.monitor.live import LiveView, resolve_mode
from tunewise.monitor.metrics import effective_records, validate_record
from tunewise.record import read_record, tracked, update_record
from tunewise.monitor.runs import list_runs
from tunewise.monitor.summary import summarize


def _rec(kind: str, step: int, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "step": step, "epoch": step / 10, "time": 1000.0 + step, "elapsed_s": float(step), **fields}


def _train(step: int, loss: float, **fields: Any) -> dict[str, Any]:
    return _rec("train", step, loss=loss, learning_rate=1e-3, grad_norm=0.5, trained_tokens=100 * step,
                tokens_per_s=100.0, peak_rss_mb=500.0 + step, **fields)


def test_validate_record_flags_missing_fields_and_unknown_kinds() -> None:
    assert validate_record(_train(1, 2.0)) == []
    assert validate_record({"kind": "bogus"}) == ["unknown kind 'bogus'"]
    problems = validate_record(_rec("eval", 3))
    assert "eval: missing eval_loss" in problems


def test_resume_drops_thrown_away_steps_and_summary_stitches_sessions() -> None:
    records = [
        _rec("start", 0, max_steps=6, resumed=False),
        _train(1, 3.0), _train(2, 2.5), _rec("eval", 2, eval_loss=2.7, peak_rss_mb=510.0),
        _train(3, 2.4), _train(4, 9.0),  # steps 3-4 were lost: the resume starts from checkpoint-2
        _rec("start", 2, max_steps=6, resumed=True),
        {**_train(3, 2.2), "elapsed_s": 1.0, "trained_tokens": 100},
        {**_train(6, 2.0), "elapsed_s": 4.0, "trained_tokens": 400},
        _rec("eval", 6, eval_loss=2.6, peak_rss_mb=700.0, elapsed_s=5.0),
    ]
    kept = effective_records(records)
    assert [r["loss"] for r in kept if r["kind"] == "train"] == [3.0, 2.5, 2.2, 2.0]
    s = summarize(records)
    assert s["steps"] == 6 and s["sessions"] == 2
    assert s["final_train_loss"] == 2.0 and s["min_train_loss"] == 2.0
    assert s["min_eval_loss"] == 2.6 and s["best_step"] == 6 and s["final_eval_loss"] == 2.6
    assert s["total_time_s"] == pytest.approx(4.0 + 5.0)  # first session ran 4 s, the resumed one 5 s
    assert s["trained_tokens"] == 400 + 400
    assert s["peak_memory_mb"]["peak_rss_mb"] == 700.0


def test_spike_watch() -> None:
    watch = SpikeWatch(factor=2.0, window=5)
    assert [watch.update(x) for x in (3.0, 2.9, 2.8)] == [None, None, None]  # too little history
    assert watch.update(2.7) is None
    assert watch.update(9.0) == pytest.approx(2.85)


def test_overfit_watch_needs_eval_up_and_train_down_for_patience_evals() -> None:
    watch = OverfitWatch(patience=2)

    def step(train: float, eval_loss: float, n: int) -> bool:
        watch.train_loss(train)
        return watch.eval_loss(eval_loss, n)

    assert not step(3.0, 2.0, 1)  # best
    assert not step(2.5, 2.1, 2)  # worse once
    assert step(2.0, 2.2, 3)  # worse twice while train fell: overfitting
    watch2 = OverfitWatch(patience=2)
    watch2.train_loss(3.0), watch2.eval_loss(2.0, 1)
    watch2.train_loss(3.5), watch2.eval_loss(2.1, 2)  # train rose too: underfitting/noise, not overfitting
    watch2.train_loss(3.6)
    assert not watch2.eval_loss(2.2, 3)


def test_plots_written_from_metrics(tmp_path: Path) -> None:
    from tunewise.monitor.plots import write_plots

    path = tmp_path / "metrics.jsonl"
    records = [_rec("start", 0, max_steps=20, resumed=False)]
    records += [_train(i, 3.0 / i) for i in range(1, 21)]
    records += [_rec("eval", i, eval_loss=2.0 / i, peak_rss_mb=520.0) for i in (5, 10, 15, 20)]
    records.append(_train(21, float("nan")))
    path.write_text("".join(json.dumps({k: (str(v) if v != v else v) for k, v in r.items()}) + "\n" for r in records))
    written = {p.name for p in write_plots(path, tmp_path / "plots")}
    assert {"loss.png", "lr.png", "grad_norm.png", "memory.png", "throughput.png"} <= written
    for name in written:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tracked_records_success_failure_and_cancel(tmp_path: Path) -> None:
    with tracked(tmp_path, "pipeline"):
        with tracked(tmp_path, "prepare", status="validating", done_status="queued"):
            assert read_record(tmp_path)["status"] == "validating"
        assert read_record(tmp_path)["status"] == "queued"
        with tracked(tmp_path, "train"):
            assert read_record(tmp_path)["status"] == "running"
        assert read_record(tmp_path)["status"] == "running"  # the pipeline, not the stage, decides success
    record = read_record(tmp_path)
    assert record["status"] == "succeeded" and record["finished_at"] and record["stages"]["train"]["status"] == "succeeded"

    with pytest.raises(ValueError), tracked(tmp_path, "pipeline"):
        with tracked(tmp_path, "eval tuned"):
            raise ValueError("boom")
    record = read_record(tmp_path)
    assert record["status"] == "failed" and record["error"] == "eval tuned: ValueError: boom"

    with pytest.raises(KeyboardInterrupt), tracked(tmp_path, "train"):
        raise KeyboardInterrupt("cancelled at step 3")
    record = read_record(tmp_path)
    assert record["status"] == "cancelled" and record["error"] == "cancelled at step 3"


def test_metrics_tail_waits_for_complete_lines_and_follow_stops(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []
    path.write_text(json.dumps(_train(1, 2.0)) + "\n" + '{"kind": "tr')
    assert [r["step"] for r in tail.read()] == [1]
    with path.open("a") as f:
        f.write('ain", "step": 2}\n')
    assert tail.read() == [{"kind": "train", "step": 2}]

    states = iter([True, True, False])
    appended = iter([_train(3, 1.0), _train(4, 0.9)])

    def sleep(_: float) -> None:
        with path.open("a") as f:
            f.write(json.dumps(next(appended)) + "\n")

    batches = list(follow(tmp_path, active=lambda: next(states), sleep=sleep))
    assert [[r["step"] for r in b] for b in batches] == [[1, 2], [3], [4]]


def test_live_view_plain_lines(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_mode("auto", stream=open("/dev/null")) == "plain"
    assert resolve_mode("rich") == "rich"
    view = LiveView("plain")
    with caplog.at_level(logging.INFO, logger="tunewise.monitor"):
        view(_rec("start", 0, max_steps=10, resumed=False))
        view(_train(2, 2.5, eta_s=65.0))
        view(_rec("eval", 2, eval_loss=2.7, peak_rss_mb=510.0))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("step 2/10") and "loss 2.5000" in lines[0] and "lr 1.00e-03" in lines[0]
    assert "eta 1m 05s" in lines[0] and "rss 502 MiB" in lines[0]
    assert lines[1] == "eval  step 2  eval loss 2.7000  (best 2.7000 @ 2)"


def _fake_run(root: Path, name: str, status: str, created: str, comparison: dict[str, Any] | None = None,
              summary: dict[str, Any] | None = None) -> None:
    run = root / name
    run.mkdir(parents=True)
    update_record(run, name=name, status=status, method="lora", model="tiny", created_at=created)
    if summary:
        (run / "summary.json").write_text(json.dumps(summary))
    if comparison:
        (run / "eval").mkdir()
        (run / "eval" / "comparison.json").write_text(json.dumps(comparison))


def test_list_runs_and_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tunewise.cli import app

    comparison = {"main_metric": "exact_match", "models": ["base", "tuned"],
                  "metrics": {"exact_match": {"values": {"base": 0.1, "tuned": 0.85}}}}
    _fake_run(tmp_path, "good", "succeeded", "2026-01-02T00:00:00Z", comparison, {"min_eval_loss": 0.42, "steps": 50})
    _fake_run(tmp_path, "broken", "failed", "2026-01-03T00:00:00Z")
    (tmp_path / "mlruns").mkdir()  # not a run
    rows = list_runs(tmp_path)
    assert [r["name"] for r in rows] == ["broken", "good"]
    good = rows[1]
    assert (good["status"], good["best_eval_loss"], good["main_metric"], good["main_metric_value"]) == (
        "succeeded", 0.42, "exact_match", 0.85)

    result = CliRunner().invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "good" in result.output and "exact_match 0.850 (base 0.100)" in result.output and "0.4200" in result.output
    assert "failed" in result.output
    result = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
    assert json.loads(result.output)[1]["main_metric_value"] == 0.85
    result = CliRunner().invoke(app, ["runs", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a directory" in " ".join(result.output.split())
