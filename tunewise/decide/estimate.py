"""Memory, time and cost of training a config with each method, before training.

Memory (peak of the training process; see docs/decide.md for the measured accuracy)::

    peak = runtime + weights + optimizer states + gradients / activations, by phase (below)

* runtime: RSS of a process that imported the training stack and built a Trainer, measured once in a fresh process
  (CPU); 0 on CUDA, where the peak is allocated tensor memory (the CUDA context is not counted).
* weights: from the meta model (:mod:`tunewise.decide.footprint`); QLoRA: quantized linears + fp32 rest, and on CPU the
  checkpoint file, whose memory map transformers keeps open while unquantized weights point into it (measured).
* gradients: one per trainable parameter, in its dtype. Optimizer states: AdamW 2 per trainable parameter (8-bit
  AdamW: 2 bytes), SGD none. The optimizer step of foreach AdamW (``adamw_torch``) also needs one temporary per
  trainable parameter (the fused default does not).
* activations: what autograd saves for the heaviest batch of the epoch, shaped as the collator shapes it (packed rows
  or padded rows), with or without gradient checkpointing; logits: 2 x trained tokens x vocabulary x 4 bytes (tunewise
  computes logits only at trained positions). F = 2.0 on CPU: glibc keeps freed activation blocks in its heap and the
  process RSS grows to about twice the saved activations (measured on SmolLM2-135M, 1.4-2.1x); F = 1.0 on CUDA.
* phases: in backward, gradients and activations are live together, and the blocks the previous step's gradients
  freed absorb the heap's growth (measured: full fine-tuning peaks near gradients + 1 x activations, LoRA near
  F x activations); at the optimizer step the gradients, states and step temporary are all live. The peak is the
  higher of the two::

      backward = runtime + weights + states + max(gradients + A, F x A)      A = activations + logits
      step     = runtime + weights + states + gradients + step temporary

Sharded over N devices (``training.sharding``; :func:`shard_memory`), per device: ``fsdp`` and ``zero3`` divide
weights, gradients, optimizer states and the step temporary by N and add what is gathered whole during backward
(the root unit + the current and the prefetched decoder layer, less the device's own shards, + the current
layer's unsharded gradients); ``zero2`` divides gradients, optimizer states and the step temporary. Activations
and the runtime stay per device.

Time: from a short calibration run (:func:`tunewise.decide.calibrate.calibrate`), scaled to the epoch's batches:
``fixed + first-step excess + sum over steps (seconds per computed token x computed tokens + per-step overhead) +
evaluations + checkpoint saves``. Without calibration: FLOPs (6 N per computed token for full fine-tuning, 4 N for a
frozen base, 2 N for evaluation) over the measured matmul throughput x a stated efficiency.

Cost: device-hours x a price the user gives, and for API-style pricing tokens x epochs x price per 1M tokens.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from tunewise.config import Config
from tunewise.decide.calibrate import Calibration
from tunewise.decide.footprint import Activations, Parameters, ShardUnits
from tunewise.decide.workload import Workload
from tunewise.lm.device import describe_device, precision_for
from tunewise.objectives import Objective, get_objective
from tunewise.rundir import RunDir

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

CPU_ACTIVATION_FACTOR = 2.0
"""RSS growth per byte of saved activations on CPU (glibc heap retention; measured 1.4-2.1 on SmolLM2-135M)."""
CPU_RETURNED_FACTOR = 1.25
"""The same with freed blocks returned to the OS (tunewise/train/allocator.py): measured 1.22 on SmolLM2-135M, batch 8
of 200-400-token rows (benchmarks/memory_profile.py)."""
CUDA_ACTIVATION_FACTOR = 1.0
CPU_BF16_KERNEL_CACHE = 350 * 2**20
"""CPU bf16 autocast: oneDNN keeps a primitive, with its AMX-reordered weights, per matmul shape it has seen; with
packing the shapes vary by batch and the cache grows over the run. tunewise caps it at 64 primitives
(tunewise/lm/device.py). Measured on SmolLM2-135M, 80 steps of sms_spam: peak 3,200 MiB uncapped, 2,631-2,660 MiB
capped at 64, 2,515 MiB at 16; on convention_speeches (uncapped) the peak was ~870 MiB above the estimate's other
parts. 350 MiB is what is left with the cap, on the safe side (docs/performance.md)."""
FLOPS_EFFICIENCY = {"cpu": 0.55, "cuda": 0.35}
"""Share of the measured matmul throughput training reaches, for the FLOPs fallback. CPU: measured 0.57 (full) and
0.65 (LoRA) on SmolLM2-135M with one thread (a tiny model is dominated by per-step overhead FLOPs do not see); CUDA:
the usual 30-40% model FLOPs utilisation of small-batch fine-tuning (not measured here)."""
DEFAULT_METHODS = ("full", "lora", "qlora")
MIN_TIMED_S = 3.0  # calibration: time at least this many seconds of steps (by the FLOPs guess) ...
MAX_CALIBRATION_STEPS = 24  # ... but never more steps than this
MiB = 2**20


@dataclass
class Memory:
    """Peak memory of a training process, by part (bytes)."""

    runtime: int
    weights: int
    gradients: int
    optimizer: int
    optimizer_step_temp: int
    activations: int
    activations_checkpointed: int
    logits: int
    factor: float
    mapped_checkpoint: int = 0  # QLoRA on CPU: the checkpoint's memory map, kept open during training
    gradient_checkpointing: bool = False
    adapters: int = 0  # adapter parameters (part of weights)
    quantized: int = 0  # quantized weights of QLoRA (part of weights)
    gathered: int = 0  # sharded (fsdp/zero3): units held whole during backward, beyond the device's own shards
    kernel_cache: int = 0  # CPU bf16: oneDNN's primitive cache (CPU_BF16_KERNEL_CACHE)
    returned_factor: float | None = None  # CPU: the factor with freed blocks returned to the OS (None: no such choice)

    def peak(self, gradient_checkpointing: bool | None = None, factor: float | None = None) -> int:
        ckpt = self.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
        acts = self.activations_checkpointed if ckpt else self.activations
        factor = self.factor if factor is None else factor
        resident = self.runtime + self.weights + self.mapped_checkpoint + self.optimizer + self.kernel_cache
        backward = resident + self.gathered + max(self.gradients + acts + self.logits, factor * (acts + self.logits))
        step = resident + self.gradients + self.optimizer_step_temp
        return int(max(backward, step))

    def to_dict(self) -> dict[str, Any]:
        mb = lambda v: round(v / MiB, 1)  # noqa: E731
        return {
            "peak_mb": mb(self.peak()),
            "peak_mb_without_checkpointing": mb(self.peak(False)),
            "peak_mb_with_checkpointing": mb(self.peak(True)),
            **({"peak_mb_returning_freed_memory": mb(self.peak(False, self.returned_factor)),
                "peak_mb_with_checkpointing_returning_freed_memory": mb(self.peak(True, self.returned_factor))}
               if self.returned_factor is not None else {}),
            "gradient_checkpointing": self.gradient_checkpointing,
            "parts_mb": {
                "runtime": mb(self.runtime), "weights": mb(self.weights), "mapped_checkpoint": mb(self.mapped_checkpoint),
                "gradients": mb(self.gradients), "optimizer_states": mb(self.optimizer),
                "optimizer_step_temporary": mb(self.optimizer_step_temp), "activations": mb(self.activations),
                "activations_checkpointed": mb(self.activations_checkpointed), "logits": mb(self.logits),
                "adapters_in_weights": mb(self.adapters), "quantized_in_weights": mb(self.quantized),
                "gathered_units": mb(self.gathered), "cpu_bf16_kernel_cache": mb(self.kernel_cache),
            },
            "activation_factor": self.factor,
        }


@dataclass
class Timing:
    """Seconds for one epoch and for the whole configured run."""

    epoch_s: float
    total_s: float
    load_s: float
    source: str  # "calibration" or "flops"
    steps_per_epoch: int
    total_steps: int
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch_s": round(self.epoch_s, 2), "total_s": round(self.total_s, 2), "load_s": round(self.load_s, 2),
                "source": self.source, "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                **self.detail}


@dataclass
class MethodEstimate:
    method: str
    parameters: Parameters
    memory: Memory
    timing: Timing
    activations: Activations
    cost: dict[str, Any] = field(default_factory=dict)
    fits: bool | None = None
    sharded: dict[str, Memory] = field(default_factory=dict)  # engine -> per-device memory at ``devices``
    devices: int = 1
    memory_limit_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        result = {
            "method": self.method,
            "parameters": self.parameters.to_dict(),
            "memory": self.memory.to_dict(),
            "activations": self.activations.to_dict(),
            "time": self.timing.to_dict(),
            "cost": self.cost,
            "fits_in_memory": self.fits,
        }
        if self.sharded:
            limit = self.memory_limit_mb
            result["sharding"] = {"devices": self.devices, "engines": {
                engine: {**m.to_dict(), "fits_in_memory": None if limit is None else m.peak() / MiB <= limit}
                for engine, m in self.sharded.items()}}
        return result


# --------------------------------------------------------------------------------------------------------------------
# hardware


def available_memory(device: str) -> dict[str, Any]:
    """Memory the training could use on ``device``: CUDA free/total, or the machine's available/total RAM."""
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        return {"device": device, "name": torch.cuda.get_device_name(0), "available_mb": round(free / MiB),
                "total_mb": round(total / MiB)}
    info: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    total = info.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = info.get("MemAvailable", total)
    return {"device": device, "name": f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads",
            "available_mb": round(available / MiB), "total_mb": round(total / MiB)}


