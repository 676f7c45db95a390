"""Training: tunewise's defaults vs a plain Hugging Face recipe, same model, rows, seed, epochs and LoRA settings.

(a) plain: the recipe a careful tutorial writes. Chat template -> input ids; labels = the answer and its end-of-turn
    token (the prompt masked with -100, so pad == eos hides nothing); ``DataCollatorForSeq2Seq`` pads each batch to
    its own longest row; Trainer (shuffled rows, its default ``adamw_torch_fused``, linear schedule) + PEFT LoRA.
(b) tunewise: ``train_run`` with its defaults (packing, shared prefix, logits at trained positions, length-grouped
    shuffle, its default evaluation cadence on a validation file), the same LoRA settings.

Fair by construction: both train the same tokens (answer + end token), on the same rows, shuffled by the same seed;
each (side, seed) runs in its own process, in the order A B B A A B ...; the eval loss is scored by one function
(:func:`score`: a plain padded forward, mean loss per answer-and-end token) on held-out rows drawn from the same
distribution. Three row shapes (benchmarks/bench_rows.py): ``short`` (the bundled topics, shared system prompt),
``long`` (200-400 tokens), ``mixed`` (30-1,000 tokens).

Printed per shape: tokens/s (the rows' real tokens x epochs / trainer.train() seconds, the same count for both) and
tokens per CPU second of trainer.train() (each side runs one thread: what a shared machine's load does not change),
wall time of trainer.train() and of the whole process, peak RSS (each process its own), eval loss, each as the mean
and the spread (min-max) over seeds, and the ratios b/a. Also the machine's matmul peak (fp32, 1 thread, measured
here, the best sample of every process) and the achieved model FLOP/s per CPU second as a fraction of it (:func:`model_flops` says what counts). Writes a JSON.

    OMP_NUM_THREADS=1 python benchmarks/train_vs_baseline.py --seeds 1               # quick: one seed per side
    OMP_NUM_THREADS=1 python benchmarks/train_vs_baseline.py --shapes short --seeds 3
    python benchmarks/train_vs_baseline.py --model tiny --shapes short --seeds 1      # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# (train rows, eval rows, batch size) per shape: small enough for a few minutes per run on one CPU thread
SHAPES = {"short": (160, 64, 8), "long": (24, 16, 4), "mixed": (24, 16, 4)}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plain_encode(tokenizer, row: dict) -> dict:
    """A plain recipe's encoding: template ids; labels = the answer through its end-of-turn token (what follows the
    end token, the template's newline, is not trained, as in tunewise)."""
    prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False)
    assert full[: len(prompt)] == prompt, "the template renders the prompt differently inside the conversation"
    labels = [-100] * len(prompt) + full[len(prompt):]
    eos = tokenizer.eos_token_id
    end = next((i for i in range(len(prompt), len(full)) if full[i] == eos), len(full) - 1)
    labels = [t if i <= end else -100 for i, t in enumerate(labels)]
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}


def score(model, tokenizer, rows: list[dict], batch: int = 4) -> float:
    """Mean loss per trained token (answer + end-of-turn) on ``rows``: one padded forward per batch, full logits,
    the same code for both sides."""
    import torch
    import torch.nn.functional as F

    encoded = [plain_encode(tokenizer, r) for r in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(encoded), batch):
            chunk = encoded[i : i + batch]
            width = max(len(e["input_ids"]) for e in chunk)
            ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in chunk], device=device)
            mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in chunk], device=device)
            labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in chunk], device=device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100, reduction="sum")
            total, count = total + loss.item(), count + int((labels[:, 1:] != -100).sum())
    return total / max(count, 1)


def model_flops(model, encoded: list[dict], epochs: float) -> float:
    """The useful work of one LoRA training pass over ``encoded``, counted the same for both sides: frozen base linear
    layers 4 FLOPs per weight per token (forward + input gradient; they get no weight gradient), LoRA weights 6,
    causal attention 6 x L^2 x hidden per layer per row (QK^T and AV, forward + backward, half the square), and the
    vocabulary projection 4 x vocab x hidden at trained positions only (no loss needs it elsewhere)."""
    frozen = trainable = 0
    for name, p in model.named_parameters():
        if p.dim() != 2 or "embed" in name or "lm_head" in name:
            continue
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    cfg = model.config
    hidden, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    tokens = sum(len(e["input_ids"]) for e in encoded)
    trained = sum(sum(1 for t in e["labels"] if t != -100) for e in encoded)
    attention = sum(6 * len(e["input_ids"]) ** 2 * hidden * layers for e in encoded)
    return epochs * ((4 * frozen + 6 * trainable) * tokens + attention + 4 * vocab * hidden * trained)


