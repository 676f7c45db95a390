"""Guards that watch a run: NaN/inf loss and exploding gradients stop it, a loss spike warns, overfitting warns (and,
with early stopping on, stops it), and a library's warning that results may be silently incorrect (torch's "autograd
kernel was not registered ... silently incorrect behavior", and the like from bitsandbytes or peft) becomes a guard
warning; for a quantized base the gradient check (tunewise/train/verify_quantized.py) runs again then, and a failed
check stops the run.

The NaN guard checks the gradients of every optimizer step *before* the optimizer applies them (the Trainer's
``on_pre_optimizer_step``), so the weights, and any checkpoint saved later, never hold a NaN: the run stops with the
last good checkpoint in place. A NaN loss always gives NaN gradients, and the Trainer replaces a NaN loss by the
running average in its logs (``logging_nan_inf_filter``), so the gradients are where it shows.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import warnings
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from transformers import TrainerCallback

from tunewise.monitor.metrics import number
from tunewise.monitor.writer import MetricsWriter

log = logging.getLogger(__name__)


class TrainingStopped(ValueError):
    """A guard stopped the run; the message names the step and what to try. (A ValueError, so the CLI shows it as
    one line rather than a traceback.)"""


def last_checkpoint_name(output_dir: str | Path) -> str | None:
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])).name if found else None


class SpikeWatch:
    """A logged train loss above ``factor`` x the median of the previous ``window`` logged losses is a spike."""

    def __init__(self, factor: float = 2.0, window: int = 10) -> None:
        self.factor = factor
        self.recent: deque[float] = deque(maxlen=window)

    def update(self, loss: float) -> float | None:
        """Record ``loss``; return the median it spiked above, or None."""
        median = statistics.median(self.recent) if len(self.recent) >= 3 else None
        self.recent.append(loss)
        return median if median is not None and loss > self.factor * median else None


class OverfitWatch:
    """Overfitting: for ``patience`` evaluations in a row, eval loss stayed above its best while the train loss
    (mean of the train logs since the previous evaluation) fell below what it was at that best evaluation."""

    def __init__(self, patience: int = 3) -> None:
        self.patience = patience
        self.best: tuple[float, float | None, int] | None = None  # (eval loss, train loss then, step)
        self.bad = 0
        self._train: list[float] = []
        self._last_train: float | None = None

    def train_loss(self, loss: float) -> None:
        self._train.append(loss)

    def eval_loss(self, loss: float, step: int) -> bool:
        """Record an evaluation; True when this one completes ``patience`` bad evaluations in a row."""
        train = statistics.fmean(self._train) if self._train else self._last_train
        self._last_train, self._train = train, []
        if self.best is None or loss < self.best[0]:
            self.best, self.bad = (loss, train, step), 0
            return False
        best_train = self.best[1]
        if train is not None and best_train is not None and train < best_train:
            self.bad += 1
        else:
            self.bad = 0
        return self.bad == self.patience


def grads_finite(model: Any, parameters: list[torch.Tensor] | None = None) -> bool:
    """True when every gradient is finite (``parameters``: the trainable ones, listed once by the caller)."""
    grads = [p.grad for p in (parameters if parameters is not None else model.parameters()) if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


# what libraries say when a result may be wrong without an error: torch's autograd fallback ("an autograd kernel was
# not registered ... This may lead to silently incorrect behavior"), "incorrect results/gradients" notes, and the
# like. Deprecations and performance notes do not match.
INCORRECT_RESULTS = re.compile(
    r"silently incorrect|incorrect (?:result|behaviou?r|gradient|output)s?|wrong (?:result|gradient|output)s?|"
    r"autograd kernel was not registered|gradients? (?:will|may|might) (?:be )?(?:wrong|incorrect|not be computed)",
    re.IGNORECASE,
)


class LibraryWarnings:
    """Collects, while :meth:`capturing`, the Python warnings whose text matches :data:`INCORRECT_RESULTS` (each text
    once); every other warning goes on to be shown as usual. Such a warning is shown every time within the block
    (Python's default shows a warning once per code location, so a repeat would be missed)."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.seen: set[str] = set()

    @contextmanager
    def capturing(self) -> Iterator["LibraryWarnings"]:
        with warnings.catch_warnings():
            shown = warnings.showwarning
            warnings.filterwarnings("always", message=r"(?s).*(" + INCORRECT_RESULTS.pattern + ")")

            def showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                            line: str | None = None) -> None:
                text = str(message)
                if INCORRECT_RESULTS.search(text):
                    if text not in self.seen:
                        self.seen.add(text)
                        self.pending.append(f"{category.__name__}: {text}")
                    return
                shown(message, category, filename, lineno, file, line)

            warnings.showwarning = showwarning
            yield self

    def take(self) -> list[str]:
        pending, self.pending = self.pending, []
        return pending


