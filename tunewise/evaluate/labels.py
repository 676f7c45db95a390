"""Constrained scoring of a classification task: which of the known labels does the model rank highest?

A verbose base model ("I'm sorry, ...") scores 0 on exact match however much it knows; a fair baseline asks it to
choose. Each label's score is the log-likelihood (natural log, summed over tokens) of the label as the assistant's
whole answer after the rendered prompt, exactly the tokens training supervises: the label's tokens *and the
end-of-turn token* (``encode_examples`` labels). Including the end of turn makes the score the probability of
answering exactly that label and stopping, so a label that is a prefix of another ("pos" / "positive") is not
favoured, and a sum (not a mean per token) is the probability of that whole answer.

One forward pass per batch of examples, with no prompt computed twice: a row holds the prompt once, then every label's
continuation, each attending to the prompt and to itself only (a 4-D mask and restarting position ids, the shared
prefix of :mod:`tunewise.lm.collate`). The prompt tokens all examples of a batch start with (the system prompt and,
for the few-shot baseline, every shot: most of a long few-shot prompt) are computed once per batch and given to each
row as a KV cache (:func:`tunewise.lm.shared_prefix.prefix_cache`). Logits are computed only at the positions that
predict a label token. The first examples are also scored the plain way (one padded row per label); a model whose
attention does not honour the mask or the cache (custom code, prompt tuning's virtual tokens) gives other numbers and
is scored without them.

The log-likelihood of the reference label is the reference's answer log-likelihood, so the reference perplexity of a
classification test set comes from this pass for free (:func:`reference_nll`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from tunewise.example import Example
from tunewise.lm.chat import IGNORE_INDEX, encode_examples
from tunewise.lm.collate import model_inputs, shared_prefix_mask
from tunewise.lm.shared_prefix import (
    MIN_SHARED_TOKENS,
    cache_argument,
    common_prefix_length,
    prefix_cache,
    supports_prefix_cache,
)

log = logging.getLogger(__name__)

METRIC = "constrained_accuracy"
"""Per-example score: 1 when the label ranked highest is the reference."""


@dataclass
class LabelScores:
    """One example: each label's log-likelihood (nats) and how many tokens it was summed over."""

    logprobs: dict[str, float]
    tokens: dict[str, int]

    @property
    def best(self) -> str:
        return max(self.logprobs, key=lambda label: self.logprobs[label])  # the first label wins a tie

    def to_record(self) -> dict[str, Any]:
        return {"label": self.best, "logprobs": {k: round(v, 4) for k, v in self.logprobs.items()}}


@dataclass
class _Candidates:
    """An example's label continuations after their common prompt: ``prefix`` ids, then per label the ids and the
    targets (a token id where it is scored, IGNORE_INDEX where not)."""

    prefix: list[int]
    ids: list[list[int]]
    targets: list[list[int]]


def _candidates(conversation: Sequence[dict[str, Any]], labels: Sequence[str], tokenizer: Any) -> _Candidates:
    examples = [Example(messages=[*conversation, {"role": "assistant", "content": label}]) for label in labels]
    encoded = encode_examples(examples, tokenizer, loss_on="last_turn")
    first = [next((i for i, t in enumerate(e.labels) if t != IGNORE_INDEX), len(e)) for e in encoded]
    limit = min(first)
    head = encoded[0].input_ids
    shared = 0
    while shared < limit and all(len(e) > shared and e.input_ids[shared] == head[shared] for e in encoded):
        shared += 1
    if shared == 0:
        raise ValueError("the label answers share no prompt token; cannot score labels after the prompt")
    return _Candidates(prefix=head[:shared], ids=[e.input_ids[shared:] for e in encoded],
                       targets=[e.labels[shared:] for e in encoded])  # fmt: skip