# --------------------------------------------------------------------------------------------------------------------
# memory


def optimizer_bytes(config: Config, trainable: int, trainable_bytes: int) -> tuple[int, int]:
    """(optimizer state bytes, optimizer step temporary bytes) for ``training.optimizer``."""
    name = config.training.optimizer
    if name == "sgd":  # momentum 0: no state
        return 0, 0
    if name == "adamw_8bit":  # two uint8 states + one fp32 absmax per block of 256
        return 2 * trainable + 2 * 4 * math.ceil(trainable / 256), 0
    # foreach AdamW keeps one temporary per parameter (the square root of the second moment) during the step
    return 2 * trainable_bytes, trainable_bytes if name == "adamw_torch" else 0


def estimate_memory(config: Config, parameters: Parameters, acts: Activations, *, device: str, runtime_bytes: int,
                    vocab_size: int, trained_tokens: int, mapped_checkpoint: int = 0) -> Memory:
    from tunewise.lm.adapters import get_method
    from tunewise.train.allocator import tuning_setting

    states, temp = optimizer_bytes(config, parameters.trainable, parameters.trainable_bytes)
    # CPU: glibc keeps freed blocks unless tunewise returns them (always with TUNEWISE_MALLOC_TUNING=1; automatic
    # otherwise: checkpointing_choice weighs it)
    tuning = tuning_setting() if device == "cpu" else False
    factor = (CPU_RETURNED_FACTOR if tuning else CPU_ACTIVATION_FACTOR) if device == "cpu" else CUDA_ACTIVATION_FACTOR
    return Memory(
        runtime=runtime_bytes if device == "cpu" else 0,
        weights=parameters.weight_bytes,
        gradients=parameters.trainable_bytes,
        optimizer=states,
        optimizer_step_temp=temp,
        activations=acts.total,
        activations_checkpointed=acts.checkpointed,
        logits=2 * trained_tokens * vocab_size * 4,
        factor=factor,
        returned_factor=CPU_RETURNED_FACTOR if tuning is None else None,
        mapped_checkpoint=mapped_checkpoint,
        gradient_checkpointing=bool(config.training.gradient_checkpointing),  # null (automatic): estimated without
        adapters=parameters.trainable_bytes if get_method(config.method).saves_adapter else 0,
        quantized=parameters.quantized_bytes,
        kernel_cache=cpu_kernel_cache_bytes(config, device),
    )


