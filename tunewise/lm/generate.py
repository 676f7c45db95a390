"""Batched greedy generation with the KV cache and left padding, stopping at the end-of-turn token."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from tunewise.lm.adapters import virtual_token_count
from tunewise.lm.chat import render_prompt
from tunewise.lm.shared_prefix import prefix_batch, supports_prefix_cache


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Token ids that end an answer: the tokenizer's eos (the end-of-turn token of chat templates) and the model's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generation_config = getattr(model, "generation_config", None)
    eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(eos)
    return sorted(ids)


def batches(order: list[int], lengths: list[int], batch_size: int, *, same_length: bool) -> list[list[int]]:
    """Consecutive slices of ``order`` of at most ``batch_size``; with ``same_length`` a batch never mixes lengths.

    Prompt tuning needs ``same_length``: PEFT puts the virtual tokens before the left padding and positions are then
    counted through the padding, so a padded prompt got other answers than the same prompt alone (measured with peft
    0.21.2). Unpadded batches give the answers of batch size 1, which is what ``PeftModel.generate`` gives users.
    """
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch_size and (not same_length or lengths[groups[-1][0]] == lengths[i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def batch_dependent(model: Any) -> bool:
    """True for a bitsandbytes LLM.int8 model with outlier decomposition: its outlier columns are chosen over the whole
    batch, so an answer depended on which prompts shared its batch (measured: greedy answers differed from batch size 1).
    Such models are evaluated one prompt at a time, so the answers are the ones a user gets from ``generate``."""
    if not getattr(model, "is_loaded_in_8bit", False):
        return False
    quantization = getattr(getattr(model, "config", None), "quantization_config", None)
    threshold = getattr(quantization, "llm_int8_threshold", None)
    if threshold is None and isinstance(quantization, dict):
        threshold = quantization.get("llm_int8_threshold")
    return threshold is None or threshold > 0


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: Any = None,
    share_prefix: bool = True,
) -> list[dict[str, Any]]:
    """Answer each conversation (its messages up to the answer). Returns per conversation ``text``,
    ``new_tokens`` and ``stopped`` (whether it ended with a stop token rather than at ``max_new_tokens``).

    Prompts are sorted by length so each batch pads little, and restored to input order at the end.
    ``progress`` is an optional callable taking the number of conversations just finished. ``share_prefix``: the
    tokens all prompts of a batch start with are computed once (same answers; tunewise/lm/shared_prefix.py).
    """
    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    prompts = [render_prompt(messages, tokenizer) for messages in conversations]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    stops = stop_token_ids(tokenizer, model)
    results: list[dict[str, Any] | None] = [None] * len(prompts)
    if batch_dependent(model):
        batch_size = 1
    share_prefix = share_prefix and supports_prefix_cache(model)
    for idx in batches(order, [len(e) for e in encoded], batch_size, same_length=virtual_token_count(model) > 0):
        rows = [encoded[i] for i in idx]
        # perf: a shared system prompt / template header is computed once per batch (tunewise/lm/shared_prefix.py)
        batch = prefix_batch(model, rows, tokenizer.pad_token_id) if len(idx) > 1 and share_prefix else None
        if batch is None:
            batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(device)
        with warnings.catch_warnings():
            # PEFT prompt tuning drops the position ids generate() builds; batches of one length need none
            warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient tuning")
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = output[:, batch["input_ids"].shape[1] :]  # (with a shared prefix, input_ids hold it too)
        for row, i in zip(new.tolist(), idx):
            cut = next((k for k, t in enumerate(row) if t in stops), None)
            tokens = row if cut is None else row[:cut]
            results[i] = {
                "text": tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                "new_tokens": len(tokens),
                "stopped": cut is not None,
            }
        if progress is not None:
            progress(len(idx))
    return [r for r in results if r is not None]
