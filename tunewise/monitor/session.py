"""Everything that watches one training run, wired for ``train_run``: metrics.jsonl + sinks (live view, TensorBoard,
MLflow, run.json progress), the guards, Ctrl-C handling, and at the end summary.json, plots and the printed summary.

Usage (tunewise/train/run.py)::

    session = MonitorSession(config, run, resume=resume)
    session.adjust_arguments(args)                    # the live view replaces the Trainer's tqdm bar
    trainer = TunewiseTrainer(..., callbacks=session.callbacks)
    session.attach(trainer)
    with session.watching(trainer):
        trainer.train(...)
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from transformers import TrainerCallback

from tunewise.monitor.guards import Guards, last_checkpoint_name
from tunewise.monitor.live import LiveView, resolve_mode
from tunewise.monitor.metrics import number
from tunewise.monitor.writer import MetricsWriter
from tunewise.monitor.summary import summarize_file
from tunewise.record import now_iso, read_record, update_record
from tunewise.rundir import RunDir, atomic_write_json, is_main_process

log = logging.getLogger(__name__)


class TrainingCancelled(KeyboardInterrupt):
    """Training was cancelled (Ctrl-C); the message says which checkpoint to resume from, ``checkpoint`` names it
    (None when none was saved; run.json records it as an interrupted run does)."""

    def __init__(self, message: str, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class Canceller(TrainerCallback):
    """The first Ctrl-C asks the Trainer to save a checkpoint and stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self.forced = False
        self.cancelled_step: int | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.requested and self.cancelled_step is None:
            control.should_save = True
            control.should_training_stop = True
            self.cancelled_step = state.global_step