def cpu_kernel_cache_bytes(config: Config, device: str) -> int:
    """Memory oneDNN's primitive cache takes under CPU bf16 autocast (:data:`CPU_BF16_KERNEL_CACHE`), else 0."""
    return CPU_BF16_KERNEL_CACHE if device == "cpu" and precision_for(config).bf16 else 0


SHARDING_ENGINES = ("fsdp", "zero2", "zero3")
"""What ``training.sharding`` can be; what each shards is in the module docstring."""


def shard_memory(memory: Memory, units: "ShardUnits", engine: str, devices: int) -> Memory:
    """Per-device memory of ``memory`` (one device, the whole model) sharded by ``engine`` over ``devices``.

    The parts keep their single-device bytes and are divided as the engine divides them (ZeRO's own mixed-precision
    layout, 16-bit weights plus an fp32 master partition, is not modelled: under bf16 the weights part is then an
    over-estimate for more than two devices). Reduce/prefetch buckets of a few MB are not counted."""
    import dataclasses

    if engine not in SHARDING_ENGINES:
        raise ValueError(f"unknown sharding {engine!r}; allowed: {', '.join(SHARDING_ENGINES)}")
    n = devices

    def part(value: int) -> int:
        return math.ceil(value / n)

    sharded = dataclasses.replace(memory, gradients=part(memory.gradients), optimizer=part(memory.optimizer),
                                  optimizer_step_temp=part(memory.optimizer_step_temp))
    if engine in ("fsdp", "zero3"):
        whole = units.root_bytes + 2 * units.layer_bytes  # root unit + current layer + the prefetched next one
        sharded = dataclasses.replace(sharded, weights=part(memory.weights), adapters=part(memory.adapters),
                                      gathered=whole - part(whole) + units.layer_trainable_bytes if n > 1 else 0)
    return sharded


