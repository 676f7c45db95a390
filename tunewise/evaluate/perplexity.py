"""Perplexity of the reference answers: exp of the mean negative log-likelihood per supervised answer token.

The supervised tokens are exactly the ones training learns (``encode_examples`` labels: the assistant answers and
their end-of-turn token), so the number is comparable with the training/eval loss and between a model and its
merged or quantized export. Logits are computed only at the positions that predict a supervised token.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from tunewise.example import Example
from tunewise.lm.chat import LossOn, encode_examples
from tunewise.lm.collate import PadCollator
from tunewise.lm.loss import sparse_causal_lm_loss


@torch.inference_mode()
def answer_nll(
    model: Any,
    tokenizer: Any,
    examples: Iterable[Example],
    batch_size: int = 16,
    *,
    loss_on: LossOn = "answers",
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, number of supervised tokens) over ``examples``."""
    encoded = [e for e in encode_examples(examples, tokenizer, loss_on=loss_on, max_tokens=max_tokens) if e.n_trained]
    if not encoded:
        raise ValueError("no example has a supervised answer token to score; perplexity needs assistant answers")
    model.eval()
    device = next(model.parameters()).device
    collate = PadCollator(tokenizer.pad_token_id)
    encoded.sort(key=len)  # batches of similar length pad little
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
        batch = {k: v.to(device) for k, v in batch.items()}
        loss_sum, n = sparse_causal_lm_loss(model, batch, num_items_in_batch=1)  # denominator 1: the sum
        total += float(loss_sum)
        count += n
    return total, count


def perplexity(model: Any, tokenizer: Any, examples: Iterable[Example], batch_size: int = 16, **kwargs: Any) -> float:
    """exp(mean NLL per supervised answer token) of ``model`` on ``examples`` (lower is better; 1 is perfect)."""
    total, count = answer_nll(model, tokenizer, examples, batch_size, **kwargs)
    return math.exp(total / count)
