"""The monitor on real (tiny, few-step) training runs: metrics schema, run record through success / failure /
cancellation and resume, the guards with injected faults, TensorBoard and MLflow output, `tunewise monitor`."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from tests.conftest import reversal_rows
from tunewise import pipeline
from tunewise.config import config_from_dict
from tunewise.monitor.guards import TrainingStopped
from tunewise.monitor.metrics import read_metrics, validate_record
from tunewise.record import read_record
from tunewise.monitor.session import TrainingCancelled
from tunewise.train.run import train_run


@pytest.fixture(scope="module")
def model_dir(tiny_dir: Path) -> Path:
    return tiny_dir


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("monitor_data") / "reverse.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(60, seed=3)))
    return path


def make_run(tmp: Path, model_dir: Path, data_file: Path, name: str, training: dict[str, Any] | None = None,
             monitor: dict[str, Any] | None = None) -> Any:
    config = config_from_dict({
        "name": name, "output_dir": str(tmp / "runs"), "model": str(model_dir), "method": "full",
        "data": {"path": str(data_file), "split": {"train": 0.7, "val": 0.2, "test": 0.1}},
        "training": {"max_steps": 6, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
                     "logging_steps": 1, "eval_steps": 3, "save_steps": 3, "learning_rate": 1e-3,
                     "group_by_length": False, **(training or {})},
        "monitor": {"plots": False, **(monitor or {})},
    })
    run = pipeline.init_run(config)
    pipeline.prepare_stage(config, run)
    return config, run


class LogitsFault(TrainerCallback):
    """Multiplies the model's output logits by ``factor`` during optimizer step ``step`` (1-based): NaN or a spike."""

    def __init__(self, step: int, factor: float) -> None:
        self.step, self.factor, self.handle = step, factor, None

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step + 1 == self.step:
            head = model.get_output_embeddings()
            self.handle = head.register_forward_hook(lambda module, inputs, output: output * self.factor)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class Interrupt(TrainerCallback):
    """Simulates Ctrl-C at the end of step ``step``: a KeyboardInterrupt, or a real SIGINT to this process."""

    def __init__(self, step: int, how: str = "raise") -> None:
        self.step, self.how = step, how

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            if self.how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, data_file: Path) -> Any:
    tmp = tmp_path_factory.mktemp("good")
    config, run = make_run(tmp, model_dir, data_file, "good", monitor={"report_to": ["tensorboard", "mlflow"],
                                                                         "plots": True})
    assert read_record(run.root)["status"] == "queued"
    result = train_run(config, run.root)
    return config, run, result


