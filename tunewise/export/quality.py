"""The quality of a model on the test sample: the run's eval metrics on greedy answers, and answer perplexity."""

from __future__ import annotations

import time
from typing import Any, Sequence

from tunewise.evaluate.perplexity import perplexity
from tunewise.example import Example


def measure_quality(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    metrics: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> dict[str, Any]:
    """``{"n", "metrics": {name: score}, "perplexity", "seconds"}`` for ``model`` on ``examples``, scored exactly as
    the eval stage scores (:func:`tunewise.evaluate.run.evaluate_examples`)."""
    from tunewise.evaluate.run import evaluate_examples

    started = time.time()
    records, result = evaluate_examples(
        model, tokenizer, examples, metrics, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    scores = dict(result["metrics"])
    ppl = scores.pop("perplexity", None)
    return {
        "n": len(examples),
        "metrics": scores,
        "perplexity": ppl if ppl is not None else perplexity(model, tokenizer, examples, batch_size),
        "seconds": round(time.time() - started, 2),
        "predictions": [r["prediction"] for r in records],
    }


def quality_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """after - before for every metric and the perplexity, plus how many greedy answers changed."""
    changed = sum(a != b for a, b in zip(before["predictions"], after["predictions"]))
    return {
        "metrics": {k: after["metrics"][k] - v for k, v in before["metrics"].items()},
        "perplexity": after["perplexity"] - before["perplexity"],
        "answers_changed": changed,
    }
