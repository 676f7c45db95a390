"""Eval stage: generate answers for RUN/data/test.jsonl with the base or the tuned model and score them."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from tunewise.config import Config
from tunewise.example import Example
from tunewise.lm.device import evaluation_dtype, precision_for
from tunewise.lm.generate import generate
from tunewise.lm.loading import classify, load_model, load_source, load_tokenizer
from tunewise.rundir import (
    RunDir,
    atomic_write_json,
    atomic_write_jsonl,
    metrics_file_of,
    predictions_file,
)

log = logging.getLogger(__name__)


def load_for_eval(config: Config, which: str, run: RunDir, *, device: str, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for ``which``: "base" (the config's model) or "tuned" (RUN/model, adapter or full;
    a quantized method's adapter goes on its base quantized the same way as in training)."""
    if which == "base":
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        return load_model(config.model, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code), tokenizer
    run.require("model", hint="train first: `tunewise train RUN`")
    # the one loader (tunewise/lm/loading.py): a QLoRA adapter goes on its base quantized exactly as in training
    return load_source(classify(run.root), device=device, dtype=dtype)


AUTO_PERPLEXITY_TOKENS = 60_000
"""``eval.perplexity: auto`` computes reference perplexity with its own forward pass only for test sets of at most
this many tokens (prompts and answers); a classification test set gets it from the label scores at no cost."""


LABEL_SLACK_TOKENS = 8
"""Classification: answers are generated up to the longest label's tokens plus this many (room for "The answer is
spam", which ``label_found`` scores), not up to ``eval.max_new_tokens``."""


def _phase(progress: Any, name: str, total: int) -> None:
    """Tell a progress display that a new pass over ``total`` examples starts (plain callables ignore it)."""
    start = getattr(progress, "phase", None)
    if start is not None:
        start(name, total)


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
    labels: Sequence[str] | None = None,
    constrained: bool = True,
    perplexity: bool | str = "auto",
    name: str = "",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Generate and score ``examples``; for a classification task also rank the known labels (constrained accuracy:
    :mod:`tunewise.evaluate.labels`) and give reference perplexity where asked: (prediction records, metrics record).

    ``labels`` are the task's labels (default: detected from the references; none for a generation task). When there
    are labels, the lenient ``label_found`` score is added to ``metric_names``. ``perplexity``: True, False or
    "auto" (from the label scores when there are labels, else its own pass on test sets up to
    :data:`AUTO_PERPLEXITY_TOKENS` tokens). ``name`` (e.g. "base few-shot") prefixes the progress of each pass.
    """
    prefix = f"{name}: " if name else ""
    from tunewise.evaluate.labels import (
        METRIC,
        constrained_scores,
        reference_nll,
        score_labels,
    )
    from tunewise.metrics import (
        compute_metrics,
        detect_labels,
        per_example_scores,
        tokenization,
    )

    references = [e.reference or "" for e in examples]
    if labels:
        labels = sorted(set(labels) | {r.strip() for r in references})
    else:
        labels = detect_labels(references)
    if labels is not None:  # nothing longer than the longest label (and a few words around it) can be an exact label
        longest = max(len(ids) for ids in tokenizer(list(labels), add_special_tokens=False)["input_ids"])
        max_new_tokens = min(max_new_tokens, longest + LABEL_SLACK_TOKENS)
    timings: dict[str, float] = {}
    started = time.time()
    _phase(progress, prefix + "generating", len(examples))
    outputs = generate(
        model, tokenizer, [e.prompt_messages for e in examples],
        max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
    )
    elapsed = timings["generation_s"] = round(time.time() - started, 2)
    predictions = [o["text"] for o in outputs]
    names = list(metric_names)
    if labels is not None and "label_found" not in names:
        names.append("label_found")  # a fair number for verbose (base) models on a label task
    options = {"labels": labels} if labels is not None and "label_found" in names else {}
    scores = per_example_scores(predictions, references, names, **options)
    metrics = compute_metrics(predictions, references, names, **options)

    ranked = None
    if labels is not None and constrained:
        started = time.time()
        _phase(progress, prefix + "ranking labels", len(examples))
        ranked = score_labels(model, tokenizer, [e.prompt_messages for e in examples], labels, batch_size=batch_size,
                              progress=progress)  # fmt: skip
        timings["constrained_s"] = round(time.time() - started, 2)
        scores[METRIC] = constrained_scores(ranked, references)
        metrics[METRIC] = sum(scores[METRIC]) / len(scores[METRIC])

    records = []
    for i, (example, output) in enumerate(zip(examples, outputs)):
        user = next((m.get("content") for m in reversed(example.prompt_messages) if m.get("role") == "user"), "")
        record = {
            "index": i,
            "input": user,
            "reference": references[i],
            "prediction": output["text"],
            "stopped": output["stopped"],
            "new_tokens": output["new_tokens"],
            "label": example.meta.get("label"),
            "scores": {name: values[i] for name, values in scores.items()},
        }
        if ranked is not None:
            record["constrained"] = ranked[i].to_record()
        records.append(record)

    ppl, source = None, "off"
    from_labels = reference_nll(ranked, references) if ranked is not None else None
    if perplexity is not False and from_labels is not None:
        ppl, source = math.exp(from_labels[0] / from_labels[1]), "label scores (no extra pass)"
    elif perplexity is True or (perplexity == "auto" and _test_tokens(tokenizer, examples) <= AUTO_PERPLEXITY_TOKENS):
        started = time.time()
        ppl = _perplexity_or_none(model, tokenizer, examples, batch_size=batch_size, max_tokens=max_tokens)
        timings["perplexity_s"] = round(time.time() - started, 2)
        source = "forward pass" if ppl is not None else "not computable"
    elif perplexity == "auto":
        source = f"skipped: test set over {AUTO_PERPLEXITY_TOKENS:,} tokens (eval.perplexity: true computes it)"
    if ppl is not None:
        metrics["perplexity"] = ppl
    result = {
        "n": len(examples),
        "metrics": metrics,
        "labels": labels,
        "tokenization": tokenization(references, names, **options),  # BLEU/chrF/ROUGE pick theirs by the references' language
        "stopped_share": sum(o["stopped"] for o in outputs) / len(outputs),
        "generation_time_s": elapsed,
        "max_new_tokens": max_new_tokens,
        "examples_per_s": round(len(examples) / elapsed, 3) if elapsed else None,
        "perplexity_source": source,
        "timings_s": timings,
    }
    return records, result


def _test_tokens(tokenizer: Any, examples: Sequence[Example]) -> int:
    """Tokens of the examples' text (a cheap upper bound of what a perplexity pass feeds: no template)."""
    texts = [" ".join(str(m.get("content") or "") for m in e.messages) for e in examples]
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else 0


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
    predictions = predictions_file(out_dir, which)
    atomic_write_jsonl(predictions, records)
    atomic_write_json(metrics_file_of(predictions), result)
    length_fn = (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])) if tokenizer is not None else None
    write_errors(records, which, out_dir, plots_dir, labels=result.get("labels"), length_fn=length_fn, length_unit="tokens")


