"""Evaluate any model on any test file, outside a run: a Hugging Face causal LM folder (or hub id / built-in name),
an adapter folder (its base from ``base_model_name_or_path``) or a run directory (its RUN/model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from tunewise.evaluate.run import evaluate_examples, write_eval
from tunewise.example import Example
from tunewise.lm.device import evaluation_dtype, resolve_precision
from tunewise.lm.loading import classify, load_source
from tunewise.rundir import RunDir

DEFAULT_METRICS = ("exact_match", "accuracy", "token_f1")


def read_examples(data: str | Path, max_examples: int | None = None) -> list[Example]:
    """Test examples with an assistant answer from any format tunewise reads (chat, alpaca, sharegpt, completion,
    preference pairs: their chosen answer is the reference)."""
    from tunewise.data.formats import detect_format, normalize
    from tunewise.data.io import iter_rows

    examples = []
    for row in iter_rows(data):
        if row.error is not None:
            raise ValueError(f"{row.source}:{row.line}: {row.error}; fix the row or check it with `tunewise data validate`")
        fmt = detect_format(row.record)
        if fmt is None:
            raise ValueError(f"{row.source}:{row.line}: unknown row format (expected messages, instruction/output, conversations or prompt/completion)")
        example = normalize(row.record, fmt)
        if example.reference is not None:
            examples.append(example)
        if max_examples and len(examples) >= max_examples:
            break
    if not examples:
        raise ValueError(f"{data} has no example with an answer to evaluate against")
    return examples


def evaluate_model(
    model: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    *,
    metrics: Sequence[str] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
    name: str | None = None,
    trust_remote_code: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` and write OUT/predictions_<name>.jsonl, metrics_<name>.json, errors_<name>.json.

    For a run directory, ``data`` defaults to RUN/data/test.jsonl, ``out`` to RUN/eval and the eval settings to its
    config's; otherwise ``out`` defaults to ./eval and ``name`` to the model folder's name.
    """
    source = classify(model)
    eval_cfg = None
    config = None
    if source.run_dir is not None:
        from tunewise.runs import config_of_run

        config, _ = config_of_run(source.run_dir)
        eval_cfg, trust_remote_code = config.eval, trust_remote_code or config.trust_remote_code
        data = data or RunDir.of(source.run_dir).split("test")
        out = out or source.run_dir / "eval"
    if data is None:
        raise ValueError("pass the test file with --data (only a run directory has a default, RUN/data/test.jsonl)")
    out_dir = Path(out or "eval")
    name = name or ("tuned" if source.run_dir is not None and out_dir == source.run_dir / "eval" else source.name)
    metrics = list(metrics or (eval_cfg.metrics if eval_cfg else DEFAULT_METRICS))
    max_examples = max_examples or (eval_cfg.max_examples if eval_cfg else None)
    examples = read_examples(data, max_examples)

    precision = resolve_precision()
    loaded, tokenizer = load_source(source, device=precision.device, dtype=evaluation_dtype(precision),
                                    trust_remote_code=trust_remote_code)
    records, scored = evaluate_examples(
        loaded, tokenizer, examples, metrics,
        max_new_tokens=max_new_tokens or (eval_cfg.max_new_tokens if eval_cfg else 64),
        batch_size=batch_size or (eval_cfg.batch_size if eval_cfg else 16),
        progress=progress,
    )
    if any(e.rejected for e in examples):  # preference pairs: the share ranked chosen-first (evaluate/preference.py)
        from tunewise.config import Config
        from tunewise.evaluate.preference import add_preference_scores, score_pairs

        add_preference_scores(records, scored, score_pairs(loaded, tokenizer, examples, config or Config(),
                                                           batch_size=batch_size or 8, progress=progress))
    result = {"model": name, "model_path": source.path, "base_model": source.base, "data": str(data), **scored}
    in_run = source.run_dir is not None and out_dir == source.run_dir / "eval"
    plots_dir = source.run_dir / "plots" if in_run and source.run_dir is not None else out_dir / "plots"
    write_eval(out_dir, plots_dir, name, records, result, tokenizer=tokenizer)
    result["out_dir"] = str(out_dir)
    return result
