"""Every training method on the same tiny task: trainable parameters, steps/s, final eval loss, exact match.

    python benchmarks/methods.py [--epochs 2] [--examples 1700] [--methods full,lora,...]

The task is the tests' letter reversal of unseen words (the base model scores 0 exact match); each method trains
with its own learning rate (below), batch 16, tunewise's defaults otherwise, and is evaluated on 100 test words.
Steps/s are from one run each on whatever else the machine is doing: compare them within one table only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (config fields, learning rate)
METHODS: dict[str, tuple[dict, float]] = {
    "full": ({"method": "full"}, 1e-3),
    "lora": ({"method": "lora"}, 5e-3),
    "rslora": ({"method": "lora", "lora": {"r": 16, "alpha": 4, "dropout": 0.0, "use_rslora": True}}, 5e-3),
    "dora": ({"method": "dora"}, 5e-3),
    "qlora-4bit": ({"method": "qlora", "quantization": {"bits": 4}}, 5e-3),
    "qlora-8bit": ({"method": "qlora", "quantization": {"bits": 8}}, 5e-3),
    "ia3": ({"method": "ia3"}, 3e-2),
    "prompt": ({"method": "prompt", "prompt": {"num_virtual_tokens": 20, "init_text": "reverse the letters of the word"}}, 1e-1),
}


def run_method(name: str, data: Path, out: Path, args: argparse.Namespace) -> dict:
    from tunewise.config import config_from_dict
    from tunewise.evaluate.run import evaluate_run
    from tunewise.pipeline import init_run, prepare_stage
    from tunewise.train.run import train_run

    fields, lr = METHODS[name]
    config = config_from_dict({
        "name": name, "output_dir": str(out), "model": "tiny",
        "data": {"path": str(data), "split": {"train": 0.85, "val": 0.03, "test": 0.12}, "max_tokens": 64},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {"epochs": args.epochs, "per_device_train_batch_size": 16, "learning_rate": lr, "warmup_steps": 10,
                     "logging_steps": 20, "save_steps": 10**6},
        "eval": {"max_new_tokens": 12, "batch_size": 64, "max_examples": 100, "metrics": ["exact_match", "token_f1"]},
        "monitor": {"live": "off", "plots": False},
        **fields,
    })
    run = init_run(config)
    prepare_stage(config, run)
    summary = train_run(config, run.root)
    metrics = evaluate_run(config, run.root)["metrics"]
    return {
        "method": name, "trainable": summary["trainable_parameters"],
        "steps_per_s": summary["steps"] / summary["train_time_s"], "eval_loss": summary["final_eval_loss"],
        "exact_match": metrics["exact_match"], "token_f1": metrics["token_f1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--examples", type=int, default=1700)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    from tests.conftest import reversal_rows

    out = Path(tempfile.mkdtemp(prefix="tunewise-methods-"))
    data = out / "reverse.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(args.examples, seed=7)), encoding="utf-8")
    rows = [run_method(name, data, out / "runs", args) for name in args.methods.split(",")]
    print(f"\n{'method':<12} {'trainable':>10} {'steps/s':>8} {'eval loss':>10} {'exact match':>12} {'token F1':>9}")
    for r in rows:
        print(f"{r['method']:<12} {r['trainable']:>10,} {r['steps_per_s']:>8.1f} {r['eval_loss']:>10.3f} "
              f"{r['exact_match']:>12.2f} {r['token_f1']:>9.2f}")


if __name__ == "__main__":
    main()