def _shared_rows(batch: list[_Candidates], pad_id: int, cached: int = 0) -> tuple[dict[str, torch.Tensor], list[list[tuple[int, int, int, int]]]]:
    """One row per example: prompt, then each label's continuation. Returns the model inputs (4-D boolean mask) and,
    per example, ``(row, position, target, label index)`` for every scored token. ``cached``: the first prompt tokens
    every example starts with are in a KV cache, so the rows start after them and attend to all of them."""
    widths = [len(c.prefix) - cached + sum(len(x) for x in c.ids) for c in batch]
    width = max(widths)
    n = len(batch)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    segments = torch.full((n, width), -1, dtype=torch.long)
    wanted: list[list[tuple[int, int, int, int]]] = []
    for r, c in enumerate(batch):
        p = len(c.prefix) - cached
        input_ids[r, :p] = torch.tensor(c.prefix[cached:])
        position_ids[r, :p] = torch.arange(cached, cached + p)
        segments[r, :p] = 0
        at = p
        pairs = []
        for k, (ids, targets) in enumerate(zip(c.ids, c.targets)):
            input_ids[r, at : at + len(ids)] = torch.tensor(ids)
            position_ids[r, at : at + len(ids)] = torch.arange(cached + p, cached + p + len(ids))
            segments[r, at : at + len(ids)] = k + 1
            for j, t in enumerate(targets):
                if t != IGNORE_INDEX:
                    pairs.append((r, p - 1 if j == 0 else at + j - 1, t, k))
            at += len(ids)
        position_ids[r, at:] = torch.arange(cached, cached + width - at)  # padding: a segment of its own
        wanted.append(pairs)
    mask = shared_prefix_mask(segments)
    if cached:  # every row, padding included, also sees the cached prompt
        mask = torch.cat([torch.ones((n, 1, width, cached), dtype=torch.bool), mask], dim=-1)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask}, wanted


