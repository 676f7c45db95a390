"""Device and precision chosen for the machine: bf16 (else fp16) on CUDA; on a CPU, bf16 where it multiplies bf16
natively (``avx512_bf16`` or AMX), else fp32.

On such a CPU, bf16 autocast trained the long-row benchmark at 1.92x a plain fp32 recipe's tokens per CPU second with
the same eval loss to 4 digits (docs/performance.md, measured on a Xeon with AMX); elsewhere bf16 is emulated and
measured no faster (FIELD-NOTES), so those CPUs stay in fp32. A quantized base (QLoRA) stays in fp32 compute on a CPU
unless bf16 is asked for: its gradient check (tunewise/train/verify_quantized.py) was measured in fp32.
``training.bf16: true | false`` decides for one run, ``TUNEWISE_CPU_BF16=1 | 0`` for every run (the test suite pins 0,
and tests/test_memory_precision.py forces both paths).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of a CPU that multiplies bf16 natively."""


@dataclass(frozen=True)
class Precision:
    device: str
    bf16: bool
    fp16: bool

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32

    @property
    def name(self) -> str:
        """bf16 / fp16 (autocast) or fp32, as train_summary.json and the logs say it."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"


def pick_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: ``avx512_bf16`` or AMX in /proc/cpuinfo, or (elsewhere) torch's own
    CPU capability naming AMX."""
    flags = _cpuinfo_flags()
    if flags:
        return any(flag in flags for flag in CPU_BF16_FLAGS)
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return "AMX" in str(capability).upper()


def cpu_bf16_automatic(quantized: bool = False) -> bool:
    """The automatic CPU choice: ``TUNEWISE_CPU_BF16`` (1 or 0) if set, else bf16 where the CPU has bf16 units and the
    base is not quantized (module docstring)."""
    forced = os.environ.get("TUNEWISE_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return not quantized and cpu_has_bf16()


def resolve_precision(bf16: bool | None = None, fp16: bool | None = None, device: str | None = None, *,
                      quantized: bool = False) -> Precision:
    """Fill in automatic (``None``) precision settings; refuse combinations the device can't run.

    Automatic: bf16 on a CUDA GPU that has it (else fp16); on a CPU :func:`cpu_bf16_automatic` (``quantized``: the
    base is loaded in 4 or 8 bits)."""
    device = device or pick_device()
    cuda = device.startswith("cuda")
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if bf16 and fp16:
        raise ValueError("training.bf16 and training.fp16 can't both be true; choose one (or leave both null for automatic)")
    if bf16 and not bf16_ok and cuda:
        raise ValueError("training.bf16: this GPU has no bf16 support; set training.fp16=true or leave both null")
    if fp16 and not cuda:
        raise ValueError("training.fp16 needs a CUDA GPU; on CPU leave it null (fp32 is used)")
    if bf16 is None and fp16 is None:
        if cuda:
            bf16, fp16 = bf16_ok, not bf16_ok
        else:
            bf16, fp16 = device == "cpu" and cpu_bf16_automatic(quantized), False
    # bf16 on any CPU is allowed when asked for (autocast works; without bf16 units it is emulated, measured no faster)
    if bf16 and device == "cpu":
        bound_onednn_cache()
    return Precision(device=device, bf16=bool(bf16), fp16=bool(fp16))


ONEDNN_CACHE_CAPACITY = "64"
"""oneDNN's primitive cache under CPU bf16: a primitive (with its AMX-reordered weights) per matmul shape, 1,024 by
default, and packed batches have many shapes. Measured on SmolLM2-135M (80 steps, runs side by side with the default):
peak RSS -690 MiB at 16 (+44% time), -530 MiB at 64 (+4%), -330 MiB at 256 (same time) (docs/performance.md)."""


def bound_onednn_cache() -> None:
    """Cap oneDNN's primitive cache at :data:`ONEDNN_CACHE_CAPACITY` unless the user set one. oneDNN reads the
    variable when it builds its cache, at the process's first bf16 matmul, which comes after this is called."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)


def describe_device(device: str | None = None) -> str:
    device = device or pick_device()
    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(0)})"
    bf16 = ", bf16 matmul units: bf16 autocast by default" if device == "cpu" and cpu_has_bf16() else ""
    return f"{device} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads{bf16})"


def precision_for(config: Any) -> Precision:
    """The precision a run of ``config`` trains and evaluates in (training.bf16 / fp16, the base quantized or not)."""
    return resolve_precision(config.training.bf16, config.training.fp16, quantized=config.quantization is not None)


def evaluation_dtype(precision: Precision) -> torch.dtype:
    """The dtype evaluation loads a model in: the training precision on a GPU, fp32 on a CPU whatever training used.

    Measured on a CPU with AMX (docs/performance.md): bf16 made batched generation faster but label ranking 2-4x
    slower (the quickstart's base evaluation 201 s against 74 s in fp32), and 2-4 of 16 greedy answers then depend on
    the batch a prompt ran in; fp32 answers are batch-invariant, so an evaluation's numbers do not move with
    ``eval.batch_size``."""
    return torch.float32 if precision.device == "cpu" else precision.dtype
