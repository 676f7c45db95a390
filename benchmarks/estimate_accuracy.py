"""How good are tunewise's estimates? For each model and method: estimate peak memory and epoch time, then really
train one epoch (``train_run`` in a fresh process, so its peak RSS is its own) and print estimate, measurement and
relative error. Targets: |error| <= 20% for peak memory, <= 30% for time.

    OMP_NUM_THREADS=1 python benchmarks/estimate_accuracy.py                     # tiny + smollm2-135m, full/lora/qlora
    OMP_NUM_THREADS=1 python benchmarks/estimate_accuracy.py --models tiny --methods lora --out results.json

Measured: ``peak_rss_mb`` (CPU; ``cuda_peak_allocated_mb`` on CUDA) and ``train_time_s`` (the whole ``trainer.train()``:
steps, evaluation, checkpoint, end-of-run summary) from RUN/train_summary.json. Estimated: the config's total time
(one epoch here) and peak memory, from :func:`tunewise.decide.estimate.estimate_run` with calibration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "examples" / "topics" / "topics.jsonl"
EXAMPLES = {"tiny": 746, "smollm2-135m": 80}  # tiny: all of topics (84 steps), so the run is long enough to time

def make_config(model: str, method: str, examples: int, out: Path, checkpointing: bool = False) -> Any:
    from tunewise.config import config_from_dict

    return config_from_dict({
        "name": f"{model}-{method}{'-ckpt' if checkpointing else ''}", "output_dir": str(out), "model": model, "method": method,
        "data": {"path": str(DATA), "format": "chat", "max_examples": examples, "max_tokens": 256,
                 "split": {"train": 0.9, "val": 0.05, "test": 0.05}},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "training": {"epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 5e-4, "logging_steps": 5,
                     "gradient_checkpointing": checkpointing},
        "monitor": {"live": "off"},
    })


def measure(run_dir: Path, threads: int) -> dict[str, Any]:
    """Train in a fresh process; return its train_summary.json."""
    from tunewise.decide.calibrate import train_in_fresh_process

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return train_in_fresh_process(run_dir, env=env)


def error(estimate: float, measured: float) -> float:
    return (estimate - measured) / measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2-135m")
    parser.add_argument("--methods", default="full,lora,qlora")
    parser.add_argument("--steps", type=int, default=4, help="timed calibration steps (at least)")
    parser.add_argument("--checkpointing", action="store_true", help="train with gradient checkpointing")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from tunewise.decide.estimate import estimate_run
    from tunewise.pipeline import init_run, prepare_stage

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    console = Console(width=None if sys.stdout.isatty() else 120)
    rows: list[dict[str, Any]] = []
    started = time.time()
    memory_key = "cuda_peak_allocated_mb" if torch.cuda.is_available() else "peak_rss_mb"
    with tempfile.TemporaryDirectory(prefix="tunewise-estimate-accuracy-") as tmp:
        for model in args.models.split(","):
            for method in args.methods.split(","):
                config = make_config(model, method, EXAMPLES.get(model, 200), Path(tmp), args.checkpointing)
                run = init_run(config)
                data = prepare_stage(config, run)
                t0 = time.time()
                report = estimate_run(config, run.root, [method], calibration_steps=args.steps)
                estimate_s = time.time() - t0
                est = report["methods"][method]
                summary = measure(run.root, torch.get_num_threads())
                row = {
                    "model": model, "method": method, "train_examples": data["counts"]["train"],
                    "steps": summary["steps"], "trainable_parameters": est["parameters"]["trainable"],
                    "measured_trainable_parameters": summary["trainable_parameters"],
                    "memory_estimate_mb": est["memory"]["peak_mb"], "memory_measured_mb": summary[memory_key],
                    "time_estimate_s": round(est["time"]["total_s"], 2), "time_measured_s": summary["train_time_s"],
                    "time_source": est["time"]["source"], "estimate_wall_s": round(estimate_s, 1),
                    "memory_parts_mb": est["memory"]["parts_mb"],
                    "time_detail": {k: v for k, v in est["time"].items() if k != "calibration"}
                    | {k: v for k, v in (est["time"].get("calibration") or {}).items()
                       if k not in ("step_times_s", "padded_tokens")},
                }
                row["memory_error"] = round(error(row["memory_estimate_mb"], row["memory_measured_mb"]), 4)
                row["time_error"] = round(error(row["time_estimate_s"], row["time_measured_s"]), 4)
                rows.append(row)
                console.print(
                    f"{model:>13} {method:>5}: memory {row['memory_estimate_mb']:.0f} vs {row['memory_measured_mb']:.0f} MB "
                    f"({row['memory_error']:+.1%}), time {row['time_estimate_s']:.1f} vs {row['time_measured_s']:.1f} s "
                    f"({row['time_error']:+.1%})", highlight=False,
                )

    checkpointing = ", gradient checkpointing" if args.checkpointing else ""
    table = Table(title=f"estimate vs measurement ({torch.get_num_threads()} torch thread(s){checkpointing}, "
                        f"{time.time() - started:.0f} s)")
    for column in ("model", "method", "steps", "trainable", "peak MB est", "peak MB meas", "mem err",
                   "time s est", "time s meas", "time err"):
        table.add_column(column, justify="left" if column in ("model", "method") else "right")
    for r in rows:
        ok_mem, ok_time = abs(r["memory_error"]) <= 0.2, abs(r["time_error"]) <= 0.3
        table.add_row(
            r["model"], r["method"], str(r["steps"]), f"{r['trainable_parameters']:,}",
            f"{r['memory_estimate_mb']:.0f}", f"{r['memory_measured_mb']:.0f}",
            f"[{'green' if ok_mem else 'red'}]{r['memory_error']:+.1%}[/]",
            f"{r['time_estimate_s']:.1f}", f"{r['time_measured_s']:.1f}",
            f"[{'green' if ok_time else 'red'}]{r['time_error']:+.1%}[/]",
        )
    console.print(table)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
