"""The quantized-training check's numbers (tunewise/train/verify_quantized.py): adapter gradients through a
bitsandbytes base vs the same base dequantized, on one real batch, for 4-bit NF4 / FP4 and 8-bit, with 4-bit layers
on the unpacked path (what tunewise runs) and on the packed CPU path an avx512_bf16 CPU switches to after an eval
pass, in two forms: ``packed`` really repacks the layers (tunewise.lm.bnb_cpu.pack_for_cpu; on a CPU without the
flag bitsandbytes' generic kernel then misreads the packed layout, so the forward is wrong too), ``no-backward``
keeps the right forward and drops the gradient through the layers that would be packed (what gemv_4bit's missing
autograd kernel does on a real avx512_bf16 CPU). The thresholds in verify_quantized.py and docs/methods.md come from
this table.

    OMP_NUM_THREADS=1 python benchmarks/quantized_gradients.py --models tiny smollm2-135m
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tunewise.config import config_from_dict
from tunewise.example import Example
from tunewise.lm.loading import load_tokenizer
from tunewise.lm.bnb_cpu import linear4bit_modules, pack_for_cpu, packable
from tunewise.rundir import read_jsonl
from tunewise.lm.collate import pack_collator
from tunewise.lm.adapters import get_method
from tunewise.lm.loading import load_for_training
from tunewise.lm.chat import encode_examples
from tunewise.train.verify_quantized import check_quantized_gradients, probe_batch

DATA = Path(__file__).resolve().parents[1] / "examples" / "topics" / "topics.jsonl"
SCHEMES = {"nf4": {"bits": 4, "quant_type": "nf4"}, "fp4": {"bits": 4, "quant_type": "fp4"}, "8-bit": {"bits": 8}}


def cut_backward(model: torch.nn.Module) -> None:
    """The layers bitsandbytes would repack compute their output as before, but pass no gradient to their input."""
    for _, module in linear4bit_modules(model):
        if packable(module.in_features, module.out_features, module.weight.quant_state.blocksize):
            forward = type(module).forward
            module.forward = lambda x, module=module, forward=forward: forward(module, x.detach())


def uncut_backward(model: torch.nn.Module) -> None:
    for _, module in linear4bit_modules(model):
        module.__dict__.pop("forward", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2, help="LoRA initialisations (training seeds) per case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = read_jsonl(DATA)[:200:7]
    print(f"{'model':14} {'scheme':6} {'seed':>4} {'path':9} {'cosine':>9} {'1-cosine':>8} {'norm ratio':>10} "
          f"{'|ratio-1|':>9} {'worst cos':>9}  seconds")
    for model_name in args.models:
        tokenizer = load_tokenizer(model_name)
        encoded = encode_examples([Example.from_record(r) for r in rows], tokenizer, loss_on="answers", max_tokens=256)
        features = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]
        for scheme, quantization in SCHEMES.items():
            for seed in range(args.seeds):
                config = config_from_dict({"model": model_name, "method": "qlora", "quantization": quantization,
                                           "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
                                           "training": {"seed": seed}})
                torch.manual_seed(seed)
                model, _, _ = load_for_training(config, get_method("qlora"))
                batch = probe_batch(pack_collator(config, tokenizer.pad_token_id, model.config), features, args.examples)
                paths = ["unpacked", "no-backward", "packed"] if quantization["bits"] == 4 else ["unpacked"]
                for path in paths:
                    if path == "no-backward":
                        cut_backward(model)
                    if path == "packed":
                        uncut_backward(model)
                        pack_for_cpu(model)
                    started = time.perf_counter()
                    check = check_quantized_gradients(model, batch, seed=seed)
                    print(f"{model_name:14} {scheme:6} {seed:>4} {path:9} {check.cosine:9.5f} {1 - check.cosine:8.1e} "
                          f"{check.norm_ratio:10.5f} {abs(check.norm_ratio - 1):9.1e} {check.worst_cosine:9.5f}  "
                          f"{time.perf_counter() - started:.1f}", flush=True)
                del model


if __name__ == "__main__":
    main()
