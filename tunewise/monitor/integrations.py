"""TensorBoard and MLflow, offline, fed with the same records as metrics.jsonl (``monitor.report_to``).

Why not transformers' own TensorBoardCallback / MLflowCallback: the MLflow one is configured through process-wide
environment variables and mlflow's global "active run" state, so two runs in one process (tests, notebooks, a sweep)
can't point at two stores, and both would log the Trainer's raw keys rather than the records tunewise documents.
These two sinks are thin: a ``SummaryWriter`` and an explicit ``MlflowClient``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tunewise.monitor.metrics import number
from tunewise.rundir import RunDir

log = logging.getLogger(__name__)

_SKIP = {"kind", "step", "epoch", "time", "elapsed_s", "max_steps", "resumed"}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A train/eval record's numbers under TensorBoard-style names: ``train/loss``, ``eval/loss``, ``train/epoch``."""
    kind = record.get("kind")
    if kind not in ("train", "eval"):
        return {}
    out: dict[str, float] = {}
    for key, value in record.items():
        v = number(value)
        if key in _SKIP or v is None:
            continue
        name = key.removeprefix("eval_") if kind == "eval" else key
        out[f"{kind}/{name}"] = v
    if "epoch" in record:
        out[f"{kind}/epoch"] = float(record["epoch"])
    return out


def _missing(package: str, extra: str = "monitor") -> ImportError:
    return ImportError(
        f"monitor.report_to needs {package}: pip install 'tunewise[{extra}]' (or pip install {package}), "
        "or remove it from monitor.report_to"
    )


class TensorBoardSink:
    """Event files in RUN/tensorboard (``tensorboard --logdir runs`` shows every run)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch's writer needs the tensorboard package
            raise _missing("tensorboard") from exc
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def __call__(self, record: dict[str, Any]) -> None:
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, global_step=int(record["step"]))
        if record.get("kind") in ("warning", "error"):
            self.writer.add_text(f"{record['kind']}/{record.get('event', '')}", str(record.get("message", "")),
                                 global_step=int(record["step"]))
        self.writer.flush()

    def close(self, status: str = "succeeded") -> None:
        self.writer.close()


def default_tracking_uri(output_dir: str | Path) -> str:
    return Path(output_dir).resolve().joinpath("mlruns").as_uri()


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:500]
    return out


class MLflowSink:
    """One MLflow run per tunewise run (reattached on resume), metrics logged as they are written.

    A ``file:`` store needs ``MLFLOW_ALLOW_FILE_STORE=true`` with MLflow >= 3.7, which puts the file store in
    maintenance mode; it is set here (only when unset) because the file store is what works offline with
    mlflow-skinny. ``mlflow ui --backend-store-uri URI`` shows it.
    """

    _STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any],
                 run_id: str | None = None) -> None:
        if tracking_uri.startswith("file:") or "://" not in tracking_uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise _missing("mlflow-skinny") from exc
        self._Metric = Metric
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        if run_id:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags={"tunewise.run": run_name}).info.run_id
            items = [Param(k, v) for k, v in _flat(params).items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

    def __call__(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        if not values:
            return
        timestamp = int(float(record.get("time", 0)) * 1000)
        metrics = [self._Metric(name, value, timestamp, int(record["step"]))
                   for name, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def close(self, status: str = "succeeded") -> None:
        self.client.set_terminated(self.run_id, status=self._STATUS.get(status, "FINISHED"))


def build_sinks(config: Any, run_root: Path, *, mlflow_run_id: str | None = None) -> list[Any]:
    """The sinks ``config.monitor.report_to`` asks for."""
    sinks: list[Any] = []
    report_to = config.monitor.report_to
    if "tensorboard" in report_to:
        sinks.append(TensorBoardSink(RunDir.of(run_root).tensorboard))
    if "mlflow" in report_to:
        uri = config.monitor.mlflow_tracking_uri or default_tracking_uri(config.output_dir)
        sinks.append(MLflowSink(uri, config.monitor.mlflow_experiment, config.name,
                                params=config.model_dump(mode="json"), run_id=mlflow_run_id))
    return sinks
