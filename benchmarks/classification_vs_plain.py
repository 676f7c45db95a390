"""Classification accuracy: a plain LoRA script against a tunewise run, on the same prepared rows.

The plain side is the script a user writes from the PEFT and transformers documentation: the chat template with the
system prompt; labels = the answer and its end-of-turn token (benchmarks/train_vs_baseline.py ``plain_encode``);
``DataCollatorForSeq2Seq`` padding; PEFT LoRA r 16, alpha 32, dropout 0.05 on every linear layer; the Trainer's own
defaults otherwise (3 epochs, linear schedule, AdamW) with learning rate 2e-4 and batch 8; fp32; no validation, no
model selection. It is scored the way such a script is: greedy generation of a few tokens on the test split,
accuracy after lower-casing and stripping punctuation (tunewise.metrics.accuracy_scores, the metric tunewise reports).

It trains on RUN/data/train.jsonl and scores RUN/data/test.jsonl of a tunewise run that has been through `tunewise run`
(the same split, rows and system prompt), writes its predictions in tunewise's format next to them
(RUN/eval/predictions_plain.jsonl), and prints both accuracies with 95% bootstrap intervals and the paired
difference on the same rows (what `tunewise compare RUN/eval/predictions_plain.jsonl RUN/eval/predictions_tuned.jsonl`
prints), with its training time and peak RSS next to tunewise's.

    tunewise run speeches.yaml                                   # the tunewise side, its defaults
    OMP_NUM_THREADS=1 python benchmarks/classification_vs_plain.py runs/speeches
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def generate_answers(model, tokenizer, rows: list[dict], max_new_tokens: int, batch: int = 8) -> list[str]:
    """Greedy answers to each row's prompt (its messages but the last), left-padded batches, fp32."""
    import torch

    tokenizer.padding_side = "left"
    answers: list[str] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            prompts = [tokenizer.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False)
                       for r in rows[i:i + batch]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            print(f"  generated {min(i + batch, len(rows))}/{len(rows)}", flush=True)
    return [a.strip() for a in answers]


def train_plain(model_path: str, rows: list[dict], *, epochs: float, lr: float, batch: int, seed: int,
                checkpointing: bool = False):
    import torch
    from peft import LoraConfig, get_peft_model
    from train_vs_baseline import plain_encode
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from tunewise.lm.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    encoded = [plain_encode(tokenizer, r) for r in rows]
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, num_train_epochs=epochs,
                             learning_rate=lr, logging_steps=10, save_strategy="no", report_to="none",
                             use_cpu=not torch.cuda.is_available(), seed=seed, data_seed=seed, disable_tqdm=True,
                             remove_unused_columns=False, gradient_checkpointing=checkpointing)
    trainer = Trainer(model=model, args=args, train_dataset=encoded,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    started = time.time()
    trainer.train()
    return model, tokenizer, time.time() - started, trainer.state.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a tunewise run directory after `tunewise run`")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="what a user adds when batch 8 of long rows runs out of memory (same steps, less memory)")
    args = parser.parse_args()

    import yaml

    from tunewise.evaluate.compare import compare_files
    from tunewise.metrics import accuracy_scores
    from tunewise.monitor.memory import peak_rss_mb
    from tunewise.rundir import atomic_write_jsonl, read_jsonl

    run = args.run
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    train, test = read_jsonl(run / "data" / "train.jsonl"), read_jsonl(run / "data" / "test.jsonl")
    print(f"plain LoRA script on {len(train)} training rows of {run}; scoring {len(test)} test rows")
    model, tokenizer, train_s, steps = train_plain(config["model"], train, epochs=args.epochs, lr=args.lr,
                                                   batch=args.batch, seed=args.seed,
                                                   checkpointing=args.gradient_checkpointing)
    rss = peak_rss_mb()
    answers = generate_answers(model, tokenizer, test, args.max_new_tokens)
    references = [r["messages"][-1]["content"] for r in test]
    scores = accuracy_scores(answers, references)
    predictions = [{"index": i, "reference": ref, "prediction": ans, "scores": {"accuracy": s}}
                   for i, (ans, ref, s) in enumerate(zip(answers, references, scores))]
    out = run / "eval" / "predictions_plain.jsonl"
    atomic_write_jsonl(out, predictions)
    tuned = run / "eval" / "predictions_tuned.jsonl"
    summary = json.loads((run / "train_summary.json").read_text(encoding="utf-8"))
    result = {"plain": {"accuracy": sum(scores) / len(scores), "steps": steps, "train_s": round(train_s, 1),
                        "peak_rss_mb": round(rss), "epochs": args.epochs, "lr": args.lr, "batch": args.batch,
                        "gradient_checkpointing": args.gradient_checkpointing},
              "tunewise": {"steps": summary.get("steps"), "train_s": summary.get("train_time_s"),
                           "peak_rss_mb": summary.get("peak_rss_mb")}}
    if tuned.is_file():
        comparison = compare_files([out, tuned], run / "eval" / "comparison_plain.json")
        result["comparison"] = comparison
        acc = comparison["metrics"]["accuracy"]
        for side in ("plain", "tuned"):
            low, high = acc["intervals"][side]
            print(f"{side:>8}: accuracy {acc['values'][side]:.3f} [{low:.3f}, {high:.3f}]")
        print(f"tunewise - plain: {acc['delta']:+.3f} [{acc['ci'][0]:+.3f}, {acc['ci'][1]:+.3f}] (p = "
              f"{acc['p_value']:.3g}, paired on the same {comparison['n']} rows)")
    print(json.dumps({k: v for k, v in result.items() if k != "comparison"}, indent=1, default=str))
    (run / "eval" / "plain_vs_tunewise.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
