"""``tunewise train --nproc N [--nnodes M ...]``: the same training in N processes per machine on M machines, through
torchrun (DistributedDataParallel, or FSDP / DeepSpeed ZeRO with ``training.sharding``: tunewise/train/sharding.py).

One machine: ``torchrun --standalone`` (it picks a free port). Several machines: the same command on every machine,
with either a static rendezvous (``--node-rank K --master-addr HOST --master-port P``: node 0 hosts the store) or
torchrun's c10d rendezvous (``--rdzv-endpoint HOST:PORT``: node ranks are handed out as the nodes join). Rank 0
writes the run directory; every rank reads the prepared data from it, so it must be on a filesystem every node
sees (:func:`check_same_inputs` refuses to train when a rank sees other data or another config).

On CPU the processes talk through gloo and each gets ``cpus // N`` threads (more would oversubscribe the cores,
which on a small machine is slower than one process); on GPUs torchrun gives each process its own device
(``LOCAL_RANK``) and NCCL. ``accelerate launch --cpu --num_processes 2`` started only one process here, so torchrun
is called directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

DEFAULT_MASTER_PORT = 29500
LAUNCHED = "TUNEWISE_LAUNCHED"


class DistributedTrainingFailed(RuntimeError):
    """A torchrun worker exited with an error; its output says why."""


class DistributedInputsDiffer(ValueError):
    """A rank sees other prepared data or another config than rank 0 (the run directory is not shared)."""


@dataclass(frozen=True)
class Launch:
    """Where the processes of a training run: N per node on M nodes, and how the nodes find each other."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise ValueError(f"--nproc must be at least 1, got {self.nproc}")
        if self.nnodes < 1:
            raise ValueError(f"--nnodes must be at least 1, got {self.nnodes}")
        if self.rdzv_endpoint and (self.master_addr or self.master_port is not None):
            raise ValueError("give either --rdzv-endpoint HOST:PORT (c10d rendezvous) or --master-addr/--master-port "
                             "(static rendezvous), not both")
        if self.rdzv_endpoint and self.node_rank is not None:
            raise ValueError("--node-rank is for a static rendezvous (--master-addr); with --rdzv-endpoint the "
                             "rendezvous hands out the node ranks")
        if self.nnodes == 1:
            if self.node_rank not in (None, 0) or self.master_addr or self.rdzv_endpoint:
                raise ValueError("--node-rank, --master-addr and --rdzv-endpoint are for several machines: add "
                                 "--nnodes N (the number of machines)")
            return
        if not (self.master_addr or self.rdzv_endpoint):
            raise ValueError(f"--nnodes {self.nnodes} needs the address every node meets at: --master-addr HOST "
                             "(the node-rank-0 machine) with --node-rank K, or --rdzv-endpoint HOST:PORT")
        if self.master_addr and self.node_rank is None:
            raise ValueError(f"--master-addr needs this machine's --node-rank (0 to {self.nnodes - 1}; 0 on the "
                             "machine at --master-addr)")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank must be between 0 and {self.nnodes - 1} (--nnodes {self.nnodes}), got "
                             f"{self.node_rank}")
        if self.rdzv_endpoint and ":" not in self.rdzv_endpoint:
            raise ValueError(f"--rdzv-endpoint must be HOST:PORT, got {self.rdzv_endpoint!r}")

    @property
    def distributed(self) -> bool:
        """True when torchrun starts the training (more than one process in all)."""
        return self.nproc * self.nnodes > 1

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def writes_run_directory(self) -> bool:
        """Whether this machine's launcher may write the run directory before training: node 0 of a static
        rendezvous, or one machine. Under c10d the node ranks are known only after the nodes meet, so no launcher
        writes (the workers' rank 0 does)."""
        return self.nnodes == 1 or self.node_rank == 0

    def torchrun_arguments(self, run_name: str) -> list[str]:
        if self.nnodes == 1:
            return ["--standalone", f"--nproc-per-node={self.nproc}"]
        common = [f"--nnodes={self.nnodes}", f"--nproc-per-node={self.nproc}", "--max-restarts=0"]
        if self.rdzv_endpoint:
            return [*common, "--rdzv-backend=c10d", f"--rdzv-endpoint={self.rdzv_endpoint}",
                    f"--rdzv-id={self.rdzv_id or 'tunewise-' + run_name}"]
        return [*common, "--rdzv-backend=static", f"--node-rank={self.node_rank}", f"--master-addr={self.master_addr}",
                f"--master-port={self.master_port if self.master_port is not None else DEFAULT_MASTER_PORT}"]


