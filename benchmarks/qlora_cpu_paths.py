"""Does 4-bit QLoRA learn on every CPU path? Train loss per step of LoRA, QLoRA 8-bit and QLoRA 4-bit NF4 on the
quickstart's prepared data (SmolLM2-135M, same data order, no warmup), with bitsandbytes' packed avx512_bf16 CPU
kernel off and forced on (bitsandbytes is told the CPU has the flag, whatever it has), and once more with tunewise's
fix disabled (layers left on the packed path and the gradient check off): the failure tunewise prevents.

    OMP_NUM_THREADS=1 python benchmarks/qlora_cpu_paths.py --steps 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

from tunewise import pipeline
from tunewise.config import load_config
from tunewise.rundir import read_jsonl
from tunewise.train.run import train_run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"
CASES = {  # name -> (overrides, packed kernel forced on, tunewise's fix on)
    "lora": ([], False, True),
    "qlora 8-bit": (["method=qlora", "quantization.bits=8"], False, True),
    "qlora 4-bit nf4, packed kernel off": (["method=qlora", "quantization.bits=4"], False, True),
    "qlora 4-bit nf4, packed kernel forced on": (["method=qlora", "quantization.bits=4"], True, True),
    "qlora 4-bit nf4, forced on, fix disabled": (["method=qlora", "quantization.bits=4"], True, False),
}


@contextlib.contextmanager
def cpu_path(packed: bool, fix: bool) -> Iterator[None]:
    import bitsandbytes.functional
    import bitsandbytes.nn.modules

    from tunewise.lm import bnb_cpu
    from tunewise.train import run as train_module

    saved = [(bitsandbytes.nn.modules, "has_avx512bf16"), (bitsandbytes.functional, "has_avx512bf16"),
             (bnb_cpu, "keep_off_packed_cpu_kernel"), (train_module, "guard_quantized_training")]
    saved = [(module, name, getattr(module, name)) for module, name in saved]
    try:
        if packed:
            bitsandbytes.nn.modules.has_avx512bf16 = lambda: True
            bitsandbytes.functional.has_avx512bf16 = lambda: True
        if not fix:
            bnb_cpu.keep_off_packed_cpu_kernel = lambda model: 0
            train_module.guard_quantized_training = lambda *args: None
            # the packing check's eval pass repacks the layers, as it did before the fix
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--out", type=Path, help="write the losses as JSON here")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"model={args.model}", f"output_dir={tmp}", f"training.max_steps={args.steps}",
                  "training.warmup_steps=0", "training.learning_rate=1e-3", "training.logging_steps=1",
                  "training.save_steps=100000", "training.eval_steps=100000", "monitor.live=off", "monitor.plots=false"]
        base = load_config(EXAMPLE, [*common, "name=prepared"])
        prepared = pipeline.init_run(base)
        pipeline.prepare_stage(base, prepared)
        for name in args.cases:
            overrides, packed, fix = CASES[name]
            config = load_config(EXAMPLE, [*common, f"name=case{len(results)}", *overrides])
            run = pipeline.init_run(config)
            shutil.copytree(prepared.data, run.data, dirs_exist_ok=True)
            started = time.perf_counter()
            with cpu_path(packed, fix):
                try:
                    summary = train_run(config, run.root)
                    note = f"check {summary['quantized_check']['cosine']:.6f}" if summary.get("quantized_check") else ""
                except ValueError as exc:
                    note = f"refused: {exc}"
            losses = [r["loss"] for r in read_jsonl(run.metrics) if r["kind"] == "train"] if run.metrics.exists() else []
            results[name] = {"losses": losses, "note": note, "seconds": round(time.perf_counter() - started, 1)}
            print(f"| {name} | {' '.join(f'{x:.2f}' for x in losses)} | {note} |", flush=True)
    if "lora" in results and results["lora"]["losses"]:
        lora = torch.tensor(results["lora"]["losses"])
        for name, r in results.items():
            if r["losses"] and name != "lora":
                diff = (torch.tensor(r["losses"]) - lora).abs()
                print(f"{name}: max |loss - lora| {diff.max():.3f}, mean {diff.mean():.3f}, "
                      f"mean of the last 8 steps {torch.tensor(r['losses'][-8:]).mean():.3f} vs lora's "
                      f"{lora[-8:].mean():.3f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
