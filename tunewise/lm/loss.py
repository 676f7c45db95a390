"""The causal-LM loss every objective builds on: logits only where a trained token is predicted.

The vocabulary projection is computed only at positions that predict a trained token (``logits_to_keep`` with a
boolean mask, transformers >= 5). With a 49k vocabulary and answers that are a few tokens long this is most of the
forward/backward cost of the head (measured 17-40% faster steps on SmolLM2, FIELD-NOTES).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunewise.lm.adapters import virtual_token_count
from tunewise.lm.chat import IGNORE_INDEX
from tunewise.lm.collate import model_inputs


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask of positions whose next token is trained, the targets at those positions, flattened row-major)."""
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    return mask, shifted[mask]


def sparse_causal_lm_loss(
    model: Any, inputs: dict[str, torch.Tensor], num_items_in_batch: torch.Tensor | int | None = None
) -> tuple[torch.Tensor, int]:
    """Causal-LM loss with logits computed only at trained positions. Returns (loss, trained tokens in this batch)."""
    labels = inputs["labels"]
    mask, targets = next_token_targets(labels)
    forward = model_inputs(model, inputs)
    # prompt tuning puts virtual tokens before the input: the mask must cover them too (never kept)
    virtual = virtual_token_count(model)
    keep = F.pad(mask, (virtual, 0), value=False) if virtual else mask
    outputs = model(**forward, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits
    if logits.dim() != 2:  # a model that ignores a boolean logits_to_keep: fall back to all positions
        logits = logits[:, logits.shape[1] - mask.shape[1] :][mask]
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    n = int(targets.numel())
    denominator = num_items_in_batch if num_items_in_batch is not None else max(n, 1)
    return loss_sum / denominator, n


def sequence_logps(model: Any, inputs: dict[str, torch.Tensor], *label_sets: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per row of ``inputs``, for ``inputs["labels"]`` and each further labels tensor in ``label_sets``: (sum of the
    log-probabilities of the tokens those labels train, how many there are). One forward pass serves every set; the
    logits are computed only where some set trains a token, as in :func:`sparse_causal_lm_loss`. The preference
    objectives score whole answers with it."""
    ids = inputs["input_ids"]
    masks = [next_token_targets(labels)[0] for labels in (inputs["labels"], *label_sets)]
    union = masks[0]
    for mask in masks[1:]:
        union = union | mask
    following = torch.zeros_like(ids)
    following[:, :-1] = ids[:, 1:]  # where a set trains a token, its label is the next input token
    forward = model_inputs(model, {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")})
    virtual = virtual_token_count(model)
    keep = F.pad(union, (virtual, 0), value=False) if virtual else union
    logits = model(**forward, logits_to_keep=keep, use_cache=False).logits
    if logits.dim() != 2:  # a model that ignores a boolean logits_to_keep
        logits = logits[:, logits.shape[1] - union.shape[1] :][union]
    token_logps = -F.cross_entropy(logits.float(), following[union], reduction="none")
    rows = union.nonzero()[:, 0]  # the row of each kept position, in the row-major order of the logits
    scored = []
    for mask in masks:
        chosen = mask[union]
        sums = torch.zeros(ids.shape[0], dtype=token_logps.dtype, device=token_logps.device)
        scored.append((sums.index_add(0, rows[chosen], token_logps[chosen]), mask.sum(dim=1)))
    return scored
