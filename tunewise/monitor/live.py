"""The live view during training: a rich progress bar with ETA, current loss and learning rate, best eval loss and
memory in a terminal; one plain log line per logged step elsewhere (CI, files). It replaces the Trainer's tqdm bar.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from transformers import TrainerCallback

from tunewise.catalog import N_, _, translate
from tunewise.monitor.metrics import number
from tunewise.monitor.summary import duration, summary_lines

log = logging.getLogger("tunewise.monitor")
STATUSES = (N_("validating"), N_("queued"), N_("running"), N_("succeeded"), N_("failed"), N_("cancelled"),
            N_("interrupted"), N_("unknown"))  # a run's status (tunewise/record.py), shown in its language


def resolve_mode(setting: str, stream: Any = None) -> str:
    """``auto`` -> ``rich`` when the output is a terminal, else ``plain``."""
    if setting != "auto":
        return setting
    stream = stream or sys.stderr
    return "rich" if getattr(stream, "isatty", lambda: False)() else "plain"


def _mem(record: dict[str, Any]) -> str:
    cuda = number(record.get("cuda_peak_allocated_mb"))
    if cuda is not None:
        return _("cuda {mb:,.0f} MiB").format(mb=cuda)
    rss = number(record.get("peak_rss_mb"))
    return _("rss {mb:,.0f} MiB").format(mb=rss) if rss is not None else ""


def status_text(state: dict[str, Any]) -> str:
    """One line: loss, learning rate, best eval loss, memory, throughput, grad norm (most important first)."""
    parts = []
    if state.get("loss") is not None:
        parts.append(_("loss {loss:.4f}").format(loss=state["loss"]))
    if state.get("lr") is not None:
        parts.append(_("lr {lr:.2e}").format(lr=state["lr"]))
    if state.get("best_eval") is not None:
        parts.append(_("best eval {loss:.4f} @ {step}").format(loss=state["best_eval"][1], step=state["best_eval"][0]))
    if state.get("mem"):
        parts.append(state["mem"])
    if state.get("input_tps") is not None:  # tokens fed per second, and of them the trained (answer) tokens
        trained = _(" ({tps:,.0f} trained)").format(tps=state["tps"]) if state.get("tps") is not None else ""
        parts.append(_("{tps:,.0f} tok/s{trained}").format(tps=state["input_tps"], trained=trained))
    elif state.get("tps") is not None:
        parts.append(_("{tps:,.0f} trained tok/s").format(tps=state["tps"]))
    if state.get("grad_norm") is not None:
        parts.append(_("grad {norm:.3g}").format(norm=state["grad_norm"]))
    return "  ".join(parts)


class ViewState:
    """What the view shows, updated from metrics records (shared with ``tunewise monitor``)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.step, self.max_steps, self.eta_s = 0, 0, None

    def update(self, record: dict[str, Any]) -> None:
        v = self.values
        self.step = int(record.get("step", self.step))
        if record.get("kind") == "start":
            self.max_steps = int(record.get("max_steps") or 0)
        if record.get("kind") == "train":
            v["loss"], v["lr"] = number(record.get("loss")), number(record.get("learning_rate"))
            v["grad_norm"], v["tps"] = number(record.get("grad_norm")), number(record.get("tokens_per_s"))
            v["input_tps"] = number(record.get("input_tokens_per_s"))
            self.eta_s = number(record.get("eta_s"))
        if record.get("kind") == "eval":
            loss = number(record.get("eval_loss"))
            if loss is not None and (v.get("best_eval") is None or loss < v["best_eval"][1]):
                v["best_eval"] = (self.step, loss)
            v["eval"] = loss
        if record.get("kind") in ("train", "eval"):
            v["mem"] = _mem(record) or v.get("mem")
            v["epoch"] = number(record.get("epoch"))

    def eval_line(self) -> str:
        v = self.values
        text = (_("eval  step {step}  eval loss {loss:.4f}").format(step=self.step, loss=v["eval"])
                if v.get("eval") is not None else _("eval  step {step}").format(step=self.step))
        if v.get("best_eval") is not None:
            text += _("  (best {loss:.4f} @ {step})").format(loss=v["best_eval"][1], step=v["best_eval"][0])
        return text

    def line(self) -> str:
        head = (_("step {step}/{max_steps}").format(step=self.step, max_steps=self.max_steps) if self.max_steps
                else _("step {step}").format(step=self.step))
        if self.values.get("epoch") is not None:
            head += _("  epoch {epoch:.2f}").format(epoch=self.values["epoch"])
        eta = _("  eta {duration}").format(duration=duration(self.eta_s)) if self.eta_s is not None else ""
        return f"{head}  {status_text(self.values)}{eta}"


class LiveView(TrainerCallback):
    """A TrainerCallback (progress per step) and a metrics sink (numbers per logged record)."""

    def __init__(self, mode: str = "plain", console: Any = None) -> None:
        self.mode = mode
        self.console = console
        self.view = ViewState()
        self.progress: Any = None
        self.task: Any = None
        self._live: Any = None

    # --- sink
    def __call__(self, record: dict[str, Any]) -> None:
        self.view.update(record)
        kind = record.get("kind")
        if kind in ("warning", "error"):
            if self._live is not None:
                colour = "yellow" if kind == "warning" else "red"
                label = _("warning:") if kind == "warning" else _("error:")
                self._live.console.print(f"[{colour}]{label}[/] {record.get('message')}", highlight=False)
            return  # plain mode: the guard already logged it
        if self.mode == "plain" and kind == "train":
            log.info("%s", self.view.line())
        elif self.mode == "plain" and kind == "eval":
            log.info("%s", self.view.eval_line())

    # --- callback
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.view.max_steps = state.max_steps
        if self.mode != "rich" or not state.is_world_process_zero:
            return
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        console = self.console or Console(stderr=True)
        # two lines: the bar with ETA, and the numbers (too wide to share a line on an 80-column terminal)
        self.progress = Progress(TextColumn(_("[bold]train[/]")), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn(_("eta")), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step)
        view = self.view

        class Stats:
            def __rich__(self) -> Text:
                return Text("  " + status_text(view.values), style="cyan", overflow="ellipsis", no_wrap=True)

        self._live = Live(Group(self.progress, Stats()), console=console, refresh_per_second=4)
        self._live.start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = self.progress = None

    def print_summary(self, summary: dict[str, Any], status: str) -> None:
        """The end-of-run summary: a rich table in a terminal, log lines otherwise."""
        if self.mode == "rich":
            from rich.console import Console
            from rich.table import Table

            table = Table(title=_("training {status}").format(status=translate(status)), show_header=False)
            for label, value in summary_lines(summary):
                table.add_row(label, value)
            (self.console or Console(stderr=True)).print(table)
        elif self.mode == "plain":
            log.info("%s: %s", _("training {status}").format(status=translate(status)),
                     "; ".join(f"{k} {v}" for k, v in summary_lines(summary)))
