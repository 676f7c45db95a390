"""Batching for training: pad to the longest in the batch, labels masked by position (never by pad id)."""

from __future__ import annotations

from typing import Any

import torch

from tunewise.train.tokenize import IGNORE_INDEX


class PadCollator:
    """Right-pads ``input_ids``/``labels`` to the longest row (rounded up to ``pad_to_multiple_of``).

    Written by hand rather than ``DataCollatorForLanguageModeling`` because that one rebuilds labels from
    ``input_ids`` and masks by pad id, which hides the eos token when pad == eos.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        n = len(features)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, :k] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.as_tensor(f["labels"], dtype=torch.long)
            attention_mask[i, :k] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
