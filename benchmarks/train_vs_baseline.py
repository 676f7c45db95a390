"""Training speed: the plain Hugging Face recipe vs tunewise, same model, data, examples, epochs and LoRA settings.

(a) the recipe a tutorial writes: chat template -> tokenizer(padding="max_length") to the longest example,
    DataCollatorForLanguageModeling (labels = input ids, pad masked), Trainer + PEFT LoRA;
(b) tunewise's defaults: answer-only labels by position, padding-free packing with the prompt prefix shared by a
    batch computed once and nothing fed after an example's last trained token, logits only at trained positions.

Both are then scored the same way: loss per answer token on 64 held-out rows. Printed per run: wall time of
trainer.train(), examples/s, tokens/s (the examples' real tokens, the same count for both, per second of training),
peak memory (RSS on CPU, CUDA peak on GPU; each side runs in its own process so peaks don't mix), final eval loss,
and the ratios b/a. On a 2-core CPU run it with OMP_NUM_THREADS=1 when anything else is running.

    python benchmarks/train_vs_baseline.py --model tiny --examples 512 --epochs 1
    python benchmarks/train_vs_baseline.py --model smollm2-135m --data examples/topics/topics.jsonl --examples 160
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_rows(data: str | None, n: int) -> list[dict]:
    if data:
        rows = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from tests.conftest import reversal_rows

        rows = reversal_rows(n + 64, seed=3)
    return rows[: n + 64]


def answer_loss(model, tokenizer, val_rows: list[dict]) -> float:
    """Mean loss per answer token on validation rows (the same yardstick for both recipes)."""
    import torch

    from tunewise.example import Example
    from tunewise.lm.collate import PadCollator
    from tunewise.lm.chat import encode_examples
    from tunewise.lm.loss import sparse_causal_lm_loss

    encoded = encode_examples([Example.from_record(r) for r in val_rows], tokenizer)
    collate = PadCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(encoded), 16):
            batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded[i : i + 16]])
            loss, n = sparse_causal_lm_loss(model, batch)
            total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


def run_plain(model_name: str, rows: list[dict], val: list[dict], args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from tunewise.lm.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_name)
    tokenizer.padding_side = "right"
    model = load_model(model_name)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    encoded = tokenizer(texts, add_special_tokens=False, padding="max_length", max_length=longest)
    dataset = Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, num_train_epochs=args.epochs,
        learning_rate=args.lr, logging_steps=50, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        seed=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    started = time.time()
    trainer.train()
    wall = time.time() - started
    tokens = int(sum(sum(m) for m in encoded["attention_mask"]))
    return {"wall_s": wall, "tokens": tokens, "eval_answer_loss": answer_loss(model, tokenizer, val)}


def run_tunewise(model_name: str, rows: list[dict], val: list[dict], args: argparse.Namespace) -> dict:
    import torch

    from tunewise.config import config_from_dict
    from tunewise.evaluate.run import load_for_eval
    from tunewise.runs import init_run
    from tunewise.rundir import atomic_write_jsonl
    from tunewise.train.run import train_run

    out = Path(tempfile.mkdtemp())
    config = config_from_dict({
        "name": "bench", "output_dir": str(out), "model": model_name, "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {"epochs": args.epochs, "per_device_train_batch_size": args.batch, "learning_rate": args.lr,
                     "logging_steps": 50, "save_steps": 10**6, "seed": 0},
        "monitor": {"live": "off", "plots": False},
    })
    run = init_run(config)
    atomic_write_jsonl(run.data / "train.jsonl", rows)
    summary = train_run(config, run.root)
    wall = summary["train_time_s"]  # trainer.train() only, as for the plain recipe (no model loading)
    model, tokenizer = load_for_eval(config, "tuned", run, device="cpu", dtype=torch.float32)
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return {"wall_s": wall, "train_s": summary["train_time_s"], "tokens": tokens, "eval_answer_loss": answer_loss(model, tokenizer, val)}


def child(side: str, args: argparse.Namespace) -> None:
    rows = load_rows(args.data, args.examples)
    train, val = rows[: args.examples], rows[args.examples : args.examples + 64]
    result = (run_plain if side == "plain" else run_tunewise)(args.model, train, val, args)
    import torch

    from tunewise.monitor.memory import peak_rss_mb

    result["peak_rss_mb"] = peak_rss_mb()  # this process's own peak (VmHWM), not inherited at fork
    if torch.cuda.is_available():  # on GPU the memory that matters is the device's
        result["peak_rss_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["examples"] = len(train) * args.epochs
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--data", default=None, help="chat JSONL (default: the tiny reversal task)")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--side", choices=["plain", "tunewise"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args)
        return
    results = {}
    for side in ("plain", "tunewise"):
        cmd = [sys.executable, __file__, "--side", side, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
        results[side] = json.loads(line[7:])
    a, b = results["plain"], results["tunewise"]
    print(f"model {args.model}, {args.examples} examples x {args.epochs} epochs, batch {args.batch}, LoRA r16 all-linear")
    memory = "peak MiB"
    print(f"{'':>10} {'wall s':>8} {'ex/s':>8} {'tokens/s':>9} {memory:>9} {'eval loss':>10}")
    for name, r in (("plain", a), ("tunewise", b)):
        print(f"{name:>10} {r['wall_s']:8.1f} {r['examples'] / r['wall_s']:8.2f} {r['tokens'] * args.epochs / r['wall_s']:9.1f} "
              f"{r['peak_rss_mb']:9.0f} {r['eval_answer_loss']:10.4f}")
    print(f"{'b/a':>10} {b['wall_s'] / a['wall_s']:8.2f} {a['wall_s'] / b['wall_s']:8.2f}x {a['wall_s'] / b['wall_s']:8.2f}x "
          f"{b['peak_rss_mb'] / a['peak_rss_mb']:9.2f} {b['eval_answer_loss'] / a['eval_answer_loss']:10.2f}")


if __name__ == "__main__":
    main()
