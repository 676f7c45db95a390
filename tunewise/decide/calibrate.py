"""Measurements the estimates stand on: a short real training run (time per token, per optimizer step, per
evaluation and per checkpoint, and the fixed cost of a run), the memory of the Python/torch/transformers runtime a
training process carries before any model is loaded, and the device's dense matmul throughput."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from tunewise.config import Config
from tunewise.decide.workload import Batch, Workload
from tunewise.rundir import RunDir
from tunewise.train.learning_rate import resolve_learning_rate

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------------------------------
# calibration: a few real optimizer steps


@dataclass
class Calibration:
    """Timings of a short real run of the Trainer tunewise trains with (same model, method, batches and settings)."""

    method: str
    steps: int  # timed optimizer steps (after the warmup steps)
    warmup_steps: int
    fb_s_per_token: float  # forward + backward seconds per computed token (rows x length of a batch)
    step_overhead_s: float  # per optimizer step: optimizer, scheduler, zero_grad, logging, next batch
    warmup_excess_s: float  # the first step's extra time (lazy optimizer state, first-call costs)
    eval_s_per_token: float  # evaluation seconds per computed token (0 without a validation split)
    end_evaluations: int  # evaluations a run makes after its last step (seen in the calibration run)
    save_s: float  # one checkpoint save
    fixed_s: float  # per run: dataloader setup, end-of-run summary and plots
    load_s: float  # loading and preparing the model before training starts
    plots_warm: bool = False  # matplotlib was imported before the calibration (its first-plot cost is not in fixed_s)
    packing: bool = True  # the collator training chose (a model that attends across packed examples gets padding)
    step_times_s: list[float] = field(default_factory=list)
    padded_tokens: list[int] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


class _Clock:
    """TrainerCallback recording when each event happened."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        events: list[tuple[str, float]] = []
        self.events = events

        class Callback(TrainerCallback):
            def on_train_begin(self, *a: Any, **k: Any) -> None:
                events.append(("train_begin", time.perf_counter()))

            def on_step_begin(self, *a: Any, **k: Any) -> None:
                events.append(("step_begin", time.perf_counter()))

            def on_pre_optimizer_step(self, *a: Any, **k: Any) -> None:
                events.append(("pre_optimizer", time.perf_counter()))

            def on_step_end(self, *a: Any, **k: Any) -> None:
                events.append(("step_end", time.perf_counter()))

            def on_save(self, *a: Any, **k: Any) -> None:
                events.append(("save", time.perf_counter()))

            def on_epoch_end(self, *a: Any, **k: Any) -> None:
                events.append(("epoch_end", time.perf_counter()))

            def on_evaluate(self, *a: Any, **k: Any) -> None:
                events.append(("evaluate", time.perf_counter()))

        self.callback = Callback()

    def times(self, name: str) -> list[float]:
        return [t for n, t in self.events if n == name]

    def after(self, name: str, start: float) -> float | None:
        return next((t for n, t in self.events if n == name and t >= start), None)


def _spread(n: int) -> list[float]:
    """``n`` points in [0, 1) whose every prefix spans the range (van der Corput: 0.5, 0.25, 0.75, 0.125, ...)."""
    points = []
    for i in range(1, n + 1):
        x, base, k = 0.0, 0.5, i
        while k:
            if k & 1:
                x += base
            k >>= 1
            base /= 2
        points.append(x)
    return points


def pick_batches(workload: Workload, steps: int, warmup: int) -> list[list[Batch]]:
    """Optimizer steps to calibrate on, each a list of ``accumulation`` batches of the epoch: the warmup steps take the
    heaviest batches (as the Trainer's length-grouped sampler does); the timed steps are spread over the epoch's batch
    sizes so that any first few of them are representative."""
    accumulation = workload.accumulation
    # full batches only (the sequential sampler cuts the calibration rows into full batches), heaviest first
    full = [b for b in workload.batches if b.rows == workload.batch_size] or workload.batches
    ranked = sorted(full, key=lambda b: b.padded, reverse=True)
    chosen: list[list[Batch]] = []
    used: set[int] = set()

    def take(position: int) -> list[Batch]:
        group: list[Batch] = []
        for offset in range(len(ranked)):
            for j in (position + offset, position - offset):
                if 0 <= j < len(ranked) and j not in used and len(group) < accumulation:
                    used.add(j)
                    group.append(ranked[j])
            if len(group) == accumulation:
                break
        return group

    for _ in range(warmup):
        chosen.append(take(0))
    for x in _spread(steps):
        group = take(round(x * (len(ranked) - 1)))
        if not group:
            break
        chosen.append(group)
    return [g for g in chosen if g]