class Guards(TrainerCallback):
    """The callback: put it after :class:`MetricsWriter` so a record is on disk before a guard acts on it."""

    def __init__(self, writer: MetricsWriter, monitor: Any, *, learning_rate: float) -> None:
        self.writer = writer
        self.cfg = monitor
        self._trainable: list[torch.Tensor] | None = None
        self.learning_rate = learning_rate
        self.spikes = SpikeWatch(monitor.spike_factor, monitor.spike_window)
        self.overfit = OverfitWatch(monitor.overfit_patience)
        self.warnings: list[dict[str, Any]] = []
        self.quiet = False  # True while a rich live view shows the warnings itself
        self.stopped: dict[str, Any] | None = None
        self.library = LibraryWarnings()
        # re-checks that the run still computes correct gradients (set for quantized bases by
        # tunewise.train.run.guard_quantized_training); raises ValueError with the reason when it does not
        self.verify: Callable[[], Any] | None = None

    @contextmanager
    def watching_libraries(self) -> Iterator[None]:
        """Around training: library warnings of incorrect results are collected for :meth:`on_step_end`."""
        with self.library.capturing():
            yield

    def _stop(self, args: Any, state: Any, event: str, what: str, step: int) -> None:
        checkpoint = last_checkpoint_name(args.output_dir)
        kept = (
            f"the last good checkpoint, {checkpoint}, is kept (resume from it with `tunewise train RUN --resume` "
            "after changing the config)"
            if checkpoint
            else "no checkpoint had been saved yet"
        )
        message = (
            f"training stopped at step {step}: {what}. Nothing from this step was saved; {kept}. Try a lower "
            f"training.learning_rate (now {self.learning_rate:g}), a smaller training.max_grad_norm or more warmup, "
            "and check the data for broken or extreme examples (RUN/data, RUN/data/rejects.jsonl)."
        )
        self.stopped = {"reason": event, "step": step, "message": message}
        self.writer.emit("error", event=event, message=message)
        raise TrainingStopped(message)

    def _warn(self, event: str, message: str, **extra: Any) -> None:
        if not self.quiet:
            log.warning("warning: %s", message)
        self.warnings.append(self.writer.emit("warning", event=event, message=message, **extra))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # a checkpoint is only saved right after a log, so the guards see every step's loss before any save
        if control.should_save:
            control.should_log = True
        self._library_warnings(args, state)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._library_warnings(args, state)

    def _library_warnings(self, args: Any, state: Any) -> None:
        texts = self.library.take()
        if not texts:
            return
        step = state.global_step
        check = None
        if self.verify is not None:
            try:
                check = self.verify()
            except ValueError as exc:  # the gradient check shows the results are wrong: stop before saving them
                self.writer.emit("warning", event="library_warning", message=texts[0][:500])
                self._stop_wrong(args, step, str(exc))
            finally:
                self.library.take()  # what the check itself made the libraries say is the same finding
        verdict = (f"tunewise re-checked the quantized base's gradients: still correct (cosine {check.cosine:.6f})"
                   if check is not None else "check the run's results (eval/, the loss curve) before relying on it")
        for text in texts:
            self._warn("library_warning", f"a library warned during training (step {step}) that results may be "
                       f"incorrect: {text[:300]}; {verdict}")

    def _stop_wrong(self, args: Any, step: int, reason: str) -> None:
        checkpoint = last_checkpoint_name(args.output_dir)
        kept = f"; the last checkpoint, {checkpoint}, was saved before it" if checkpoint else ""
        message = f"training stopped at step {step}: {reason}{kept}"
        self.stopped = {"reason": "incorrect_gradients", "step": step, "message": message}
        self.writer.emit("error", event="incorrect_gradients", message=message)
        raise TrainingStopped(message)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # with fp16 the grad scaler skips steps with inf gradients by design; the logged loss is checked instead
        if not self.cfg.nan_guard or args.fp16 or model is None:
            return
        if self._trainable is None:  # listing a PEFT model's parameters walks every module: once is enough
            self._trainable = [p for p in model.parameters() if p.requires_grad]
        if not grads_finite(model, self._trainable):
            self._stop(args, state, "nan", "the loss or the gradients became NaN or infinite", state.global_step + 1)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        step = state.global_step
        if "train_runtime" in logs:
            return
        loss, eval_loss, grad = number(logs.get("loss")), number(logs.get("eval_loss")), number(logs.get("grad_norm"))
        if self.cfg.nan_guard:
            for name, value in (("train loss", loss), ("eval loss", eval_loss), ("gradient norm", grad)):
                if value is not None and not math.isfinite(value):
                    self._stop(args, state, "nan", f"the {name} is {value}", step)
        limit = self.cfg.max_grad_norm_limit
        if limit is not None and grad is not None and grad > limit:
            self._stop(args, state, "grad_norm", f"the gradient norm exploded to {grad:.4g} (limit "
                       f"monitor.max_grad_norm_limit={limit:g})", step)
        if loss is not None:
            self.overfit.train_loss(loss)
            median = self.spikes.update(loss)
            if median is not None:
                self._warn("loss_spike", f"loss spike at step {step}: train loss {loss:.4g} is more than "
                           f"{self.spikes.factor:g}x the recent median {median:.4g}; if it keeps happening, lower "
                           "training.learning_rate or check the data around this step")
        if eval_loss is not None and self.overfit.eval_loss(eval_loss, step):
            best_loss, _, best_step = self.overfit.best  # type: ignore[misc]
            action = "stopping (monitor.early_stopping is on)" if self.cfg.early_stopping else (
                "set monitor.early_stopping=true to stop such runs, or train fewer steps / add data / raise "
                "training.weight_decay or lora.dropout")
            self._warn("overfitting", f"overfitting at step {step}: eval loss {eval_loss:.4g} stayed above its best "
                       f"{best_loss:.4g} (step {best_step}) for {self.overfit.patience} evaluations while the train "
                       f"loss fell; {action}", stop=self.cfg.early_stopping)
            if self.cfg.early_stopping:
                control.should_training_stop = True
                self.stopped = {"reason": "early_stopping", "step": step, "best_step": best_step}
