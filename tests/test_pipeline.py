"""End to end on the tiny model: `tunewise run` learns a toy task and leaves a complete run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def test_lora_learns_the_toy_task(toy_run: dict[str, Any]) -> None:
    base = toy_run["base"]["metrics"]["exact_match"]
    tuned = toy_run["tuned"]["metrics"]["exact_match"]
    assert base <= 0.05, f"the untuned tiny model should not know the task (exact match {base})"
    assert tuned >= 0.8, f"LoRA should learn letter reversal (exact match {tuned})"
    comparison = toy_run["comparison"]["metrics"]["exact_match"]
    assert comparison["significant"] and comparison["ci"][0] > 0.5
    assert toy_run["tuned"]["stopped_share"] >= 0.95, "the tuned model must learn to stop at the end-of-turn token"


def test_run_directory_is_complete(toy_run: dict[str, Any]) -> None:
    run = Path(toy_run["run_dir"])
    for name in ("config.yaml", "metrics.jsonl", "report.html", "train_summary.json"):
        assert (run / name).is_file(), name
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl", "data_report.json"):
        assert (run / "data" / name).is_file(), name
    for name in ("predictions_base.jsonl", "predictions_tuned.jsonl", "metrics_base.json", "metrics_tuned.json", "comparison.json"):
        assert (run / "eval" / name).is_file(), name
    assert (run / "model" / "adapter_config.json").is_file() and (run / "model" / "adapter_model.safetensors").is_file()
    assert (run / "plots" / "loss.png").is_file() and (run / "plots" / "lr.png").is_file()
    assert any((run / "checkpoints").glob("checkpoint-*"))
    assert not list(run.rglob(".*.tmp*")), "no half-written temporary files are left"


def test_metrics_stream_records_training(toy_run: dict[str, Any]) -> None:
    records = [json.loads(line) for line in (Path(toy_run["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert train and evals
    for key in ("step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "trained_tokens", "peak_rss_mb"):
        assert key in train[-1], key
    assert "eval_loss" in evals[-1]
    assert train[-1]["loss"] < train[0]["loss"], "the loss goes down"
    steps = [r["step"] for r in train]
    assert steps == sorted(steps)


def test_report_is_self_contained(toy_run: dict[str, Any]) -> None:
    html = Path(toy_run["report"]).read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    assert "exact_match" in html and "reverse:" in html
    assert "<img src=\"http" not in html and "<script src" not in html


def test_adapter_reloads_with_peft_and_gives_the_same_answers(toy_run: dict[str, Any], tiny_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.example import Example
    from tunewise.lm.generate import generate

    run = Path(toy_run["run_dir"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_dir)), str(run / "model"))
    tokenizer = AutoTokenizer.from_pretrained(str(run / "model"))
    records = [json.loads(line) for line in (run / "eval" / "predictions_tuned.jsonl").read_text().splitlines()][:16]
    tests = [Example.from_record(json.loads(line)) for line in (run / "data" / "test.jsonl").read_text().splitlines()][:16]
    answers = generate(model, tokenizer, [e.prompt_messages for e in tests], max_new_tokens=12, batch_size=16)
    assert [a["text"] for a in answers] == [r["prediction"] for r in records]