def default_devices(device: str) -> int:
    """Devices this machine trains on: its CUDA GPUs, or 1 (a CPU machine is one device)."""
    return torch.cuda.device_count() if device.startswith("cuda") else 1


# --------------------------------------------------------------------------------------------------------------------
# time


def _counts(config: Config, workload: Workload, end_evaluations: int = 1) -> dict[str, int]:
    """Optimizer steps, evaluations and checkpoint saves of the configured run: those on the cadence before the last
    step, plus what a run does after its last step (``end_evaluations``, as the calibration run showed, and one save)."""
    t = config.training
    steps = workload.total_steps(config)
    if not workload.eval_batches:
        evals = 0
    elif t.eval_steps or workload.eval_every:
        evals = (steps - 1) // (t.eval_steps or workload.eval_every) + end_evaluations
    else:
        evals = math.ceil(steps / workload.steps_per_epoch) - 1 + end_evaluations
    saves = (steps - 1) // t.save_steps + 1
    return {"steps": steps, "evals": evals, "saves": saves}


def _step_tokens(workload: Workload) -> list[int]:
    """Padded tokens per optimizer step of one epoch."""
    a = workload.accumulation
    return [sum(b.padded for b in workload.batches[i:i + a]) for i in range(0, len(workload.batches), a)]


def time_from_calibration(config: Config, workload: Workload, cal: Calibration, *, first_plot_s: float = 0.0) -> Timing:
    """Scale a calibration to the configured run. ``first_plot_s`` (matplotlib's first import and plot, measured in a
    fresh process) is added when the calibrating process had already plotted: a training process pays it."""
    step_tokens = _step_tokens(workload)
    eval_padded = sum(b.padded for b in workload.eval_batches)
    counts = _counts(config, workload, cal.end_evaluations)
    epoch_steps_s = sum(cal.fb_s_per_token * tokens + cal.step_overhead_s for tokens in step_tokens)
    eval_s = cal.eval_s_per_token * eval_padded
    fixed = cal.fixed_s + (first_plot_s if cal.plots_warm and config.monitor.plots else 0.0)
    # one epoch as a run of its own: its steps, the evaluations and the checkpoint a run ends with
    one_epoch = config.model_copy(update={"training": config.training.model_copy(update={"epochs": 1.0, "max_steps": -1})})
    epoch_only = _counts(one_epoch, workload, cal.end_evaluations)
    epoch = fixed + cal.warmup_excess_s + epoch_steps_s + epoch_only["evals"] * eval_s + epoch_only["saves"] * cal.save_s
    mean_step = epoch_steps_s / len(step_tokens)
    total = (fixed + cal.warmup_excess_s + counts["steps"] * mean_step + counts["evals"] * eval_s
             + counts["saves"] * cal.save_s)
    return Timing(
        epoch_s=epoch, total_s=total, load_s=cal.load_s, source="calibration",
        steps_per_epoch=workload.steps_per_epoch, total_steps=counts["steps"],
        detail={"seconds_per_step": round(mean_step, 4), "evaluations": counts["evals"], "checkpoint_saves": counts["saves"],
                "calibration": cal.to_dict()},
    )


