"""Eval stage: generate answers for RUN/data/test.jsonl with the base or the tuned model and score them."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from tunewise.config import Config
from tunewise.data.example import Example
from tunewise.evaluate.generate import generate
from tunewise.models import load_model, load_tokenizer
from tunewise.models.device import resolve_precision
from tunewise.rundir import RunDir, atomic_write_json, atomic_write_jsonl, read_jsonl

log = logging.getLogger(__name__)


def load_for_eval(config: Config, which: str, run: RunDir, *, device: str, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for ``which``: "base" (the config's model) or "tuned" (RUN/model, adapter or full;
    a quantized method's adapter goes on its base quantized the same way as in training)."""
    if which == "base":
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        return load_model(config.model, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code), tokenizer
    model_dir = run.require("model", hint="train first: `tunewise train RUN`")
    tokenizer = load_tokenizer(str(model_dir), trust_remote_code=config.trust_remote_code)
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        from tunewise.train.methods import load_base

        # a QLoRA adapter is evaluated on the base quantized exactly as in training
        base = load_base(config, dtype=dtype, device=device)
        model = PeftModel.from_pretrained(base, str(model_dir))
        return (model if getattr(base, "hf_quantizer", None) is not None else model.to(device)), tokenizer
    return load_model(str(model_dir), dtype=dtype, device=device, trust_remote_code=config.trust_remote_code), tokenizer


def evaluate_examples(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    metric_names: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    max_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Generate, score and measure perplexity on ``examples``: (prediction records, metrics record).

    When the references look like labels, the lenient ``label_found`` score is added to ``metric_names``.
    """
    from tunewise.evaluate.metrics import compute_metrics, detect_labels, per_example_scores, tokenization

    started = time.time()
    outputs = generate(
        model, tokenizer, [e.prompt_messages for e in examples],
        max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
    )
    elapsed = time.time() - started
    predictions = [o["text"] for o in outputs]
    references = [e.reference or "" for e in examples]
    names = list(metric_names)
    labels = detect_labels(references)
    if labels is not None and "label_found" not in names:
        names.append("label_found")  # a fair number for verbose (base) models on a label task
    options = {"labels": labels} if labels is not None and "label_found" in names else {}
    scores = per_example_scores(predictions, references, names, **options)
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
    metrics = compute_metrics(predictions, references, names, **options)
    ppl = _perplexity_or_none(model, tokenizer, examples, batch_size=batch_size, max_tokens=max_tokens)
    if ppl is not None:
        metrics["perplexity"] = ppl
    result = {
        "n": len(examples),
        "metrics": metrics,
        "labels": labels,
        "tokenization": tokenization(references, names, **options),  # BLEU/chrF/ROUGE pick theirs by the references' language
        "stopped_share": sum(o["stopped"] for o in outputs) / len(outputs),
        "generation_time_s": round(elapsed, 2),
        "examples_per_s": round(len(examples) / elapsed, 3) if elapsed else None,
    }
    return records, result


def _perplexity_or_none(model: Any, tokenizer: Any, examples: Sequence[Example], **kwargs: Any) -> float | None:
    """Perplexity of the references (lower is better); None, with a warning, where the model cannot be scored so."""
    from tunewise.evaluate.perplexity import perplexity

    try:
        return perplexity(model, tokenizer, examples, **kwargs)
    except (ValueError, RuntimeError, TypeError) as err:  # e.g. no supervised token, a prompt-learning adapter
        log.warning("perplexity not computed: %s", err)
        return None


def write_eval(
    out_dir: str | Path, plots_dir: str | Path, which: str, records: list[dict[str, Any]], result: dict[str, Any],
    *, tokenizer: Any = None,
) -> None:
    """Write OUT/predictions_<which>.jsonl, OUT/metrics_<which>.json and the error analysis OUT/errors_<which>.json."""
    from tunewise.evaluate.errors import write_errors

    out_dir = Path(out_dir)
    atomic_write_jsonl(out_dir / f"predictions_{which}.jsonl", records)
    atomic_write_json(out_dir / f"metrics_{which}.json", result)
    length_fn = (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])) if tokenizer is not None else None
    write_errors(records, which, out_dir, plots_dir, labels=result.get("labels"), length_fn=length_fn, length_unit="tokens")


def evaluate_run(
    config: Config,
    run_dir: str | Path,
    which: str = "tuned",
    *,
    split: str = "test",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write RUN/eval/predictions_<which>.jsonl, metrics_<which>.json and errors_<which>.json; return the metrics record."""
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
    records, scored = evaluate_examples(
        model, tokenizer, examples, config.eval.metrics,
        max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size,
        max_tokens=config.data.max_tokens, progress=progress,
    )
    result = {
        "model": which,
        "model_path": config.model if which == "base" else str(run.model),
        "split": split,
        **scored,
    }
    write_eval(run.eval, run.plots, which, records, result, tokenizer=tokenizer)
    return result