def run_labels(run: RunDir) -> list[str] | None:
    """The labels of a run's classification task, from its data report (None for a generation task)."""
    task = (run.read_json(run.data_report) or {}).get("task") or {}
    return task.get("labels") if task.get("type") == "classification" else None


def evaluate_run(
    config: Config,
    run_dir: str | Path,
    which: str = "tuned",
    *,
    split: str = "test",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write RUN/eval/predictions_<which>.jsonl, metrics_<which>.json and errors_<which>.json; return the metrics record.

    For the base model also the few-shot baseline (``eval.few_shot`` shots from the training split, chosen once with
    ``data.seed``) on the same rows: RUN/eval/*_base_few_shot.*, and its metrics under ``few_shot`` in the result."""
    run = RunDir.of(run_dir)
    examples = [Example.from_record(r) for r in run.read_split(split)]
    examples = [e for e in examples if e.reference is not None]
    if config.eval.max_examples:
        examples = examples[: config.eval.max_examples]
    if not examples:
        raise ValueError(f"{run.split(split)} has no example with an assistant answer to evaluate against")

    labels = run_labels(run)
    precision = precision_for(config)
    model, tokenizer = load_for_eval(config, which, run, device=precision.device, dtype=evaluation_dtype(precision))
    settings = dict(max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size,
                    max_tokens=config.data.max_tokens, progress=progress, labels=labels,
                    constrained=config.eval.constrained)  # fmt: skip
    records, scored = evaluate_examples(model, tokenizer, examples, config.eval.metrics,
                                        perplexity=config.eval.perplexity, name=which, **settings)  # fmt: skip
    if any(e.rejected for e in examples):  # preference pairs: does the model rank the chosen answer first?
        from tunewise.evaluate.preference import add_preference_scores, score_pairs

        _phase(progress, f"{which}: scoring preference pairs", len(examples))
        add_preference_scores(records, scored, score_pairs(model, tokenizer, examples, config,
                                                           batch_size=config.eval.batch_size, progress=progress))
    result = {
        "model": which,
        "model_path": config.model if which == "base" else str(run.model),
        "split": split,
        **scored,
    }
    write_eval(run.eval, run.plots, which, records, result, tokenizer=tokenizer)
    if which == "base" and config.eval.few_shot > 0:
        few = few_shot_baseline(config, run, model, tokenizer, examples, scored.get("labels"), settings)
        if few is not None:
            result["few_shot"] = few
    return result


FEW_SHOT = "base_few_shot"
"""The model name of the few-shot baseline in RUN/eval (predictions_base_few_shot.jsonl, ...)."""


def few_shot_baseline(config: Config, run: RunDir, model: Any, tokenizer: Any, examples: Sequence[Example],
                      labels: Sequence[str] | None, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The base model prompted with ``eval.few_shot`` training examples (and, for a classification task, the list of
    labels) on ``examples``; written as RUN/eval/*_base_few_shot.*. None when the training split has no answers."""
    from tunewise.data.prepare import load_split
    from tunewise.evaluate.prompting import choose_shots, few_shot, instruction

    train = [e for e in load_split(run.data, "train") if e.reference is not None and not e.meta.get("augmented")]
    if not train:
        return None
    chosen = choose_shots(train, config.eval.few_shot, seed=config.data.seed, labels=labels)
    shots = [train[i] for i in chosen]
    text = instruction("classification" if labels else "generation", labels, False, False)
    prompted = [few_shot(e, shots, text) for e in examples]
    records, scored = evaluate_examples(model, tokenizer, prompted, config.eval.metrics, perplexity=False,
                                        name="base few-shot", **settings)  # fmt: skip
    result = {
        "model": FEW_SHOT,
        "model_path": config.model,
        "split": "test",
        "shots": [{"source": s.meta.get("source"), "line": s.meta.get("line"), "reference": s.reference} for s in shots],
        "instruction": text,
        "seed": config.data.seed,
        **scored,
    }
    write_eval(run.eval, run.plots, FEW_SHOT, records, result, tokenizer=tokenizer)
    return result