def flops_per_token(parameters: Parameters, hf_config: Any, seq: int, *, train_full: bool) -> tuple[float, float]:
    """(training, evaluation) FLOPs per padded token: 6N (full) or 4N (frozen base: no weight gradients) and 2N,
    plus attention scores (4 x layers x seq x attention width per token forward)."""
    text = getattr(hf_config, "text_config", None) or hf_config
    heads = text.num_attention_heads
    width = heads * (getattr(text, "head_dim", None) or text.hidden_size // heads)
    attention = 4 * text.num_hidden_layers * seq * width
    n = parameters.total
    forward = 2 * n + attention
    return (3 if train_full else 2) * forward, forward


def objective_timing(timing: Timing, objective: Objective) -> Timing:
    """``timing`` of supervised steps (calibrated or from FLOPs) scaled to ``objective``'s: its train_rows sequences
    with forward and backward (3 forward-equivalents each) and its reference_rows forward passes without gradients
    (1 each), against SFT's one sequence (3)."""
    factor = (3 * objective.train_rows + objective.reference_rows) / 3
    if factor == 1:
        return timing
    detail = dict(timing.detail, objective=objective.name, objective_time_factor=round(factor, 3))
    if "seconds_per_step" in detail:
        detail["seconds_per_step"] = round(detail["seconds_per_step"] * factor, 4)
    return replace(timing, epoch_s=timing.epoch_s * factor, total_s=timing.total_s * factor, detail=detail)


def time_from_flops(config: Config, workload: Workload, parameters: Parameters, hf_config: Any, *, device: str,
                    dtype: torch.dtype, peak_flops: float | None = None) -> Timing:
    from tunewise.decide.calibrate import matmul_flops

    peak = peak_flops or matmul_flops(device, dtype)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    rate = peak * FLOPS_EFFICIENCY[kind]
    mean_seq = workload.padded_tokens / max(sum(b.rows for b in workload.batches), 1)
    train_f, eval_f = flops_per_token(parameters, hf_config, int(mean_seq), train_full=config.method == "full")
    counts = _counts(config, workload)
    epoch_steps_s = workload.padded_tokens * train_f / rate
    eval_s = sum(b.padded for b in workload.eval_batches) * eval_f / rate
    epoch = epoch_steps_s + eval_s
    total = epoch_steps_s * counts["steps"] / workload.steps_per_epoch + counts["evals"] * eval_s
    return Timing(
        epoch_s=epoch, total_s=total, load_s=0.0, source="flops", steps_per_epoch=workload.steps_per_epoch,
        total_steps=counts["steps"],
        detail={"seconds_per_step": round(epoch_steps_s / workload.steps_per_epoch, 4), "evaluations": counts["evals"],
                "checkpoint_saves": counts["saves"], "train_flops_per_token": train_f, "eval_flops_per_token": eval_f,
                "measured_matmul_flops": round(peak), "efficiency": FLOPS_EFFICIENCY[kind]},
    )


# --------------------------------------------------------------------------------------------------------------------
# cost


def estimate_cost(timing: Timing, workload: Workload, config: Config, *, price_per_hour: float | None,
                  api_price_per_1m: float | None) -> dict[str, Any]:
    """Device cost of the configured run (load + training) and API-style cost (tokens x epochs x price)."""
    hours = (timing.load_s + timing.total_s) / 3600
    epochs = timing.total_steps / max(workload.steps_per_epoch, 1)
    tokens = workload.tokens * epochs
    cost: dict[str, Any] = {"device_hours": round(hours, 5), "billed_tokens": round(tokens), "epochs": round(epochs, 3)}
    if price_per_hour is not None:
        cost["device_cost"] = round(hours * price_per_hour, 4)
        cost["price_per_hour"] = price_per_hour
    if api_price_per_1m is not None:
        cost["api_cost"] = round(tokens / 1e6 * api_price_per_1m, 4)
        cost["api_price_per_1m_tokens"] = api_price_per_1m
    return cost


# --------------------------------------------------------------------------------------------------------------------
# putting it together


def estimate_method(
    config: Config,
    method: str,
    workload: Workload,
    *,
    records: Sequence[dict[str, Any]] = (),
    val_records: Sequence[dict[str, Any]] = (),
    calibrate: bool = True,
    calibration_steps: int = 4,
    runtime_bytes: int = 0,
    first_plot_s: float = 0.0,
    memory_limit_mb: float | None = None,
    price_per_hour: float | None = None,
    api_price_per_1m: float | None = None,
    progress: Progress | None = None,
    devices: int = 1,
) -> MethodEstimate:
    """Memory, time and cost of training ``config`` with ``method`` on ``workload``.

    Calibration trains a few real steps (needs ``records``) when ``calibrate`` is true and the estimated peak fits
    in ``memory_limit_mb``; otherwise time comes from FLOPs. With ``devices`` > 1, also the per-device memory of each
    sharding engine over that many devices (not for qlora, which tunewise does not shard).
    """
    from tunewise.decide import footprint
    from tunewise.decide.workload import build_workload, for_method
    from tunewise.lm.adapters import get_method

    say = progress or (lambda message: None)
    cfg = footprint.method_config(config, method)
    workload = for_method(workload, cfg, method)
    precision = precision_for(cfg)
    device = precision.device
    dtype = precision.dtype if get_method(method).saves_adapter else torch.float32
    say(f"{method}: building the model on the meta device")
    _, prepared = footprint.build_meta_model(cfg, dtype=dtype)
    parameters = footprint.count_meta_parameters(cfg, prepared, dtype=dtype)
    act_model = prepared
    if method == "full" and precision.dtype != torch.float32:  # full fine-tuning under autocast: half-precision activations
        _, act_model = footprint.build_meta_model(cfg, dtype=precision.dtype)
    hf_config = footprint.model_config(cfg.model, trust_remote_code=cfg.trust_remote_code)
    vocab = (getattr(hf_config, "text_config", None) or hf_config).vocab_size
    # QLoRA on CPU: the checkpoint's memory map stays open (unquantized weights point into it)
    mapped = (footprint.checkpoint_bytes(cfg.model) or 0) if method == "qlora" and device == "cpu" else 0

    objective = get_objective(cfg.objective)
    # a preference objective trains train_rows sequences per example (chosen + rejected); a full model's reference is
    # a frozen copy of its weights (an adapter's reference is its disabled adapter: nothing more)
    rows = objective.train_rows
    reference_copy = parameters.weight_bytes if objective.needs_reference and not get_method(method).saves_adapter else 0

    def memory_for(work: Workload) -> tuple[Memory, Activations]:
        peak = work.peak_batch
        acts = footprint.activations(cfg, act_model, peak.rows * rows, peak.length, dtype=dtype,
                                     masked=work.packing or peak.rows * rows > 1)
        return estimate_memory(cfg, parameters, acts, device=device, runtime_bytes=runtime_bytes + reference_copy,
                               vocab_size=vocab, trained_tokens=peak.trained * rows, mapped_checkpoint=mapped), acts

    memory, acts = memory_for(workload)
    fits = None if memory_limit_mb is None else memory.peak() / MiB <= memory_limit_mb
    timing: Timing | None = None
    if calibrate and records and fits is not False:
        from tunewise.decide.calibrate import calibrate as run_calibration

        # fast steps are timed over more of them, so the timed part stays above the timer's and machine's noise
        guess = time_from_flops(cfg, workload, parameters, hf_config, device=device, dtype=dtype).detail["seconds_per_step"]
        steps = min(max(calibration_steps, math.ceil(MIN_TIMED_S / max(guess, 1e-6))), MAX_CALIBRATION_STEPS)
        try:
            cal = run_calibration(cfg, workload, records, val_records, steps=steps, progress=progress)
            if cal.packing != workload.packing:  # the model refused packed batches: training pads, so estimate padding
                raw = cfg.model_dump(mode="json")
                raw["training"]["packing"] = False
                cfg = footprint.config_from_dict(raw)
                workload = build_workload(cfg, workload.features, workload.val_features, source=workload.source)
                memory, acts = memory_for(workload)
                fits = None if memory_limit_mb is None else memory.peak() / MiB <= memory_limit_mb
            timing = time_from_calibration(cfg, workload, cal, first_plot_s=first_plot_s)
        except (OSError, RuntimeError, ValueError, ImportError) as exc:
            log.warning("calibration of %s failed (%s); time from FLOPs instead", method, exc)
    if timing is None:
        say(f"{method}: time from FLOPs")
        timing = time_from_flops(cfg, workload, parameters, hf_config, device=device, dtype=dtype)
    timing = objective_timing(timing, objective)
    cost = estimate_cost(timing, workload, cfg, price_per_hour=price_per_hour, api_price_per_1m=api_price_per_1m)
    sharded: dict[str, Memory] = {}
    if devices > 1 and method != "qlora":
        units = footprint.shard_units(prepared)
        sharded = {engine: shard_memory(memory, units, engine, devices) for engine in SHARDING_ENGINES}
    return MethodEstimate(method=method, parameters=parameters, memory=memory, timing=timing, activations=acts,
                          cost=cost, fits=fits, sharded=sharded, devices=devices, memory_limit_mb=memory_limit_mb)


def estimate_run(
    config: Config,
    run_dir: str | Path,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    calibrate: bool = True,
    calibration_steps: int = 4,
    price_per_hour: float | None = None,
    api_price_per_1m: float | None = None,
    workload: Workload | None = None,
    progress: Progress | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Estimate each of ``methods`` for ``config`` on its prepared data (RUN/data). Writes RUN/estimate.json.

    ``workload`` replaces the prepared data (e.g. :func:`tunewise.decide.workload.synthetic_workload`); then there is
    nothing to calibrate on and time comes from FLOPs.
    """
    from tunewise.decide.calibrate import runtime_baseline
    from tunewise.decide.workload import workload_from_run
    from tunewise.lm.adapters import get_method
    from tunewise.rundir import atomic_write_json

    say = progress or (lambda message: None)
    for m in methods:
        get_method(m)  # unknown names fail before any work
    records: list[dict[str, Any]] = []
    val_records: list[dict[str, Any]] = []
    if workload is None:
        say("reading the prepared data")
        workload, records, val_records = workload_from_run(config, run_dir)
    precision = precision_for(config)
    hardware = available_memory(precision.device)
    runtime_mb, runtime_source, first_plot_s = 0.0, "not counted on CUDA (allocated tensor memory)", 0.0
    if precision.device == "cpu" or calibrate:
        say("measuring the runtime's memory (once)")
        runtime = runtime_baseline(config)
        first_plot_s = runtime.first_plot_s
        if precision.device == "cpu":
            runtime_mb, runtime_source = runtime.mb, runtime.source
    devices = config.decide.devices or default_devices(precision.device)
    estimates = {}
    for m in methods:
        estimates[m] = estimate_method(
            config, m, workload, records=records, val_records=val_records, calibrate=calibrate,
            calibration_steps=calibration_steps, runtime_bytes=int(runtime_mb * MiB), first_plot_s=first_plot_s,
            memory_limit_mb=hardware["available_mb"], price_per_hour=price_per_hour,
            api_price_per_1m=api_price_per_1m, progress=progress, devices=devices,
        )
    report = {
        "model": config.model,
        "device": describe_device(precision.device),
        "hardware": hardware,
        "precision": str(precision.dtype).replace("torch.", ""),
        "workload": workload.summary(),
        "runtime_mb": runtime_mb,
        "runtime_source": runtime_source,
        "devices": devices,
        "methods": {m: e.to_dict() for m, e in estimates.items()},
        "assumptions": assumptions(precision.device, devices),
    }
    if write:
        atomic_write_json(RunDir.of(run_dir).estimate, report)
    return report


def assumptions(device: str, devices: int = 1) -> list[str]:
    """The stated assumptions behind the numbers, printed with them."""
    factor = CPU_ACTIVATION_FACTOR if device == "cpu" else CUDA_ACTIVATION_FACTOR
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return [
        "parameters and activations counted on the meta device from the model's config (no weights loaded)",
        f"activation memory x {factor} ({'glibc heap retention on CPU, measured' if kind == 'cpu' else 'allocated bytes on CUDA'})",
        "peak batch = the epoch's batch with the most computed tokens, shaped by the training collator (packed rows or "
        "padding)",
        "time scaled from a short real calibration run; FLOPs fallback at "
        f"{FLOPS_EFFICIENCY[kind]:.0%} of the measured matmul throughput",
        "API cost bills non-padding tokens of the training split (local tokenizer) x epochs",
        *([f"sharded over {devices} devices (one process each; on CPU a device is a machine's memory): fsdp/zero3 "
           "divide weights, gradients and optimizer states and gather the root and two decoder layers; zero2 divides "
           "gradients and optimizer states; time is one device's"] if devices > 1 else []),
    ]


FITS_SHARE = 0.9
"""An estimated peak above this share of the memory available does not fit (the estimate's margin; the same threshold
as the warning the pipeline prints before training)."""


def checkpointing_choice(config: Config, run_dir: str | Path, memory: dict[str, Any] | None = None,
                         available_mb: float | None = None) -> dict[str, Any] | None:
    """How a run with ``training.gradient_checkpointing: null`` saves memory when the estimate says it must (None when
    the config sets it), cheapest first: nothing when the estimated peak fits in 90% of the memory available; else on
    CPU, freed blocks returned to the OS (tunewise/train/allocator.py: ~15% more CPU time) when that fits; else
    activation checkpointing (~30-50% more compute), with freed blocks returned where possible.
    ``memory``/``available_mb``: an estimate's memory part (``Memory.to_dict``) and the memory available; estimated
    here without calibration when not given. No estimate (an error): nothing, and why.
    Returns what train_summary.json records: ``on`` (checkpointing), ``return_freed_memory``, ``reason`` (one line)
    and the estimated peaks."""
    if config.training.gradient_checkpointing is not None:
        return None
    try:
        if memory is None or available_mb is None:
            report = estimate_run(config, run_dir, [config.method], calibrate=False, write=False)
            memory = report["methods"][config.method]["memory"]
            available_mb = report["hardware"]["available_mb"]
        without = float(memory["peak_mb_without_checkpointing"])
        checkpointed = float(memory["peak_mb_with_checkpointing"])
        returned = memory.get("peak_mb_returning_freed_memory")
        if returned is not None:
            checkpointed = float(memory["peak_mb_with_checkpointing_returning_freed_memory"])
        available = float(available_mb)
    except Exception as err:  # noqa: BLE001 - an estimate is advice: training goes on as configured
        return {"on": False, "return_freed_memory": False, "reason": f"no memory estimate ({err}): nothing changed"}
    gb = lambda mb: f"{mb / 1024:.1f} GB"  # noqa: E731
    numbers = {"available_mb": round(available), "peak_mb": round(without), "peak_mb_with_checkpointing": round(checkpointed)}
    if returned is not None:
        numbers["peak_mb_returning_freed_memory"] = round(float(returned))
    limit = FITS_SHARE * available
    if without <= limit:
        return {"on": False, "return_freed_memory": False, **numbers,
                "reason": f"the estimated peak {gb(without)} fits in the {gb(available)} available"}
    head = f"the estimated peak {gb(without)} exceeds the {gb(available)} available"
    if returned is not None and float(returned) <= limit:
        return {"on": False, "return_freed_memory": True, **numbers,
                "reason": f"{head}; ~{gb(float(returned))} with freed memory returned to the OS"}
    if checkpointed >= without:
        return {"on": False, "return_freed_memory": returned is not None, **numbers,
                "reason": f"{head}, and activation checkpointing would not lower it"}
    return {"on": True, "return_freed_memory": returned is not None, **numbers,
            "reason": f"{head}; ~{gb(checkpointed)} with activation checkpointing"
                      + ("" if checkpointed <= limit else " (still more: lower the batch size or data.max_tokens)")}
