"""Memory as the monitor reports it: peak process RSS on CPU, allocated/reserved peaks on CUDA."""

from __future__ import annotations

import resource
import sys

import torch


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def memory_snapshot() -> dict[str, float]:
    snap = {"peak_rss_mb": peak_rss_mb()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        snap["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        snap["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return snap