def _padded_rows(batch: list[_Candidates], pad_id: int) -> tuple[dict[str, torch.Tensor], list[list[tuple[int, int, int, int]]]]:
    """One right-padded row per (example, label): the plain way, no 4-D mask."""
    rows = [(i, k, c.prefix + ids, targets) for i, c in enumerate(batch) for k, (ids, targets) in enumerate(zip(c.ids, c.targets))]
    width = max(len(ids) for _, _, ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    wanted: list[list[tuple[int, int, int, int]]] = [[] for _ in batch]
    for r, (i, k, ids, targets) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention[r, : len(ids)] = 1
        p = len(batch[i].prefix)
        for j, t in enumerate(targets):
            if t != IGNORE_INDEX:
                wanted[i].append((r, p + j - 1, t, k))
    return {"input_ids": input_ids, "attention_mask": attention}, wanted


def _forward(model: Any, inputs: dict[str, torch.Tensor], wanted: list[list[tuple[int, int, int, int]]], cache: Any = None) -> list[list[tuple[int, float]]]:
    """Log-probabilities of the wanted targets: per example, ``(label index, log p)`` per scored token; ``cache``: the
    KV cache of a prompt prefix the rows continue."""
    from tunewise.lm.adapters import virtual_token_count

    device = next(model.parameters()).device
    n, width = inputs["input_ids"].shape
    keep = torch.zeros((n, width), dtype=torch.bool)
    for pairs in wanted:
        for r, pos, _, _ in pairs:
            keep[r, pos] = True
    virtual = virtual_token_count(model)
    forward = model_inputs(model, {k: v.to(device) for k, v in inputs.items()})
    mask = F.pad(keep, (virtual, 0), value=False) if virtual else keep
    extra = {cache_argument(): cache, "use_cache": True} if cache is not None else {"use_cache": False}
    logits = model(**forward, logits_to_keep=mask.to(device), **extra).logits
    if logits.dim() != 2:  # a model that ignores a boolean logits_to_keep: pick the positions from all of them
        logits = logits[:, logits.shape[1] - width :][keep.to(logits.device)]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    index = torch.full((n, width), -1, dtype=torch.long)
    index[keep] = torch.arange(int(keep.sum()))
    return [[(k, float(logprobs[index[r, pos], t])) for r, pos, t, k in pairs] for pairs in wanted]


def _score_batch(model: Any, batch: list[_Candidates], labels: Sequence[str], pad_id: int, shared: bool,
                 cache: bool = False) -> list[LabelScores]:
    """Score a batch: ``shared`` = prompt once per row (4-D mask), ``cache`` = and the prompt tokens the whole batch
    starts with once per batch (when at least :data:`MIN_SHARED_TOKENS`)."""
    cached = common_prefix_length([c.prefix for c in batch]) if shared and cache and len(batch) > 1 else 0
    if cached < MIN_SHARED_TOKENS:
        cached = 0
    if shared:
        inputs, wanted = _shared_rows(batch, pad_id, cached)
    else:
        inputs, wanted = _padded_rows(batch, pad_id)
    kv = prefix_cache(model, batch[0].prefix[:cached], len(batch)) if cached else None
    out = []
    for pairs in _forward(model, inputs, wanted, kv):
        logprobs = {label: 0.0 for label in labels}
        tokens = {label: 0 for label in labels}
        for k, lp in pairs:
            logprobs[labels[k]] += lp
            tokens[labels[k]] += 1
        out.append(LabelScores(logprobs, tokens))
    return out


def _agree(a: list[LabelScores], b: list[LabelScores]) -> bool:
    return all(abs(x.logprobs[k] - y.logprobs[k]) <= 1e-2 + 1e-3 * abs(y.logprobs[k]) for x, y in zip(a, b) for k in x.logprobs)


@torch.inference_mode()
def score_labels(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    labels: Sequence[str],
    *,
    batch_size: int = 16,
    shared: bool | None = None,
    progress: Callable[[int], None] | None = None,
    share_prefix: bool = True,
) -> list[LabelScores]:
    """Each label's log-likelihood as the answer to each conversation (the messages before the answer).

    ``shared``: True = prompt once per row with a 4-D mask (and a batch's common prompt prefix once per batch),
    False = one padded row per label, None = shared unless the first examples score differently from the plain way
    (module docstring). ``share_prefix``: the prompt tokens a whole batch starts with are computed once, as a cache."""
    from tunewise.lm.adapters import virtual_token_count

    labels = list(labels)
    if len(labels) < 2:
        raise ValueError(f"constrained scoring needs at least two labels, got {labels}")
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if virtual_token_count(model):
        shared = False
    # rows of about equal width in a batch: examples ordered by prompt length, results put back in input order
    candidates = [_candidates(conv, labels, tokenizer) for conv in conversations]
    order = sorted(range(len(candidates)), key=lambda i: len(candidates[i].prefix))
    per_row = max(1, batch_size // len(labels)) if shared is False else batch_size
    results: list[LabelScores | None] = [None] * len(candidates)
    start = 0
    cache = share_prefix and shared is not False and supports_prefix_cache(model)
    if shared is None and order:
        # the two shortest examples (they share the system prompt): scored the plain way, and so scored the fast way
        first = [candidates[i] for i in order[:2]]
        plain = _score_batch(model, first, labels, pad_id, shared=False)
        cache = cache and _agree(_score_batch(model, first, labels, pad_id, shared=True, cache=True), plain)
        shared = cache or _agree(_score_batch(model, first, labels, pad_id, shared=True), plain)
        if not shared:
            log.warning("this model does not honour the shared-prompt mask: scoring each label in its own row")
            per_row = max(1, batch_size // len(labels))
        for i, scored in zip(order[:2], plain):
            results[i] = scored
        start = len(first)
        if progress is not None:
            progress(start)
    while start < len(order):
        chunk = order[start : start + per_row]
        batch = [candidates[i] for i in chunk]
        for i, scored in zip(chunk, _score_batch(model, batch, labels, pad_id, bool(shared), cache=cache)):
            results[i] = scored
        start += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return [r for r in results if r is not None]


def constrained_scores(scores: Sequence[LabelScores], references: Sequence[str]) -> list[float]:
    """1.0 where the label ranked highest is the reference (stripped), else 0.0."""
    return [float(s.best == r.strip()) for s, r in zip(scores, references)]


def reference_nll(scores: Sequence[LabelScores], references: Sequence[str]) -> tuple[float, int] | None:
    """(summed negative log-likelihood, tokens) of the references when every reference is a label, else None."""
    total, count = 0.0, 0
    for s, r in zip(scores, references):
        label = r.strip()
        if label not in s.logprobs:
            return None
        total -= s.logprobs[label]
        count += s.tokens[label]
    return (total, count) if count else None
