"""Give the memory of freed activations back to the OS during CPU training (glibc's malloc), when memory is tight.

glibc serves large blocks with ``mmap`` (returned to the OS when freed) only above a threshold that it *raises* each
time such a block is freed, up to 32 MiB: after the first training step, a step's activations (blocks of 1-20 MiB
on SmolLM2-135M at batch 8) come from the heap, and a freed heap block stays in the process. The forward's
temporaries then stay resident next to the activations autograd keeps: the process peaked at ~2x the saved
activations (benchmarks/memory_profile.py: +7.6 GB for 3.7 GB saved). A fixed threshold keeps every block from
256 KiB up on ``mmap``: each is returned when freed, and the peak follows what is alive (+4.6 GB for the same step).
The price is a page fault per 4 KiB the next block touches: ~3.5 CPU s per 4.8 GB allocated on this machine, about
15% of a step, so it is used only when the estimate says the run would not fit otherwise (tunewise/decide/estimate.py:
``checkpointing_choice``), or when ``TUNEWISE_MALLOC_TUNING=1``. ``TUNEWISE_MALLOC_TUNING=0`` or a
``MALLOC_MMAP_THRESHOLD_`` of the user's own (glibc's variable) turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc malloc.h
MMAP_THRESHOLD = 256 * 1024


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # gnu_get_libc_version exists in glibc only: another libc's mallopt may take other parameter numbers
        libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    return libc


def tuning_setting() -> bool | None:
    """``TUNEWISE_MALLOC_TUNING``: True (always), False (never; also when the user set ``MALLOC_MMAP_THRESHOLD_``, or
    on a libc other than glibc), None (automatic: when the memory estimate asks for it)."""
    forced = os.environ.get("TUNEWISE_MALLOC_TUNING", "").strip()
    if forced == "0" or os.environ.get("MALLOC_MMAP_THRESHOLD_") or _glibc() is None:
        return False
    return True if forced == "1" else None


def return_freed_memory_to_os(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (module docstring). True when set; False
    on a libc without ``mallopt`` (musl, macOS, Windows), when the user set ``MALLOC_MMAP_THRESHOLD_`` or
    ``TUNEWISE_MALLOC_TUNING=0``."""
    libc = _glibc()
    if tuning_setting() is False or libc is None:
        return False
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    if ok:
        log.info("glibc mmap threshold fixed at %d bytes: freed activations go back to the OS", threshold)
    return ok
