"""Supervised fine-tuning: the next-token loss on the trained tokens of each conversation (the answers by default,
``training.loss_on``), summed and divided by the trained tokens of the whole accumulated batch."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tunewise.config import Config
from tunewise.example import Example
from tunewise.lm.chat import encode_examples
from tunewise.lm.collate import PadCollator
from tunewise.lm.loss import sparse_causal_lm_loss
from tunewise.objectives.base import Logs, Objective, Reference


class SFT(Objective):
    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Config) -> list[dict[str, Any]]:
        encoded = encode_examples(examples, tokenizer, loss_on=config.training.loss_on, max_tokens=config.data.max_tokens)
        return [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded if e.n_trained > 0]

    def collator(self, pad_token_id: int) -> PadCollator:
        return PadCollator(pad_token_id)  # packing, when the model honours it, is chosen by the trainer (train/run.py)

    def loss(self, model: Any, inputs: dict[str, torch.Tensor], *, num_items_in_batch: Any = None,
             reference: Reference | None = None) -> tuple[torch.Tensor, int, Logs]:
        loss, n = sparse_causal_lm_loss(model, inputs, num_items_in_batch)
        return loss, n, {}


OBJECTIVE = SFT()
