"""Does the per-device memory estimate of FSDP hold? Full fine-tuning of a model in one process and sharded with
FSDP over N CPU processes (same per-device batch), each process's peak RSS against the estimate's per-device peak,
and the saving (one process - one FSDP process) estimated against measured: the saving is what sharding is for, and
it cancels what both runs share (the runtime, the activations).

    OMP_NUM_THREADS=1 python benchmarks/sharded_memory.py                         # smollm2-135m, 2 processes
    OMP_NUM_THREADS=1 python benchmarks/sharded_memory.py --model tiny --steps 3

CPU only measures what CPU processes hold (RSS, glibc's heap included); a GPU's allocator is not measured here.
Measured (2 CPU cores, smollm2-135m, 2 processes, batch 2, 4 steps): one process 2,982 MB (estimated 2,742); FSDP
2,110 / 2,240 MB per process (estimated 1,797); saving 742 MB (estimated 945). Without the mmap threshold tunewise
sets for sharded CPU workers (tunewise/train/distributed.py) the FSDP processes peaked at 3.1-3.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "examples" / "topics" / "topics.jsonl"


def make_config(model: str, out: Path, steps: int, batch: int, sharding: str | None, devices: int) -> Any:
    from tunewise.config import config_from_dict

    return config_from_dict({
        "name": f"{model}-{sharding or 'one'}", "output_dir": str(out), "model": model, "method": "full",
        "data": {"path": str(DATA), "format": "chat", "max_examples": 200, "max_tokens": 128,
                 "split": {"train": 0.9, "val": 0.05, "test": 0.05}},
        "training": {"max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 1e-5,
                     "logging_steps": 1, "save_steps": 10_000, "load_best_model_at_end": False, "sharding": sharding,
                     "group_by_length": False},
        "decide": {"devices": devices},
        "monitor": {"live": "off", "plots": False},
    })


def train(run_dir: Path, nproc: int) -> list[float]:
    """Train in fresh processes; the peak RSS (MiB) of each process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    args = ["--nproc", str(nproc)] if nproc > 1 else []
    done = subprocess.run([sys.executable, "-m", "tunewise", "train", str(run_dir), *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-4000:])
    if nproc == 1:
        return [json.loads((run_dir / "train_summary.json").read_text())["peak_rss_mb"]]
    return [json.loads((run_dir / "ranks" / f"rank-{r}.json").read_text())["peak_rss_mb"] for r in range(nproc)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    from tunewise.decide.estimate import estimate_run
    from tunewise.pipeline import init_run, prepare_stage

    with tempfile.TemporaryDirectory(prefix="tunewise-sharded-") as tmp:
        one = make_config(args.model, Path(tmp), args.steps, args.batch, None, args.nproc)
        fsdp = make_config(args.model, Path(tmp), args.steps, args.batch, "fsdp", args.nproc)
        for config in (one, fsdp):
            prepare_stage(config, init_run(config))
        report = estimate_run(one, one.run_dir, ["full"], calibrate=False, write=False)["methods"]["full"]
        estimated_one = report["memory"]["peak_mb"]
        estimated_fsdp = report["sharding"]["engines"]["fsdp"]["peak_mb"]
        measured_one = train(Path(one.run_dir), 1)[0]
        measured_fsdp = train(Path(fsdp.run_dir), args.nproc)
    worst = max(measured_fsdp)
    result = {
        "model": args.model, "processes": args.nproc, "per_device_batch": args.batch, "steps": args.steps,
        "one_process": {"estimated_mb": estimated_one, "measured_mb": measured_one},
        "fsdp_per_process": {"estimated_mb": estimated_fsdp, "measured_mb": measured_fsdp},
        "saving_mb": {"estimated": round(estimated_one - estimated_fsdp, 1), "measured": round(measured_one - worst, 1)},
        "fsdp_parts_mb": report["sharding"]["engines"]["fsdp"]["parts_mb"],
        "one_parts_mb": report["memory"]["parts_mb"],
    }
    for name, key in (("one process", "one_process"), ("fsdp, per process", "fsdp_per_process")):
        r = result[key]
        print(f"{name:18} estimated {r['estimated_mb']:8.0f} MB   measured {r['measured_mb']}")
    s = result["saving_mb"]
    print(f"{'saving':18} estimated {s['estimated']:8.0f} MB   measured {s['measured']:.0f} MB "
          f"(ratio {s['estimated'] / s['measured']:.2f})" if s["measured"] else "")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
