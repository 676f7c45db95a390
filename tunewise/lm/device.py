"""Device and precision chosen for the machine: bf16/fp16 on CUDA, fp32 on CPU unless bf16 is asked for.

On a CPU, bf16 autocast can pay only where the CPU multiplies bf16 natively (``avx512_bf16`` or AMX); elsewhere it is
emulated and measured no faster (FIELD-NOTES). Its speed on such a CPU has not been measured (no machine this project
is built on has the units), so the automatic choice stays fp32 on every CPU and a run's numbers do not depend on the
CPU it runs on: ``training.bf16: true`` (or ``TUNEWISE_CPU_BF16=1`` for every run) turns it on; :func:`cpu_has_bf16`
tells ``tunewise doctor`` and the device line whether it could pay here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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


def resolve_precision(bf16: bool | None = None, fp16: bool | None = None, device: str | None = None) -> Precision:
    """Fill in automatic (``None``) precision settings; refuse combinations the device can't run.

    Automatic: bf16 on a CUDA GPU that has it (else fp16); fp32 on a CPU, unless ``TUNEWISE_CPU_BF16=1`` asks for
    bf16 autocast there (module docstring)."""
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
            bf16, fp16 = device == "cpu" and os.environ.get("TUNEWISE_CPU_BF16", "").strip() == "1", False
    # bf16 on any CPU is allowed when asked for (autocast works; without bf16 units it is emulated, measured no faster)
    return Precision(device=device, bf16=bool(bf16), fp16=bool(fp16))


def describe_device(device: str | None = None) -> str:
    device = device or pick_device()
    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(0)})"
    bf16 = ", bf16 matmul units: training.bf16=true may be faster, unmeasured" if device == "cpu" and cpu_has_bf16() else ""
    return f"{device} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads{bf16})"
