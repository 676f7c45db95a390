"""``tunewise train --nproc N``: the same training in N processes through torchrun (DistributedDataParallel).

On CPU the processes talk through gloo and each gets ``cpus // N`` threads (more would oversubscribe the cores,
which on a small machine is slower than one process); on GPUs torchrun gives each process its own device
(``LOCAL_RANK``) and NCCL. ``accelerate launch --cpu --num_processes 2`` started only one process here, so torchrun
is called directly. DeepSpeed / FSDP settings pass through ``training.deepspeed`` / ``training.fsdp``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence


class DistributedTrainingFailed(RuntimeError):
    """A torchrun worker exited with an error; its output says why."""


def torchrun_command(run_dir: str | Path, nproc: int, *, resume: bool = False, overrides: Sequence[str] = ()) -> list[str]:
    """The command that trains ``run_dir`` in ``nproc`` local processes."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "tunewise", "train", str(run_dir), *(["--resume"] if resume else []), *overrides,
    ]


def worker_environment(nproc: int) -> dict[str, str]:
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def launch(run_dir: str | Path, nproc: int, *, resume: bool = False, overrides: Sequence[str] = ()) -> None:
    """Run the training of ``run_dir`` under torchrun and wait; raises :class:`DistributedTrainingFailed` on error."""
    command = torchrun_command(run_dir, nproc, resume=resume, overrides=overrides)
    completed = subprocess.run(command, env=worker_environment(nproc), check=False)
    if completed.returncode != 0:
        raise DistributedTrainingFailed(
            f"torchrun exited with code {completed.returncode} (see the workers' output above); command: {' '.join(command)}"
        )