def torchrun_command(run_dir: str | Path, launch: Launch | int, *, resume: bool = False,
                     overrides: Sequence[str] = ()) -> list[str]:
    """The command that trains ``run_dir`` in the processes ``launch`` describes (an int: that many local ones)."""
    if isinstance(launch, int):
        launch = Launch(nproc=launch)
    return [
        sys.executable, "-m", "torch.distributed.run", *launch.torchrun_arguments(Path(run_dir).name),
        "-m", "tunewise", "train", str(run_dir), *(["--resume"] if resume else []), *overrides,
    ]


CPU_SHARDED_MMAP_THRESHOLD = 131072
"""glibc's mmap threshold (bytes) for CPU processes that shard a model: FSDP all-gathers each layer's weights and
reduce-scatters its gradients into fresh buffers at every step, and with glibc's default (a threshold that rises to
32 MB) the heap kept them: smollm2-135m full fine-tuning, 2 CPU processes, batch 2, peaked at 3.2-3.5 GB RSS per
process with 0.77 GB of live tensors (one unsharded process: 3.0 GB). With blocks above 128 KB mapped and returned on
free, 2.1 GB per process (benchmarks/sharded_memory.py)."""


def worker_environment(nproc: int, *, sharded_on_cpu: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    if sharded_on_cpu:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(CPU_SHARDED_MMAP_THRESHOLD))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env[LAUNCHED] = "1"  # the launcher prints the run's summary line; its workers need not
    return env


def launch(run_dir: str | Path, how: Launch | int, *, resume: bool = False, overrides: Sequence[str] = (),
           sharded_on_cpu: bool = False) -> None:
    """Run the training of ``run_dir`` under torchrun and wait; raises :class:`DistributedTrainingFailed` on error.
    ``sharded_on_cpu``: the processes shard the model on CPU (see :data:`CPU_SHARDED_MMAP_THRESHOLD`)."""
    how = Launch(nproc=how) if isinstance(how, int) else how
    command = torchrun_command(run_dir, how, resume=resume, overrides=overrides)
    completed = subprocess.run(command, env=worker_environment(how.nproc, sharded_on_cpu=sharded_on_cpu), check=False)
    if completed.returncode != 0:
        where = "" if how.nnodes == 1 else (
            f" on this node (--node-rank {how.node_rank})" if how.node_rank is not None else " on this node")
        raise DistributedTrainingFailed(
            f"torchrun exited with code {completed.returncode}{where} (see the workers' output above; when another "
            f"node was lost, start the job again with --resume: it continues from the last checkpoint); command: "
            f"{' '.join(command)}"
        )


def run_of(target: str | Path, overrides: Sequence[str] = ()) -> tuple[Any, Any]:
    """(config, RunDir) of a run directory or config file, writing nothing: on a node other than node 0 the run
    directory is written by rank 0 (tunewise.pipeline.config_of_run would write config.yaml and run.json)."""
    from tunewise.config import load_config
    from tunewise.rundir import RunDir
    from tunewise.runs import config_of_run

    if Path(target).is_dir():
        return config_of_run(target, list(overrides))  # reads RUN/config.yaml, writes nothing
    config = load_config(target, list(overrides))
    return config, RunDir.of(config.run_dir)


def end_process_group() -> None:
    """Under torchrun, after training: every rank waits for the others, then takes its process group down. Left to
    interpreter exit, the group's threads were destroyed while joinable and a worker that had trained and saved died
    with "terminate called without an active exception" (SIGABRT), failing the job (seen once in CI, FSDP on 2 CPU
    processes)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def check_same_inputs(config: Any, run: Any) -> None:
    """Under torchrun, after the process group is up: every rank must train on the same prepared data with the same
    settings as rank 0, or the replicas (or shards) silently train different models. Compares the training
    fingerprint (tunewise/train/resume.py: config and data hashes) of every rank; raises
    :class:`DistributedInputsDiffer` on every rank when one differs."""
    import torch.distributed as dist

    from tunewise.train.resume import fingerprint

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    mine = fingerprint(config, run)
    own = {"config_sha256": mine["config_sha256"], "data_sha256": mine["data_sha256"], "host": os.uname().nodename,
           "run": str(Path(run.root).resolve())}
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, own)
    first = everyone[0]
    for rank, other in enumerate(everyone[1:], start=1):
        what = [name for name in ("config_sha256", "data_sha256") if other[name] != first[name]]
        if what:
            reading = "prepared data (RUN/data)" if "data_sha256" in what else "config"
            raise DistributedInputsDiffer(
                f"rank {rank} on {other['host']} reads another {reading} than rank 0 on {first['host']} "
                f"({other['run']} vs {first['run']}): put the run directory on a filesystem every node shares "
                "(see docs/scale.md) and pass the same overrides on every node"
            )
