"""Device and precision chosen for the machine: bf16/fp16 on CUDA, fp32 on CPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def resolve_precision(bf16: bool | None = None, fp16: bool | None = None, device: str | None = None) -> Precision:
    """Fill in automatic (``None``) precision settings; refuse combinations the device can't run."""
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
        bf16, fp16 = bf16_ok, cuda and not bf16_ok
    # bf16 on CPU is allowed when asked for explicitly (autocast works, measured no faster here)
    return Precision(device=device, bf16=bool(bf16), fp16=bool(fp16))


def describe_device(device: str | None = None) -> str:
    device = device or pick_device()
    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(0)})"
    import os

    return f"{device} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
