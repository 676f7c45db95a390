"""Inference benchmark: what deploying each form of the model costs on this machine.

For every variant that exists (base, tuned = adapter on base or the full fine-tune, merged, quantized exports):

* latency at batch size 1, one request per test prompt: time to first token (prefill + first decode step) and time
  per output token after the first, as p50 / p95 over the requests (timestamps from a generation streamer);
* throughput in generated tokens/s at each batch size (left-padded batches of test prompts);
* memory: weights in memory, and peak resident memory while the variant is loaded and run (sampled every 5 ms on
  CPU; CUDA's peak allocator statistics on a GPU).

Every request generates exactly ``new_tokens`` tokens (``min_new_tokens``): variants that stop earlier would look
faster otherwise. Results go to RUN/bench/bench.json and RUN/plots/bench_*.png (embedded in the report).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from tunewise.config import Config
from tunewise.export.common import (
    MERGED,
    export_problem,
    export_root,
    load_exported,
    quiet_quantization_warnings,
    sample_examples,
)
from tunewise.lm.chat import render_prompt
from tunewise.lm.device import describe_device
from tunewise.lm.loading import load_model, load_tokenizer
from tunewise.rundir import RunDir, atomic_write_json

log = logging.getLogger(__name__)

VARIANTS = ("base", "tuned", "merged", "int8", "bnb-8bit", "bnb-4bit")
Loader = Callable[[], tuple[Any, Any]]


class TokenTimer:
    """A ``generate`` streamer that records when each new token arrives (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


class PeakMemory:
    """Peak resident memory (MiB) while the block runs: RSS sampled by a thread on CPU, allocator peak on CUDA."""

    def __init__(self, device: str, interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        """Current resident memory (Linux /proc; elsewhere the lifetime peak, the best the OS offers)."""
        try:
            with open("/proc/self/statm", encoding="ascii") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            from tunewise.monitor.memory import peak_rss_mb

            return peak_rss_mb()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
            return self
        self.start_mb = self.peak_mb = self.rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.startswith("cuda"):
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds, looking inside tensor subclasses (torchao's int8 tensors hold int8 data + scales)."""
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def weights_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers, tied weights counted once.

    ``get_memory_footprint`` counts torchao's quantized tensors at their float size, so it is not used here.
    """
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """p50 / p95 / mean of ``values`` (seconds) in milliseconds."""
    a = np.asarray(values, dtype=float) * scale
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "mean": float(a.mean()),
            "n": int(a.size)}


def _inputs(tokenizer: Any, prompts: Sequence[str], device: Any) -> Any:
    tokenizer.padding_side = "left"
    return tokenizer(list(prompts), add_special_tokens=False, padding=True, return_tensors="pt").to(device)


def _generate(model: Any, tokenizer: Any, inputs: Any, new_tokens: int, streamer: Any = None) -> Any:
    return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id, streamer=streamer)


@torch.inference_mode()
def measure_latency(model: Any, tokenizer: Any, prompts: Sequence[str], new_tokens: int) -> dict[str, Any]:
    """Batch-1 time to first token and time per later output token, one request per prompt."""
    device = next(model.parameters()).device
    ttft, per_token = [], []
    for prompt in prompts:
        inputs = _inputs(tokenizer, [prompt], device)
        timer = TokenTimer()
        started = time.perf_counter()
        _generate(model, tokenizer, inputs, new_tokens, streamer=timer)
        ttft.append(timer.times[0] - started)
        if len(timer.times) > 1:
            per_token.append((timer.times[-1] - timer.times[0]) / (len(timer.times) - 1))
    return {"ttft_ms": percentiles(ttft), "per_token_ms": percentiles(per_token) if per_token else None}


@torch.inference_mode()
def measure_throughput(
    model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int, new_tokens: int, rounds: int
) -> dict[str, Any]:
    """Generated tokens per second over ``rounds`` batches of ``batch_size`` prompts (cycled)."""
    device = next(model.parameters()).device
    total, elapsed = 0, 0.0
    for r in range(rounds):
        batch = [prompts[(r * batch_size + i) % len(prompts)] for i in range(batch_size)]
        inputs = _inputs(tokenizer, batch, device)
        started = time.perf_counter()
        output = _generate(model, tokenizer, inputs, new_tokens)
        elapsed += time.perf_counter() - started
        total += (output.shape[1] - inputs["input_ids"].shape[1]) * batch_size
    return {"batch_size": batch_size, "tokens_per_s": total / elapsed, "tokens": total, "seconds": elapsed}


def variant_loaders(config: Config, run: RunDir, device: str) -> tuple[dict[str, Loader], dict[str, str]]:
    """(loaders of the variants that exist, {variant: why it is skipped}) for this run."""
    from tunewise.evaluate.run import load_for_eval

    loaders: dict[str, Loader] = {}
    skipped: dict[str, str] = {}
    trc = config.trust_remote_code
    loaders["base"] = lambda: (load_model(config.model, device=device, trust_remote_code=trc),
                               load_tokenizer(config.model, trust_remote_code=trc))
    if run.model.is_dir():
        loaders["tuned"] = lambda: load_for_eval(config, "tuned", run, device=device, dtype=torch.float32)
    else:
        skipped["tuned"] = "no RUN/model: train first (`tunewise train RUN`)"
    for name in VARIANTS[2:]:
        folder = export_root(run) / name
        problem = export_problem(folder) if folder.exists() else None
        if problem:
            how = "--merge" if name == MERGED else f"--quantize {name}"
            skipped[name] = f"incomplete export, skipped ({problem}): export it again with `tunewise export RUN {how}`"
            log.warning("bench: %s: %s", name, skipped[name])
        elif folder.exists():
            loaders[name] = lambda folder=folder: (load_exported(folder, device=device, trust_remote_code=trc),
                                                   load_tokenizer(str(folder), trust_remote_code=trc))
        elif name == MERGED:
            skipped[name] = "not exported: `tunewise export RUN --merge`"
        else:
            skipped[name] = f"not exported: `tunewise export RUN --quantize {name}`"
    return loaders, skipped


def bench_variant(
    loader: Loader, prompts_messages: Sequence[Any], *, batch_sizes: Sequence[int], new_tokens: int, rounds: int,
    device: str,
) -> dict[str, Any]:
    """Load one variant and measure it (latency, throughput per batch size, memory)."""
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        model, tokenizer = loader()
        model.eval()
        load_s = time.perf_counter() - started
        prompts = [render_prompt(m, tokenizer) for m in prompts_messages]
        _generate(model, tokenizer, _inputs(tokenizer, prompts[:1], next(model.parameters()).device), 2)  # warm-up
        result: dict[str, Any] = {"load_s": load_s, "weights_mb": weights_bytes(model) / 2**20}
        result.update(measure_latency(model, tokenizer, prompts, new_tokens))
        result["throughput"] = [measure_throughput(model, tokenizer, prompts, b, new_tokens, rounds) for b in batch_sizes]
    result["peak_memory_mb"] = memory.peak_mb
    result["memory_growth_mb"] = memory.peak_mb - memory.start_mb
    del model
    gc.collect()
    return result


def bench_run(
    config: Config,
    run_dir: str | Path,
    *,
    variants: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    new_tokens: int = 32,
    prompts: int = 8,
    rounds: int = 2,
    device: str = "cpu",
    threads: int | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Benchmark the run's variants; write RUN/bench/bench.json and RUN/plots/bench_{throughput,latency}.png.

    ``threads`` sets torch's CPU threads for the benchmark (restored after). On a busy machine fewer threads than
    cores can be many times faster: OpenMP threads spin-wait for cores other processes hold.
    """
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench(config, run_dir, variants=variants, batch_sizes=batch_sizes, new_tokens=new_tokens,
                      prompts=prompts, rounds=rounds, device=device, plot=plot)
    finally:
        torch.set_num_threads(previous_threads)


def _bench(
    config: Config,
    run_dir: str | Path,
    *,
    variants: Sequence[str] | None,
    batch_sizes: Sequence[int],
    new_tokens: int,
    prompts: int,
    rounds: int,
    device: str,
    plot: bool,
) -> dict[str, Any]:
    if new_tokens < 2 or min(batch_sizes) < 1 or prompts < 1 or rounds < 1:
        raise ValueError("bench needs new_tokens >= 2 and batch sizes, prompts and rounds >= 1")
    quiet_quantization_warnings()
    run = RunDir.of(run_dir)
    loaders, skipped = variant_loaders(config, run, device)
    if variants:
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
        missing = {v: skipped[v] for v in variants if v in skipped}
        if missing:
            raise ValueError("; ".join(f"{v}: {why}" for v, why in missing.items()))
        loaders = {v: loaders[v] for v in variants}
    messages = [e.prompt_messages for e in sample_examples(run, prompts)]
    report: dict[str, Any] = {
        "device": describe_device(device),
        "torch_threads": torch.get_num_threads(),
        "new_tokens": new_tokens,
        "prompts": len(messages),
        "batch_sizes": list(batch_sizes),
        "rounds": rounds,
        "variants": {},
        "skipped": {k: v for k, v in skipped.items() if k not in loaders},
    }
    for name, loader in loaders.items():
        log.info("bench %s", name)
        report["variants"][name] = bench_variant(loader, messages, batch_sizes=batch_sizes, new_tokens=new_tokens,
                                                 rounds=rounds, device=device)
    atomic_write_json(run.bench_report, report)
    if plot:
        from tunewise.export.bench_plots import plot_bench

        report["plots"] = [str(p) for p in plot_bench(report, run.plots)]
    return report
