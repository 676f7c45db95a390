"""A batch's shared prompt prefix (system prompt, template header) computed once, its KV cache given to every row.

transformers' ``generate`` continues from a ``past_key_values`` it is given ("prefix caching" in its docs) and only
feeds the tokens after the cache. What it does not do is find the prefix that a batch shares, compute it once and
lay the rows out around it, which is what this module adds: each row becomes ``prefix + left padding + own suffix``
with the padding masked, so positions (from the attention mask's cumulative sum) are those of the unpadded prompt.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

# below this many shared tokens a separate prefix forward costs more than it saves
MIN_SHARED_TOKENS = 8


def cache_argument() -> str:
    """The name forward/generate take a KV cache by: ``cache`` since transformers 5.2x (``past_key_values`` warns
    there), ``past_key_values`` before."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own (generate needs a last token)."""
    if not rows:
        return 0
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def supports_prefix_cache(model: Any) -> bool:
    """A model whose ``generate`` takes a DynamicCache it did not build (not a PEFT prompt/prefix method, which put
    virtual tokens before the input)."""
    from tunewise.lm.adapters import virtual_token_count

    return virtual_token_count(model) == 0 and bool(getattr(model, "_supports_default_dynamic_cache", lambda: True)())


def prefix_cache(model: Any, prefix: Sequence[int], copies: int) -> Any:
    """The KV cache (a DynamicCache) of ``prefix`` computed once, repeated for a batch of ``copies`` rows."""
    from transformers import DynamicCache

    ids = torch.tensor([list(prefix)], device=next(model.parameters()).device)
    cache = DynamicCache(config=getattr(model, "config", None))
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1, **{cache_argument(): cache})
    cache.batch_repeat_interleave(copies)
    return cache


def prefix_batch(model: Any, rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, Any] | None:
    """Inputs for ``model.generate`` (``input_ids``, ``attention_mask`` and the cache, :func:`cache_argument`) with the rows' shared
    prefix computed once; None when they share fewer than :data:`MIN_SHARED_TOKENS` tokens."""
    shared = common_prefix_length(rows)
    if shared < MIN_SHARED_TOKENS:
        return None
    device = next(model.parameters()).device
    cache = prefix_cache(model, rows[0][:shared], len(rows))
    width = max(len(r) for r in rows) - shared
    ids, mask = [], []
    for r in rows:
        suffix = list(r[shared:])
        gap = width - len(suffix)
        ids.append(list(r[:shared]) + [pad_id] * gap + suffix)
        mask.append([1] * shared + [0] * gap + [1] * len(suffix))
    return {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(mask, device=device),
            cache_argument(): cache}
