"""Where a LoRA training step keeps its memory: one process per variant, peak RSS of the step, and the tensors autograd
saves for backward, by kind.

Each variant loads SmolLM2-135M with LoRA r16 on every linear layer, takes one batch of the long shape
(benchmarks/bench_rows.py, 200-400 tokens, batch 8 by default), and runs two training steps (forward, backward,
AdamW). Printed per variant:

* ``load``: RSS after loading the model, before the first step; ``step peak``: the process's peak RSS during the steps
  (VmHWM, reset after loading through /proc/self/clear_refs); ``step peak - load``: what the steps add.
* saved tensors of the first forward (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once),
  grouped by shape: ``logits`` (last dim = vocabulary), ``attention TxT`` (the last two dims both the row width:
  probabilities or masks), ``mlp`` (last dim = intermediate size), ``hidden`` (last dim = hidden size), ``lora``
  (last dim = the rank), ``other``.
* the backward nodes of the attention (which SDPA kernel ran: flash for CPU saves no T x T probabilities, the math
  fallback does).

Variants: ``plain`` (the plain recipe: padded batch, ``model(labels=...)``, logits at every position), ``tunewise``
(its collator and loss: packing, shared prefix, logits at trained positions), ``tunewise-ckpt`` (the same with
activation checkpointing), ``tunewise-pad`` (padded batch instead of packing); each also under ``MALLOC_ARENA_MAX=1``
jemalloc, or with the glibc mmap threshold tunewise's training fixes (``--malloc``, tunewise/train/allocator.py).

    OMP_NUM_THREADS=1 python benchmarks/memory_profile.py                         # every variant, batch 8
    OMP_NUM_THREADS=1 python benchmarks/memory_profile.py --variants plain,tunewise --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = ("plain", "tunewise", "tunewise-ckpt", "tunewise-pad")


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


class SavedTensors:
    """Bytes autograd saves for backward during a forward, each storage once, grouped by shape."""

    def __init__(self, vocab: int, hidden: int, inter: int, rank: int, weights: set[int]) -> None:
        self.dims = vocab, hidden, inter, rank
        self.seen: set[int] = set(weights)  # the model's own weights (a linear saves its weight): not extra memory
        self.groups: Counter[str] = Counter()
        self.shapes: Counter[str] = Counter()

    def kind(self, t) -> str:  # noqa: ANN001
        vocab, hidden, inter, rank = self.dims
        if t.dim() >= 2 and t.shape[-1] == vocab:
            return "logits"
        if t.dim() >= 3 and t.shape[-1] == t.shape[-2] and t.shape[-1] > 64:
            return "attention TxT"
        if t.dim() >= 1 and t.shape[-1] == inter:
            return "mlp"
        if t.dim() >= 1 and t.shape[-1] == hidden:
            return "hidden"
        if t.dim() >= 1 and t.shape[-1] == rank:
            return "lora"
        return "other"

    def pack(self, t):  # noqa: ANN001, ANN201
        import torch

        if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter) and t.device.type != "meta":
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key and key not in self.seen:
                self.seen.add(key)
                kind = self.kind(t)
                self.groups[kind] += storage.nbytes()
                self.shapes[f"{kind} {tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"] += storage.nbytes()
        return t


def backward_nodes(loss) -> Counter:  # noqa: ANN001
    nodes: Counter[str] = Counter()
    stack, seen = [loss.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        nodes[type(fn).__name__] += 1
        stack.extend(f for f, _ in fn.next_functions)
    return nodes


def child(args: argparse.Namespace) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from bench_rows import shape_rows
    from tunewise.config import config_from_dict
    from tunewise.example import Example
    from tunewise.lm.chat import encode_examples
    from tunewise.lm.collate import PadCollator, pack_collator
    from tunewise.lm.loading import load_model, load_tokenizer
    from tunewise.lm.loss import sparse_causal_lm_loss

    if args.malloc == "tunewise":  # what train_run does on CPU: tunewise/train/allocator.py
        from tunewise.train.allocator import return_freed_memory_to_os

        assert return_freed_memory_to_os()
    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    rows, _ = shape_rows("long", tokenizer, args.batch, 0)
    variant = args.variant
    ckpt = variant.endswith("-ckpt")
    model = load_model(args.model)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    cfg = model.config
    if variant == "plain":
        from transformers import DataCollatorForSeq2Seq

        sys.path.insert(0, str(ROOT / "benchmarks"))
        from train_vs_baseline import plain_encode

        batch = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)(
            [plain_encode(tokenizer, r) for r in rows])

        def loss_of() -> torch.Tensor:
            return model(**batch, use_cache=False).loss
    else:
        config = config_from_dict({"name": "m", "model": args.model, "method": "lora", "lora": {"r": 16, "alpha": 32}})
        encoded = encode_examples([Example.from_record(r) for r in rows], tokenizer, loss_on="answers")
        features = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]
        collator = PadCollator(tokenizer.pad_token_id) if variant.endswith("-pad") else pack_collator(
            config, tokenizer.pad_token_id, cfg)
        batch = collator(features)

        def loss_of() -> torch.Tensor:
            return sparse_causal_lm_loss(model, batch)[0]
    shape = {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape") and v.dim() >= 2}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = SavedTensors(cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, 16, weights)
    load = rss_mb()
    reset_peak()
    steps = []
    for step in range(args.steps):
        started = time.process_time()
        if step == 0:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                loss = loss_of()
            after_forward = rss_mb()
            nodes = backward_nodes(loss)
        else:
            loss = loss_of()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss
        steps.append(time.process_time() - started)
    from tunewise.monitor.memory import peak_rss_mb

    attention_nodes = {k: v for k, v in nodes.items() if "ttention" in k or "Softmax" in k or "Bmm" in k}
    print("RESULT " + json.dumps({
        "variant": variant, "malloc": args.malloc, "batch_shapes": shape, "load_mb": load,
        "after_forward_mb": after_forward, "step_peak_mb": peak_rss_mb(), "cpu_s_per_step": steps,
        "saved_mb": {k: round(v / 2**20, 1) for k, v in saved.groups.most_common()},
        "saved_total_mb": round(sum(saved.groups.values()) / 2**20, 1),
        "top_saved": {k: round(v / 2**20, 1) for k, v in saved.shapes.most_common(8)},
        "attention_nodes": attention_nodes,
    }))


def malloc_env(kind: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if kind == "arena1":
        env["MALLOC_ARENA_MAX"] = "1"
    elif kind == "mmap":  # a fixed mmap threshold: freed big tensors go back to the OS at once
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    elif kind == "jemalloc":
        lib = next((str(p) for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib") for p in Path(d).glob("libjemalloc.so*")), None)
        if lib is None:
            raise SystemExit("jemalloc not installed (apt-get install libjemalloc2)")
        env["LD_PRELOAD"] = lib
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--malloc", default="default,tunewise",
                        help="comma list of: default (glibc as it is; TUNEWISE_MALLOC_TUNING=0), tunewise (the mmap "
                             "threshold train_run fixes), arena1 (MALLOC_ARENA_MAX=1), mmap (MALLOC_MMAP_THRESHOLD_="
                             "131072), jemalloc")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "memory_profile.json"))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    results = []
    for kind in args.malloc.split(","):
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--malloc", kind]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=malloc_env(kind))
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(f"{variant} ({kind}) failed:\n{out.stderr[-3000:]}", flush=True)
                continue
            r = json.loads(line[7:])
            results.append(r)
            print(f"{variant:>14} malloc={kind:<8} load {r['load_mb']:.0f} MiB, after forward {r['after_forward_mb']:.0f}, "
                  f"step peak {r['step_peak_mb']:.0f} (+{r['step_peak_mb'] - r['load_mb']:.0f}); saved for backward "
                  f"{r['saved_total_mb']:.0f} MiB {r['saved_mb']}; batch {r['batch_shapes']}; CPU s/step "
                  f"{[round(s, 1) for s in r['cpu_s_per_step']]}", flush=True)
            print(f"{'':>14} largest saved: {r['top_saved']}; attention backward nodes: {r['attention_nodes']}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