class RecordProgress:
    """Sink that keeps run.json's ``progress`` (step, ETA, latest and best losses) current, at most every 2 s."""

    def __init__(self, run_root: Path, every_s: float = 2.0) -> None:
        self.run_root, self.every_s = run_root, every_s
        self.last = 0.0
        self.progress: dict[str, Any] = {}

    def __call__(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        p = self.progress
        p.update(step=record.get("step"), epoch=record.get("epoch"))
        if kind == "start":
            p["max_steps"] = record.get("max_steps")
        elif kind == "train":
            p["loss"] = number(record.get("loss"))
            eta = number(record.get("eta_s"))
            p["eta_s"], p["eta_at"] = eta, now_iso(time.time() + eta) if eta is not None else None
        elif kind == "eval":
            loss = number(record.get("eval_loss"))
            p["eval_loss"] = loss
            if loss is not None and (p.get("best_eval_loss") is None or loss < p["best_eval_loss"]):
                p["best_eval_loss"] = loss
        now = time.time()
        if kind in ("start", "eval", "error") or now - self.last >= self.every_s:
            self.flush()
            self.last = now

    def flush(self) -> None:
        if self.progress:
            update_record(self.run_root, progress=dict(self.progress))


class MonitorSession:
    def __init__(self, config: Any, run: RunDir, *, resume: bool = False, learning_rate: float | None = None) -> None:
        from tunewise.monitor.integrations import MLflowSink, build_sinks

        self.config, self.run = config, run
        self.mode = resolve_mode(config.monitor.live)
        self.live = LiveView(self.mode) if self.mode != "off" else None
        self.progress = RecordProgress(run.root)
        previous_mlflow = read_record(run.root).get("mlflow_run_id") if resume else None
        self.sinks = build_sinks(config, run.root, mlflow_run_id=previous_mlflow)
        for sink in self.sinks:
            if isinstance(sink, MLflowSink):
                update_record(run.root, mlflow_run_id=sink.run_id, mlflow_tracking_uri=sink.tracking_uri)
        self.writer = MetricsWriter(run.metrics, [*self.sinks, self.progress, *([self.live] if self.live else [])])
        self.guards = Guards(self.writer, config.monitor, learning_rate=learning_rate or config.training.learning_rate)
        self.guards.quiet = self.mode == "rich"
        self.canceller = Canceller()
        self.status = "running"
        self.summary: dict[str, Any] | None = None

    @property
    def callbacks(self) -> list[TrainerCallback]:
        """Order matters: the writer logs a record before the guards act on it; the canceller asks for a save
        before the guards make sure a log precedes every save."""
        return [self.writer, self.canceller, self.guards, *([self.live] if self.live else [])]

    def adjust_arguments(self, args: Any) -> None:
        if self.live is not None:
            args.disable_tqdm = True

    def attach(self, trainer: Any) -> None:
        from transformers.trainer_callback import PrinterCallback

        if self.live is not None:
            trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; the live view shows them instead

    def _install_sigint(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if self.canceller.requested:
                self.canceller.forced = True
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self.canceller.requested = True
            log.warning("Ctrl-C: stopping after this step and saving a checkpoint (press Ctrl-C again to stop now)")

        signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)

    def _checkpoint_on_interrupt(self, trainer: Any) -> str | None:
        """Save a resumable checkpoint after a KeyboardInterrupt, unless the user insisted (second Ctrl-C)."""
        step = trainer.state.global_step
        out = Path(trainer.args.output_dir)
        if self.canceller.forced or step == 0:
            return last_checkpoint_name(out)
        if not (out / f"checkpoint-{step}").exists():
            try:
                # Trainer has no public "save a resumable checkpoint now"; _save_checkpoint is what its loop calls
                trainer._save_checkpoint(trainer.model, trial=None)
            except Exception as exc:  # noqa: BLE001 - the interrupt matters more than the save
                log.warning("could not save a checkpoint at step %s: %s", step, exc)
        return last_checkpoint_name(out)

    def _cancel_message(self, checkpoint: str | None) -> str:
        if checkpoint:
            return (f"cancelled at step {self._step()}; {checkpoint} is saved: continue with "
                    f"`tunewise train {self.run.root} --resume`")
        return f"cancelled at step {self._step()} before any checkpoint was saved; start again with `tunewise train {self.run.root}`"

    def _step(self) -> int:
        state = self.writer.state
        return state.global_step if state is not None else 0

    @contextmanager
    def watching(self, trainer: Any) -> Iterator["MonitorSession"]:
        restore = self._install_sigint()
        try:
            with self.guards.watching_libraries():
                yield self
            if self.canceller.cancelled_step is not None:
                self.status = "cancelled"
                checkpoint = last_checkpoint_name(trainer.args.output_dir)
                raise TrainingCancelled(self._cancel_message(checkpoint), checkpoint)
            self.status = "succeeded"
        except TrainingCancelled as exc:
            self.status = "cancelled"
            log.warning("%s", exc)
            raise
        except KeyboardInterrupt:
            self.status = "cancelled"
            checkpoint = self._checkpoint_on_interrupt(trainer)
            message = self._cancel_message(checkpoint)
            log.warning("%s", message)
            raise TrainingCancelled(message, checkpoint) from None
        except BaseException:
            self.status = "failed"
            raise
        finally:
            restore()
            self.finish()

    def finish(self) -> None:
        """Close the view and sinks, write summary.json and the plots, print the summary. Never raises."""
        if self.live is not None:
            self.live.close()
        for sink in self.sinks:
            try:
                sink.close(self.status)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing %s failed: %s", type(sink).__name__, exc)
        self.progress.flush()
        if not is_main_process():  # under torchrun, rank 0 writes and prints for everyone
            return
        try:
            self.summary = {"status": self.status, **summarize_file(self.run.metrics)}
            atomic_write_json(self.run.summary, self.summary)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not write %s: %s", self.run.summary, exc)
        if self.config.monitor.plots:
            try:
                from tunewise.monitor.plots import write_plots

                write_plots(self.run.metrics, self.run.plots)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not write plots: %s", exc)
        if self.live is not None and self.summary is not None:
            self.live.print_summary(self.summary, self.status)