def calibrate(config: Config, workload: Workload, records: Sequence[dict[str, Any]], val_records: Sequence[dict[str, Any]],
              *, steps: int = 4, warmup: int = 1, progress: Progress | None = None) -> Calibration:
    """Train ``warmup`` + ``steps`` real optimizer steps on batches of the epoch and time every part of the run.

    The run is set up as :func:`tunewise.train.run.train_run` sets it up (model, method, collator, Trainer, arguments,
    best-model tracking, monitor) in a temporary run directory and ends as a real run ends (evaluation, checkpoint,
    summary and plots); only the sampler is sequential, so each step is exactly the batch chosen for it. ``records``
    are the training records in workload order, ``val_records`` the validation records.
    """
    import gc

    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tunewise.example import Example
    from tunewise.lm.adapters import count_parameters, get_method
    from tunewise.lm.chat import encode_examples
    from tunewise.lm.loading import load_tokenizer
    from tunewise.rundir import RunDir
    from tunewise.lm.loading import load_for_training
    from tunewise.train.run import build_trainer, training_arguments

    say = progress or (lambda message: None)
    plan = pick_batches(workload, steps, warmup)
    started = time.perf_counter()
    set_seed(config.training.seed)
    method = get_method(config.method)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    order = [i for group in plan for batch in group for i in batch.indices]
    loss_on, max_tokens = config.training.loss_on, config.data.max_tokens
    train = encode_examples([Example.from_record(records[i]) for i in order], tokenizer, loss_on=loss_on, max_tokens=max_tokens)
    first_eval = workload.eval_batches[0].indices if workload.eval_batches else []
    eval_examples = [Example.from_record(val_records[i]) for i in first_eval]
    val = [e for e in encode_examples(eval_examples, tokenizer, loss_on=loss_on, max_tokens=max_tokens) if e.n_trained > 0]
    say(f"{config.method}: loading the model")
    model, precision, _dtype = load_for_training(config, method)
    clock = _Clock()
    with tempfile.TemporaryDirectory(prefix="tunewise-calibrate-") as tmp:
        # set up as a training run is set up (tunewise/train/run.py); only the sampler is sequential
        run = RunDir.of(tmp)
        calib_config, _rate = resolve_learning_rate(_calibration_config(config), count_parameters(model)[1])
        args = training_arguments(calib_config, run.checkpoints, has_eval=bool(val), precision=precision)
        args = dataclasses.replace(args, train_sampling_strategy="sequential", num_train_epochs=1, max_steps=-1,
                                   disable_tqdm=True)
        setup = build_trainer(calib_config, run, method.name, model, tokenizer, args, train, val, eval_examples,
                              callbacks=[clock.callback])
        trainer, session, packing = setup.trainer, setup.session, setup.packing
        trainer.remove_callback(PrinterCallback)  # calibration prints nothing per step
        trainer.remove_callback(ProgressCallback)
        load_s = time.perf_counter() - started
        say(f"{config.method}: timing {len(plan)} real optimizer steps ({warmup} warmup)")
        plots_warm = "matplotlib.pyplot" in sys.modules
        began = time.perf_counter()
        gc.freeze()
        try:
            with _quiet_trainer(), session.watching(trainer):
                trainer.train()
        finally:
            gc.unfreeze()
        wall = time.perf_counter() - began
    eval_batches = workload.eval_batches[:1]
    if packing != workload.packing:  # the model refused packed batches: the steps ran padded
        from tunewise.decide.workload import shape_batch

        plan = [[shape_batch(workload.features, b.indices, None) for b in group] for group in plan]
        eval_batches = [shape_batch(workload.val_features, b.indices, None) for b in eval_batches]
    eval_padded = sum(b.padded for b in eval_batches)
    calibration = _analyse(config.method, clock, plan, warmup, val_padded=eval_padded if val else 0, wall=wall, load_s=load_s)
    calibration.plots_warm, calibration.packing = plots_warm, packing
    return calibration


