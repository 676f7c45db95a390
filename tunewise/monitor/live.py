"""The live view during training: a rich progress bar with ETA, current loss and learning rate, best eval loss and
memory in a terminal; one plain log line per logged step elsewhere (CI, files). It replaces the Trainer's tqdm bar.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from transformers import TrainerCallback

from tunewise.monitor.metrics import number
from tunewise.monitor.summary import duration, summary_lines

log = logging.getLogger("tunewise.monitor")


def resolve_mode(setting: str, stream: Any = None) -> str:
    """``auto`` -> ``rich`` when the output is a terminal, else ``plain``."""
    if setting != "auto":
        return setting
    stream = stream or sys.stderr
    return "rich" if getattr(stream, "isatty", lambda: False)() else "plain"


def _mem(record: dict[str, Any]) -> str:
    cuda = number(record.get("cuda_peak_allocated_mb"))
    if cuda is not None:
        return f"cuda {cuda:,.0f} MiB"
    rss = number(record.get("peak_rss_mb"))
    return f"rss {rss:,.0f} MiB" if rss is not None else ""


def status_text(state: dict[str, Any]) -> str:
    """One line: loss, learning rate, best eval loss, memory, throughput, grad norm (most important first)."""
    parts = []
    if state.get("loss") is not None:
        parts.append(f"loss {state['loss']:.4f}")
    if state.get("lr") is not None:
        parts.append(f"lr {state['lr']:.2e}")
    if state.get("best_eval") is not None:
        parts.append(f"best eval {state['best_eval'][1]:.4f} @ {state['best_eval'][0]}")
    if state.get("mem"):
        parts.append(state["mem"])
    if state.get("input_tps") is not None:  # tokens fed per second, and of them the trained (answer) tokens
        trained = f" ({state['tps']:,.0f} trained)" if state.get("tps") is not None else ""
        parts.append(f"{state['input_tps']:,.0f} tok/s{trained}")
    elif state.get("tps") is not None:
        parts.append(f"{state['tps']:,.0f} trained tok/s")
    if state.get("grad_norm") is not None:
        parts.append(f"grad {state['grad_norm']:.3g}")
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
        text = f"eval  step {self.step}  eval loss {v['eval']:.4f}" if v.get("eval") is not None else f"eval  step {self.step}"
        if v.get("best_eval") is not None:
            text += f"  (best {v['best_eval'][1]:.4f} @ {v['best_eval'][0]})"
        return text

    def line(self) -> str:
        head = f"step {self.step}/{self.max_steps}" if self.max_steps else f"step {self.step}"
        if self.values.get("epoch") is not None:
            head += f"  epoch {self.values['epoch']:.2f}"
        eta = f"  eta {duration(self.eta_s)}" if self.eta_s is not None else ""
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
                self._live.console.print(f"[{colour}]{kind}:[/] {record.get('message')}", highlight=False)
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
        self.progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), console=console)
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

            table = Table(title=f"training {status}", show_header=False)
            for label, value in summary_lines(summary):
                table.add_row(label, value)
            (self.console or Console(stderr=True)).print(table)
        elif self.mode == "plain":
            log.info("training %s: %s", status, "; ".join(f"{k} {v}" for k, v in summary_lines(summary)))