def test_metrics_schema_and_stream(good_run: Any) -> None:
    config, run, _ = good_run
    records = read_metrics(run.metrics)
    for record in records:
        assert validate_record(record) == [], record
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "start" and kinds.count("train") == 6 and kinds.count("eval") == 2 and kinds[-1] == "summary"
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    for r in train:
        assert r["loss"] > 0 and r["learning_rate"] > 0 and r["grad_norm"] >= 0
        assert r["trained_tokens"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["eta_s"] >= 0
    assert train[-1]["eta_s"] == 0
    assert all(r["eval_loss"] > 0 for r in records if r["kind"] == "eval")


def test_run_record_and_summary_after_success(good_run: Any) -> None:
    config, run, result = good_run
    record = read_record(run.root)
    assert record["status"] == "succeeded" and record["error"] is None
    for key in ("created_at", "started_at", "finished_at", "config_sha256", "seed", "versions", "device"):
        assert record[key], key
    assert set(record["data_sha256"]) == {"train.jsonl", "val.jsonl", "test.jsonl"}
    assert {"python", "torch", "transformers", "peft", "tunewise"} <= set(record["versions"])
    assert record["device"]["device"] in ("cpu", "cuda")
    assert record["progress"]["step"] == 6 and record["progress"]["best_eval_loss"] > 0
    assert record["stages"]["prepare"]["status"] == "succeeded" and record["stages"]["train"]["status"] == "succeeded"

    summary = json.loads(run.summary.read_text())
    assert summary["status"] == "succeeded" and summary["steps"] == 6 and summary["epochs"] > 0
    assert summary["min_train_loss"] <= summary["final_train_loss"]
    assert summary["min_eval_loss"] <= summary["final_eval_loss"] and summary["best_step"] in (3, 6)
    assert summary["total_time_s"] > 0 and summary["trained_tokens"] == result["trained_tokens"]
    assert summary["peak_memory_mb"]["peak_rss_mb"] > 0 and summary["stopped"] is None
    assert {"loss.png", "lr.png", "grad_norm.png", "memory.png", "throughput.png"} <= {
        p.name for p in run.plots.glob("*.png")}


def test_tensorboard_event_files(good_run: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run, _ = good_run
    events = EventAccumulator(str(run.root / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "eval/loss"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("eval/loss")] == [3, 6]


def test_mlflow_run_has_the_metrics(good_run: Any) -> None:
    from mlflow.tracking import MlflowClient

    config, run, _ = good_run
    record = read_record(run.root)
    uri = record["mlflow_tracking_uri"]
    assert uri.startswith("file:") and (Path(config.output_dir) / "mlruns").is_dir()
    client = MlflowClient(tracking_uri=uri)
    mlrun = client.get_run(record["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "good"
    assert mlrun.data.params["training.max_steps"] == "6"
    history = client.get_metric_history(mlrun.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    losses = {r["step"]: r["loss"] for r in read_metrics(run.metrics) if r["kind"] == "train"}
    assert all(math.isclose(m.value, losses[m.step], rel_tol=1e-6) for m in history)
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "eval/loss")] == [3, 6]


def test_monitor_command_shows_a_finished_run(good_run: Any) -> None:
    from typer.testing import CliRunner

    from tunewise.cli import app

    _, run, _ = good_run
    result = CliRunner().invoke(app, ["monitor", str(run.root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output and "step 6/6" in result.output and "best eval" in result.output
    assert "train loss (final / min)" in result.output
    result = CliRunner().invoke(app, ["runs", str(run.root.parent)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "good" in result.output and "succeeded" in result.output


def test_report_embeds_plots_and_status(good_run: Any) -> None:
    from tunewise.report.html import build_report

    _, run, _ = good_run
    html = build_report(run.root).read_text()
    assert "Run status: <b>succeeded</b>" in html and "best eval loss" in html
    assert html.count("data:image/png;base64") >= 5


def test_monitor_follows_a_run_in_progress(tmp_path: Path) -> None:
    import threading
    import time

    from typer.testing import CliRunner

    from tunewise.cli import app
    from tunewise.record import device_info, update_record

    run = tmp_path / "live"
    run.mkdir()
    update_record(run, name="live", status="running", pid=os.getpid(), device=device_info())
    metrics = run / "metrics.jsonl"
    metrics.write_text(json.dumps({"kind": "start", "step": 0, "epoch": 0, "time": 0, "elapsed_s": 0,
                                   "max_steps": 4, "resumed": False}) + "\n")

    def trainer() -> None:  # another process's training, appending records, then finishing
        for step in (1, 2, 3, 4):
            time.sleep(0.15)
            with metrics.open("a") as f:
                f.write(json.dumps({"kind": "train", "step": step, "epoch": step / 4, "time": step, "elapsed_s": step,
                                    "loss": 3.0 - 0.5 * step, "learning_rate": 1e-3}) + "\n")
        update_record(run, status="succeeded")

    thread = threading.Thread(target=trainer)
    thread.start()
    result = CliRunner().invoke(app, ["monitor", str(run), "--interval", "0.05"], env={"COLUMNS": "200"})
    thread.join()
    assert result.exit_code == 0, result.output
    for step in (1, 2, 3, 4):
        assert f"step {step}/4" in result.output
    assert "succeeded" in result.output and "1 / 1" in result.output  # final / min train loss in the summary


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path, model_dir: Path,
                                                                   data_file: Path) -> None:
    from safetensors.torch import load_file

    config, run = make_run(tmp_path, model_dir, data_file, "nan", training={"save_steps": 2, "eval_steps": 100})
    with pytest.raises(TrainingStopped, match="step 5") as caught:
        train_run(config, run.root, callbacks=[LogitsFault(step=5, factor=float("nan"))])
    message = str(caught.value)
    assert "NaN" in message and "checkpoint-4" in message and "learning_rate" in message
    assert sorted(p.name for p in run.checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    weights = load_file(str(run.checkpoints / "checkpoint-4" / "model.safetensors"))
    assert all(bool(t.isfinite().all()) for t in weights.values())
    assert not run.model.exists()
    record = read_record(run.root)
    assert record["status"] == "failed" and "step 5" in record["error"] and record["finished_at"]
    errors = [r for r in read_metrics(run.metrics) if r["kind"] == "error"]
    assert errors and errors[0]["event"] == "nan" and errors[0]["step"] == 4
    summary = json.loads(run.summary.read_text())
    assert summary["status"] == "failed" and summary["stopped"]["reason"] == "nan"


def test_loss_spike_is_a_warning(tmp_path: Path, model_dir: Path, data_file: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    config, run = make_run(tmp_path, model_dir, data_file, "spike", training={"max_steps": 7, "eval_steps": 100},
                           monitor={"max_grad_norm_limit": None})
    train_run(config, run.root, callbacks=[LogitsFault(step=6, factor=100.0)])
    warnings = [r for r in read_metrics(run.metrics) if r["kind"] == "warning"]
    assert [(w["event"], w["step"]) for w in warnings] == [("loss_spike", 6)]
    assert "loss spike at step 6" in caplog.text
    assert read_record(run.root)["status"] == "succeeded"


def test_exploding_grad_norm_stops_the_run(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    config, run = make_run(tmp_path, model_dir, data_file, "explode", training={"eval_steps": 100},
                           monitor={"max_grad_norm_limit": 500})
    with pytest.raises(TrainingStopped, match=r"step 5: the gradient norm exploded to [0-9.e+]+ \(limit monitor.max_grad_norm_limit=500\)"):
        train_run(config, run.root, callbacks=[LogitsFault(step=5, factor=1000.0)])
    assert sorted(p.name for p in run.checkpoints.glob("checkpoint-*")) == ["checkpoint-3"]
    assert read_record(run.root)["status"] == "failed"


class RisingEval(TrainerCallback):
    """Rewrites the logs so train loss falls while eval loss rises after the first evaluation."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if "loss" in logs:
            logs["loss"] = 5.0 - 0.1 * state.global_step
        if "eval_loss" in logs:
            logs["eval_loss"] = 2.0 + 0.1 * state.global_step


def test_overfitting_with_early_stopping_stops_the_run(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    config, run = make_run(tmp_path, model_dir, data_file, "overfit",
                           training={"max_steps": 20, "eval_steps": 2, "save_steps": 100},
                           monitor={"overfit_patience": 2, "early_stopping": True})
    result = train_run(config, run.root, callbacks=[RisingEval()])
    assert result["steps"] == 6  # evals at 2 (best), 4, 6: two bad evaluations in a row
    warnings = [r for r in read_metrics(run.metrics) if r["kind"] == "warning"]
    assert [(w["event"], w["step"], w.get("stop")) for w in warnings] == [("overfitting", 6, True)]
    summary = json.loads(run.summary.read_text())
    assert summary["stopped"]["reason"] == "early_stopping" and summary["stopped"]["step"] == 6
    assert read_record(run.root)["status"] == "succeeded" and run.model.is_dir()


def test_ctrl_c_cancels_with_a_checkpoint_and_resume_finishes(tmp_path: Path, model_dir: Path,
                                                              data_file: Path) -> None:
    config, run = make_run(tmp_path, model_dir, data_file, "cancel", training={"save_steps": 100})
    with pytest.raises(TrainingCancelled, match="checkpoint-4 is saved"):
        train_run(config, run.root, callbacks=[Interrupt(step=4)])
    record = read_record(run.root)
    assert record["status"] == "cancelled" and "--resume" in record["error"]
    assert (run.checkpoints / "checkpoint-4" / "trainer_state.json").is_file() and not run.model.exists()
    assert json.loads(run.summary.read_text())["status"] == "cancelled"

    result = train_run(config, run.root, resume=True)
    assert result["steps"] == 6 and result["resumed_from"] == "checkpoint-4"
    record = read_record(run.root)
    assert record["status"] == "succeeded" and record["error"] is None
    summary = json.loads(run.summary.read_text())
    assert summary["steps"] == 6 and summary["sessions"] == 2
    train_steps = [r["step"] for r in read_metrics(run.metrics) if r["kind"] == "train"]
    # step 4 was interrupted between its optimizer step and its log: trained and checkpointed, never logged
    assert train_steps == [1, 2, 3, 5, 6]


def test_sigint_stops_after_the_step_and_saves(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    config, run = make_run(tmp_path, model_dir, data_file, "sigint", training={"save_steps": 100, "eval_steps": 100})
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    with pytest.raises(TrainingCancelled, match="cancelled at step 2"):
        train_run(config, run.root, callbacks=[Interrupt(step=2, how="signal")])
    assert (run.checkpoints / "checkpoint-2").is_dir()
    assert read_record(run.root)["status"] == "cancelled"
    assert signal.getsignal(signal.SIGINT) == before  # restored


def test_failure_before_training_is_recorded(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    config = config_from_dict({"name": "nodata", "output_dir": str(tmp_path), "model": str(model_dir)})
    run = pipeline.init_run(config)
    assert read_record(run.root)["status"] == "validating"
    with pytest.raises(FileNotFoundError):
        train_run(config, run.root)
    record = read_record(run.root)
    assert record["status"] == "failed" and "prepare the data first" in record["error"]


def test_pipeline_run_record_and_runs_listing(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    from tunewise.monitor.runs import list_runs

    config = config_from_dict({
        "name": "pipe", "output_dir": str(tmp_path / "runs"), "model": str(model_dir), "method": "full",
        "data": {"path": str(data_file)},
        "training": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "eval_steps": 2},
        "eval": {"max_examples": 3, "max_new_tokens": 3, "metrics": ["exact_match"]},
        "monitor": {"plots": False},
    })
    pipeline.run_all(config, notify=lambda message: None)
    record = read_record(config.run_dir)
    assert record["status"] == "succeeded" and record["stage"] == "report"
    assert {name: s["status"] for name, s in record["stages"].items()} == {
        "prepare": "succeeded", "eval base": "succeeded", "estimate": "succeeded", "train": "succeeded", "eval tuned": "succeeded",
        "compare": "succeeded", "report": "succeeded", "pipeline": "succeeded"}
    (row,) = list_runs(tmp_path / "runs")
    assert row["status"] == "succeeded" and row["main_metric"] == "exact_match"
    assert row["main_metric_value"] is not None and row["best_eval_loss"] > 0