def _calibration_config(config: Config) -> Config:
    """The config for the calibration run: one epoch of the chosen batches that ends as a real run ends (evaluation,
    checkpoint), with no checkpoint or evaluation before, no live view, no external sinks."""
    from tunewise.config import config_from_dict

    raw = config.model_dump(mode="json")
    settings = {"training": dict(epochs=1, max_steps=-1, save_steps=10**9, eval_steps=None, early_stopping_patience=None),
                "monitor": dict(live="off", report_to=[], early_stopping=False)}
    for section, values in settings.items():
        raw[section].update({k: v for k, v in values.items() if k in raw[section]})  # only fields this version has
    return config_from_dict(raw)


class _quiet_trainer:
    """Silence the Trainer's per-log prints and info lines while calibrating."""

    def __enter__(self) -> None:
        import transformers

        self._level = transformers.logging.get_verbosity()
        self._bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

    def __exit__(self, *exc: Any) -> None:
        import transformers

        transformers.logging.set_verbosity(self._level)
        if self._bars:
            transformers.utils.logging.enable_progress_bar()


def _analyse(method: str, clock: _Clock, plan: list[list[Batch]], warmup: int, *, val_padded: int,
             wall: float, load_s: float) -> Calibration:
    begins, pre, ends = clock.times("step_begin"), clock.times("pre_optimizer"), clock.times("step_end")
    n = min(len(begins), len(pre), len(ends), len(plan))
    if n <= warmup:
        raise RuntimeError(f"calibration ran {n} optimizer steps; it needs more than {warmup}")
    windows = [(begins[i + 1] if i + 1 < n else ends[i]) - begins[i] for i in range(n)]
    fb = [pre[i] - begins[i] for i in range(n)]
    padded = [sum(b.padded for b in group) for group in plan[:n]]
    timed = range(warmup, n)
    rate = sum(fb[i] for i in timed) / max(sum(padded[i] for i in timed), 1)
    overhead = statistics.median(windows[i] - fb[i] for i in timed)
    predicted = [rate * padded[i] + overhead for i in range(n)]
    warmup_excess = max(sum(windows[i] - predicted[i] for i in range(warmup)), 0.0)
    # after the last step a run evaluates, saves its checkpoint and ends its epoch, in an order set by its callbacks:
    # each evaluation or save lasts from the event before it
    previous, evals, saves = ends[n - 1], [], []
    for name, t in clock.events:
        if t <= previous:
            continue
        if name == "evaluate":
            evals.append(t - previous)
        elif name == "save":
            saves.append(t - previous)
        if name in ("evaluate", "save", "epoch_end"):
            previous = t
    eval_s = statistics.mean(evals) if evals else 0.0
    fixed = max(wall - sum(windows) - sum(saves) - sum(evals), 0.0)
    return Calibration(
        method=method, steps=n - warmup, warmup_steps=warmup, fb_s_per_token=rate, step_overhead_s=max(overhead, 0.0),
        warmup_excess_s=warmup_excess, eval_s_per_token=eval_s / val_padded if val_padded else 0.0,
        end_evaluations=len(evals), save_s=statistics.mean(saves) if saves else 0.0,
        fixed_s=fixed, load_s=load_s, step_times_s=[round(w, 4) for w in windows], padded_tokens=padded, wall_s=wall,
    )


# --------------------------------------------------------------------------------------------------------------------
# the runtime's own memory


_TRAIN_CHILD = (
    "import sys\n"
    "from tunewise.runs import config_of_run\n"
    "from tunewise.train.run import train_run\n"
    "config, run = config_of_run(sys.argv[1])\n"
    "train_run(config, run.root)\n"
)


