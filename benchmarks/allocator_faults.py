"""The CPU price of returning freed blocks to the OS (tunewise/train/allocator.py): allocate and fill the activations
of a forward pass (SmolLM2-135M-sized tensors: 30 layers of gate/up/product, hidden-wide and attention tensors of a
5 x 580 packed batch, with transients freed at once), free them, four passes, in one process per setting, A B B A.

Printed per process and pass: CPU seconds (user + system), system seconds, minor page faults.

    OMP_NUM_THREADS=1 python benchmarks/allocator_faults.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(mode: str) -> None:
    import torch

    torch.set_num_threads(1)
    if mode == "returned":
        sys.path.insert(0, str(ROOT))
        from tunewise.train.allocator import return_freed_memory_to_os

        assert return_freed_memory_to_os()
    shapes = [(5, 580, 1536)] * 3 + [(5, 580, 576)] * 4 + [(5, 9, 580, 64)] * 4
    passes = []
    for _ in range(4):
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        keep = []
        for _layer in range(30):
            keep.extend(torch.empty(s).fill_(1.0) for s in shapes)
            transients = [torch.empty(s).fill_(2.0) for s in shapes[:4]]
            del transients
        gb = sum(t.numel() * 4 for t in keep) / 1e9
        del keep
        after = resource.getrusage(resource.RUSAGE_SELF)
        passes.append({"cpu_s": round(time.process_time() - started, 3), "sys_s": round(after.ru_stime - before.ru_stime, 3),
                       "minor_faults": after.ru_minflt - before.ru_minflt, "kept_gb": round(gb, 2)})
    print("RESULT " + json.dumps(passes))


def main() -> None:
    if len(sys.argv) > 1:
        child(sys.argv[1])
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    for mode in ("glibc", "returned", "returned", "glibc"):
        out = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True, env=env)
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        print(f"{mode:>9}: {line[7:] if line else out.stderr[-500:]}", flush=True)


if __name__ == "__main__":
    main()
