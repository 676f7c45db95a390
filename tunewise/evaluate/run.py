"""Eval stage: generate answers for RUN/data/test.jsonl with the base or the tuned model and score them."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from tunewise.config import Config
from tunewise.data.example import Example
from tunewise.evaluate.generate import generate
from tunewise.models import load_model, load_tokenizer
from tunewise.models.device import resolve_precision
from tunewise.rundir import RunDir, atomic_write_json, atomic_write_jsonl, read_jsonl

log = logging.getLogger(__name__)


def load_for_eval(config: Config, which: str, run: RunDir, *, device: str, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for ``which``: "base" (the config's model) or "tuned" (RUN/model, adapter or full)."""
    if which == "base":
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        return load_model(config.model, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code), tokenizer
    model_dir = run.require("model", hint="train first: `tunewise train RUN`")
    tokenizer = load_tokenizer(str(model_dir), trust_remote_code=config.trust_remote_code)
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_model(config.model, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code)
        return PeftModel.from_pretrained(base, str(model_dir)).to(device), tokenizer
    return load_model(str(model_dir), dtype=dtype, device=device, trust_remote_code=config.trust_remote_code), tokenizer


def evaluate_run(
    config: Config,
    run_dir: str | Path,
    which: str = "tuned",
    *,
    split: str = "test",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write RUN/eval/predictions_<which>.jsonl and RUN/eval/metrics_<which>.json; return the metrics record."""
    from tunewise.evaluate.metrics import compute_metrics, per_example_scores

    run = RunDir.of(run_dir)
    data_file = run.require("data", f"{split}.jsonl", hint="prepare the data first: `tunewise data prepare CONFIG`")
    examples = [Example.from_record(r) for r in read_jsonl(data_file)]
    examples = [e for e in examples if e.reference is not None]
    if config.eval.max_examples:
        examples = examples[: config.eval.max_examples]
    if not examples:
        raise ValueError(f"{data_file} has no example with an assistant answer to evaluate against")

    precision = resolve_precision(config.training.bf16, config.training.fp16)
    model, tokenizer = load_for_eval(config, which, run, device=precision.device, dtype=precision.dtype)
    started = time.time()
    outputs = generate(
        model,
        tokenizer,
        [e.prompt_messages for e in examples],
        max_new_tokens=config.eval.max_new_tokens,
        batch_size=config.eval.batch_size,
        progress=progress,
    )
    elapsed = time.time() - started
    predictions = [o["text"] for o in outputs]
    references = [e.reference or "" for e in examples]
    names = list(config.eval.metrics)
    scores = per_example_scores(predictions, references, names)
    records = []
    for i, (example, output) in enumerate(zip(examples, outputs)):
        user = next((m.get("content") for m in reversed(example.prompt_messages) if m.get("role") == "user"), "")
        records.append(
            {
                "index": i,
                "input": user,
                "reference": references[i],
                "prediction": output["text"],
                "stopped": output["stopped"],
                "new_tokens": output["new_tokens"],
                "label": example.meta.get("label"),
                "scores": {name: scores[name][i] for name in names},
            }
        )
    metrics = compute_metrics(predictions, references, names)
    result = {
        "model": which,
        "model_path": config.model if which == "base" else str(run.model),
        "split": split,
        "n": len(examples),
        "metrics": metrics,
        "stopped_share": sum(o["stopped"] for o in outputs) / len(outputs),
        "generation_time_s": round(elapsed, 2),
        "examples_per_s": round(len(examples) / elapsed, 3) if elapsed else None,
    }
    atomic_write_jsonl(run.eval / f"predictions_{which}.jsonl", records)
    atomic_write_json(run.eval / f"metrics_{which}.json", result)
    return result