def train_in_fresh_process(run_dir: str | Path, *, env: dict[str, str] | None = None,
                           timeout: float | None = None) -> dict[str, Any]:
    """Train ``run_dir`` in a new Python process and return its train_summary.json: time and peak memory (VmHWM)
    measured with nothing of this process's models or caches in the way."""
    result = subprocess.run([sys.executable, "-c", _TRAIN_CHILD, str(run_dir)], capture_output=True, text=True,
                            env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"training {run_dir} failed:\n{result.stderr[-3000:]}")
    return json.loads(RunDir.of(run_dir).train_summary.read_text(encoding="utf-8"))


def own_peak_rss_mb() -> float:
    """Peak RSS (MiB) of this process image (VmHWM on Linux): what the monitor reports as peak_rss_mb."""
    from tunewise.monitor.memory import peak_rss_mb

    return peak_rss_mb()


_PROBE = r"""
import json, sys, tempfile, warnings
warnings.filterwarnings("ignore")
import torch
from tunewise.decide.calibrate import own_peak_rss_mb
from tunewise.lm.loading import load_tokenizer
from tunewise.train.run import to_dataset
from tunewise.train.trainer import TunewiseTrainer
from tunewise.lm.collate import PadCollator
from tunewise.lm.chat import Encoded
from transformers import TrainingArguments
name, trust, plots = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
tokenizer = load_tokenizer(name, trust_remote_code=trust)
dataset = to_dataset([Encoded(input_ids=[1, 2, 3], labels=[-100, 2, 3])] * 8)
with tempfile.TemporaryDirectory() as tmp:
    args = TrainingArguments(output_dir=tmp, use_cpu=not torch.cuda.is_available(), report_to="none", disable_tqdm=True)
    TunewiseTrainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=dataset,
                    data_collator=PadCollator(tokenizer.pad_token_id), processing_class=tokenizer)
plot_s = 0.0
if plots:  # the monitor writes plots at the end of training, inside the training process (first import included)
    import io, time
    started = time.perf_counter()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(io.BytesIO(), format="png")
    plot_s = time.perf_counter() - started
print(json.dumps({"peak_rss_mb": own_peak_rss_mb(), "first_plot_s": plot_s}))
"""


def _versions() -> str:
    import peft
    import transformers

    return f"py{sys.version_info[0]}.{sys.version_info[1]}-torch{torch.__version__}-tf{transformers.__version__}-peft{peft.__version__}"


@dataclass
class Runtime:
    """What a fresh training process carries before any model: its peak RSS, and the one-time cost of its first plot
    (matplotlib's import), which a calibration in a process that already plotted does not see."""

    mb: float
    first_plot_s: float
    source: str


def runtime_baseline(config: Config, *, cache_dir: Path | None = None) -> Runtime:
    """Peak RSS (MiB) of a process that has imported the training stack, loaded the tokenizer and built a Trainer,
    before any model is loaded (and the time of its first plot): measured once in a fresh process, then cached per
    versions, tokenizer, plots setting and threads."""
    from tunewise.lm.loading import resolve_model
    from tunewise.models.smollm2 import cache_root

    plots = config.monitor.plots
    key = f"{_versions()}|{resolve_model(config.model)}|plots={plots}|threads={os.environ.get('OMP_NUM_THREADS', '')}"
    path = (cache_dir or cache_root()) / "runtime_baseline.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), dict):
        return Runtime(cached[key]["peak_rss_mb"], cached[key]["first_plot_s"], f"measured in a fresh process (cached in {path})")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH", "")])),
           "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", _PROBE, config.model, "1" if config.trust_remote_code else "0", "1" if plots else "0"],
                            capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"measuring the runtime's memory failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
    measured = json.loads(lines[-1])
    cached[key] = measured
    try:
        from tunewise.rundir import atomic_write_json

        atomic_write_json(path, cached)
    except OSError as exc:  # a read-only cache only costs a re-measurement next time
        log.warning("could not cache the runtime baseline in %s: %s", path, exc)
    return Runtime(measured["peak_rss_mb"], measured["first_plot_s"], "measured in a fresh process")


# --------------------------------------------------------------------------------------------------------------------
# device throughput


@functools.lru_cache(maxsize=8)
def matmul_flops(device: str, dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """Measured dense matmul throughput (FLOP/s) of ``device`` in ``dtype``: the peak the FLOPs fallback scales."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best
