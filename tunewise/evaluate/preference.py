"""Held-out preference pairs: does a model rank the chosen answer above the rejected one?

Each answer is scored by the mean log-probability of its tokens under the model (length-normalised, so a longer
answer is not penalised for its length); ``preference_accuracy`` is the share of pairs whose chosen answer scores
higher. The same number for the base and the tuned model on the same pairs makes them comparable (with the paired
bootstrap of tunewise/evaluate/compare.py), unlike DPO's implicit reward, which is zero for the base by definition."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tunewise.config import Config
from tunewise.example import Example
from tunewise.lm.loss import sequence_logps
from tunewise.objectives.preference import PairCollator, encode_pairs

METRIC = "preference_accuracy"


def score_pairs(model: Any, tokenizer: Any, examples: Sequence[Example], config: Config, *, batch_size: int = 8,
                progress: Callable[[int], None] | None = None) -> list[dict[str, float] | None]:
    """Per example: {"chosen", "rejected"} mean token log-probabilities and ``margin`` (chosen - rejected); None for an
    example that is not a pair (or whose answers ``data.max_tokens`` cut off)."""
    position = {id(e): i for i, e in enumerate(examples)}
    pairs = [e for e in examples if e.rejected]
    scores: list[dict[str, float] | None] = [None] * len(examples)
    collate = PairCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            kept = [(e, f) for e in chunk for f in encode_pairs([e], tokenizer, config)]
            if kept:
                batch = {k: v.to(device) for k, v in collate([f for _, f in kept]).items()}
                with torch.no_grad():
                    (logps, counts), = sequence_logps(model, batch)
                mean = (logps / counts.clamp(min=1)).tolist()
                n = len(kept)
                for i, (example, _) in enumerate(kept):
                    scores[position[id(example)]] = {"chosen": mean[i], "rejected": mean[n + i],
                                                     "margin": mean[i] - mean[n + i]}
            if progress is not None:
                progress(len(chunk))
    finally:
        model.train(was_training)
    return scores


def add_preference_scores(records: list[dict[str, Any]], result: dict[str, Any],
                          scores: Sequence[dict[str, float] | None]) -> None:
    """Put the pair scores into the prediction records (per-example ``preference_accuracy`` 0/1, for the paired
    comparison) and the headline into ``result``'s metrics; records of non-pairs are left as they are."""
    wins = []
    for record, score in zip(records, scores):
        if score is None:
            continue
        record["preference"] = score
        record["scores"][METRIC] = float(score["margin"] > 0)
        wins.append(record["scores"][METRIC])
    if wins and len(wins) == len(records):
        result["metrics"][METRIC] = sum(wins) / len(wins)
        result["preference_margin"] = sum(s["margin"] for s in scores if s) / len(wins)
