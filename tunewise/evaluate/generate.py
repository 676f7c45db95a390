"""Batched greedy generation with the KV cache and left padding, stopping at the end-of-turn token."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tunewise.train.tokenize import render_prompt


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


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Answer each conversation (its messages up to the answer). Returns per conversation ``text``,
    ``new_tokens`` and ``stopped`` (whether it ended with a stop token rather than at ``max_new_tokens``).

    Prompts are sorted by length so each batch pads little, and restored to input order at the end.
    ``progress`` is an optional callable taking the number of conversations just finished.
    """
    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    prompts = [render_prompt(messages, tokenizer) for messages in conversations]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    stops = stop_token_ids(tokenizer, model)
    results: list[dict[str, Any] | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = output[:, batch["input_ids"].shape[1] :]
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