def matmul_peak(seconds: float = 3.0, n: int = 512) -> float:
    """The machine's fp32 matmul FLOP/s on one thread: the best of repeated n x n products (each a few ms, so some run
    within one scheduler slice on a loaded machine; the benchmark takes the best over every process's sample)."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def cpu_s() -> float:
    """This process's CPU time (user + system): on a shared machine, throughput per CPU second is what load does not
    change (each side runs one thread)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuClock:
    """A TrainerCallback recording the process CPU time spent inside trainer.train()."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, *a, **k):  # noqa: ANN002, ANN003
                clock.start = cpu_s()

            def on_train_end(self, *a, **k):  # noqa: ANN002, ANN003
                clock.spent = cpu_s() - clock.start

        self.start, self.spent, self.callback = 0.0, 0.0, _Callback()


def run_plain(args: argparse.Namespace, rows: list[dict], eval_rows: list[dict]) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from tunewise.lm.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    encoded = [plain_encode(tokenizer, r) for r in rows]
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, num_train_epochs=args.epochs,
        learning_rate=args.lr, logging_steps=50, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), seed=args.seed, data_seed=args.seed, disable_tqdm=True,
        remove_unused_columns=False,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    clock = CpuClock()
    trainer = Trainer(model=model, args=training_args, train_dataset=encoded, data_collator=collator,
                      callbacks=[clock.callback])
    started = time.time()
    trainer.train()
    wall = time.time() - started
    return {"train_s": wall, "train_cpu_s": clock.spent, "eval_loss": score(model, tokenizer, eval_rows), "flops": model_flops(model, encoded, args.epochs)}


def run_tunewise(args: argparse.Namespace, rows: list[dict], eval_rows: list[dict]) -> dict:
    import torch

    from tunewise.config import config_from_dict
    from tunewise.evaluate.run import load_for_eval
    from tunewise.runs import init_run
    from tunewise.rundir import atomic_write_jsonl
    from tunewise.train.run import train_run

    out = Path(tempfile.mkdtemp())
    overrides = json.loads(args.tunewise_training or "{}")
    config = config_from_dict({
        "name": "bench", "output_dir": str(out), "model": args.model, "method": "lora",
        "lora": {"r": 16, "alpha": 32},
        "training": {"epochs": args.epochs, "per_device_train_batch_size": args.batch, "learning_rate": args.lr,
                     "seed": args.seed, **overrides},
        "monitor": {"live": "off", "plots": False},
    })
    run = init_run(config)
    atomic_write_jsonl(run.data / "train.jsonl", rows)
    # the held-out rows are the validation file a user would give: tunewise's default evaluation cadence is charged
    atomic_write_jsonl(run.data / "val.jsonl", eval_rows)
    clock = CpuClock()
    from tunewise.decide.estimate import checkpointing_choice

    # as `tunewise train` does: activation checkpointing on only when the estimate says the batch would not fit
    summary = train_run(config, run.root, callbacks=[clock.callback], checkpointing=checkpointing_choice(config, run.root))
    model, tokenizer = load_for_eval(config, "tuned", run, device="cuda" if torch.cuda.is_available() else "cpu",
                                     dtype=torch.float32)
    encoded = [plain_encode(tokenizer, r) for r in rows]
    from tunewise.rundir import read_jsonl as read_metrics

    eval_s = sum(r.get("eval_runtime", 0.0) for r in read_metrics(run.metrics))  # in-training evaluation time
    return {"train_s": summary["train_time_s"], "train_cpu_s": clock.spent, "eval_loss": score(model, tokenizer, eval_rows),
            "flops": model_flops(model, encoded, args.epochs), "steps": summary["steps"], "in_training_eval_s": eval_s,
            "eval_sample_examples": summary.get("eval_sample_examples"),
            "gradient_checkpointing": summary.get("gradient_checkpointing"),
            "returned_freed_memory": summary.get("returned_freed_memory")}


def child(args: argparse.Namespace) -> None:
    started = time.time()
    data = Path(args.data_dir)
    rows, eval_rows = read_jsonl(data / "train.jsonl"), read_jsonl(data / "eval.jsonl")
    result = (run_plain if args.side == "plain" else run_tunewise)(args, rows, eval_rows)
    import torch

    from tunewise.monitor.memory import peak_rss_mb

    result["peak_rss_mb"] = peak_rss_mb()  # this process's own peak (VmHWM)
    if torch.cuda.is_available():
        result["peak_rss_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["process_s"] = time.time() - started
    result["matmul_peak"] = matmul_peak(2.0)  # the machine's peak, sampled again: the best sample over all counts
    print("RESULT " + json.dumps(result))


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


RETURNED = "tunewise+returned"


def sides_of(args: argparse.Namespace) -> list[str]:
    """plain, tunewise, and with ``--returned`` tunewise with TUNEWISE_MALLOC_TUNING=1 (what it does when the estimate
    says memory is tight: freed blocks returned to the OS)."""
    return ["plain", "tunewise"] + ([RETURNED] if args.returned else [])


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return fmt.format(mean)
    return f"{fmt.format(mean)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def bench_shape(shape: str, args: argparse.Namespace, peak: list[float]) -> dict:
    from bench_rows import shape_rows
    from tunewise.lm.loading import load_tokenizer

    n_train, n_eval, batch = SHAPES[shape]
    batch = args.batch or batch
    tokenizer = load_tokenizer(args.model)
    rows, eval_rows = shape_rows(shape, tokenizer, args.rows or n_train, n_eval)
    tokens = sum(len(plain_encode(tokenizer, r)["input_ids"]) for r in rows) * args.epochs
    data = Path(tempfile.mkdtemp(prefix=f"bench-{shape}-"))
    for name, part in (("train", rows), ("eval", eval_rows)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    sides = sides_of(args)
    order = [sides, sides[::-1]]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for seed in range(args.seeds):
        for side in order[seed % 2]:  # A B, B A, A B: the order alternates with the seed
            env = dict(os.environ)
            if side == RETURNED:  # tunewise with freed blocks always returned to the OS (tunewise/train/allocator.py)
                env["TUNEWISE_MALLOC_TUNING"] = "1"
            cmd = [sys.executable, __file__, "--side", "tunewise" if side == RETURNED else side, "--data-dir", str(data),
                   "--seed", str(seed),
                   "--model", args.model, "--epochs", str(args.epochs), "--batch", str(batch), "--lr", str(args.lr)]
            if args.tunewise_training:
                cmd += ["--tunewise-training", args.tunewise_training]
            load_before = load_avg()
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{shape} {side} seed {seed} failed:\n{out.stderr[-3000:]}")
            result = json.loads(line[7:])
            result.update(seed=seed, tokens_per_s=tokens / result["train_s"], load_before=load_before, load_after=load_avg(),
                          tokens_per_cpu_s=tokens / max(result["train_cpu_s"], 1e-9))
            peak[0] = max(peak[0], result["matmul_peak"])
            runs[side].append(result)
            print(f"  {shape} {side:>8} seed {seed}: {result['tokens_per_s']:.1f} tokens/s ({result['tokens_per_cpu_s']:.1f} "
                  f"per CPU s), {result['train_s']:.1f} s, "
                  f"{result['peak_rss_mb']:.0f} MiB, eval loss {result['eval_loss']:.4f}  (load {load_before} -> "
                  f"{result['load_after']})", flush=True)
    return {"rows": len(rows), "eval_rows": len(eval_rows), "batch": batch, "tokens": tokens, "runs": runs}


def report(results: dict, args: argparse.Namespace, peak: list[float]) -> None:
    print(f"\nmodel {args.model}, LoRA r16 alpha32 all-linear, lr {args.lr}, {args.epochs} epoch(s), {args.seeds} seed(s) "
          f"per side; matmul peak {peak[0] / 1e9:.1f} GFLOP/s (fp32, 1 thread, best sample); MFU = model FLOPs per CPU "
          f"second of training / peak; mean [min-max] over seeds")
    peak = peak[0]
    for r in results.values():
        for runs in r["runs"].values():
            for x in runs:
                x["flops_fraction"] = x["flops"] / max(x["train_cpu_s"], 1e-9) / peak  # per CPU second: load-independent
    header = (f"{'shape':>6} {'side':>9} {'tokens/s':>20} {'tokens/CPU s':>20} {'train s':>20} {'process s':>20} "
              f"{'peak MiB':>20} {'eval loss':>26} {'MFU':>6}")
    print(header)
    for shape, r in results.items():
        for side in r["runs"]:
            runs = r["runs"][side]
            print(f"{shape:>6} {side:>9} {spread([x['tokens_per_s'] for x in runs]):>20} "
                  f"{spread([x['tokens_per_cpu_s'] for x in runs]):>20} "
                  f"{spread([x['train_s'] for x in runs]):>20} {spread([x['process_s'] for x in runs]):>20} "
                  f"{spread([x['peak_rss_mb'] for x in runs], '{:.0f}'):>20} "
                  f"{spread([x['eval_loss'] for x in runs], '{:.4f}'):>26} "
                  f"{statistics.fmean(x['flops_fraction'] for x in runs):6.1%}")
        a = r["runs"]["plain"]
        for side in [s for s in r["runs"] if s != "plain"]:
            b = r["runs"][side]
            eval_share = statistics.fmean(x.get("in_training_eval_s", 0.0) / x["train_s"] for x in b)
            mean = lambda runs, k: statistics.fmean(x[k] for x in runs)  # noqa: E731
            ratios = {"speed": mean(b, "tokens_per_s") / mean(a, "tokens_per_s"),
                      "speed_per_cpu_s": mean(b, "tokens_per_cpu_s") / mean(a, "tokens_per_cpu_s"),
                      "peak_rss": mean(b, "peak_rss_mb") / mean(a, "peak_rss_mb"),
                      "eval_loss": mean(b, "eval_loss") / mean(a, "eval_loss")}
            r.setdefault("ratios_by_side", {})[side] = ratios
            if side == "tunewise":
                r["ratios"] = ratios
            label = "b/a" if side == "tunewise" else "c/a"
            print(f"{shape:>6} {label:>9} {ratios['speed']:>19.2f}x {ratios['speed_per_cpu_s']:>19.2f}x {'':>20} "
                  f"{'':>20} {ratios['peak_rss']:>20.2f} "
                  f"{ratios['eval_loss']:>26.3f}   ({side}; {r['rows']} rows x batch {r['batch']}, {r['eval_rows']} eval "
                  f"rows; in-training evaluation {eval_share:.1%} of its training time; activation checkpointing "
                  f"{[(x.get('gradient_checkpointing') or {}).get('on') for x in b]}, freed memory returned to the OS "
                  f"{[x.get('returned_freed_memory') for x in b]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shapes", default="short,long,mixed")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per side (runs alternate A B, B A, ...)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=None, help="override every shape's batch size")
    parser.add_argument("--rows", type=int, default=None, help="override every shape's number of training rows")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--returned", action="store_true",
                        help="also run tunewise with freed memory always returned to the OS (TUNEWISE_MALLOC_TUNING=1)")
    parser.add_argument("--tunewise-training", default=None, help="JSON of training.* overrides for the tunewise side")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "train_vs_baseline.json"))
    parser.add_argument("--side", choices=["plain", "tunewise"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    peak = [matmul_peak()]  # raised by every child's own sample
    print(f"matmul peak {peak[0] / 1e9:.1f} GFLOP/s (load {load_avg()})", flush=True)
    results: dict = {}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        results[shape] = bench_shape(shape, args, peak)
        report({shape: results[shape]}, args, peak)  # each shape's table as soon as it is measured
        out.write_text(json.dumps({"model": args.model, "epochs": args.epochs, "seeds": args.seeds, "lr": args.lr,
                                   "tunewise_training": args.tunewise_training, "matmul_peak_flops": peak[0],
                                   "shapes": results}, indent=1), encoding="utf-8")
    report(results, args, peak)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
