"""Direct Preference Optimization (Rafailov et al. 2023): raise the chosen answer's log-probability ratio to the
reference above the rejected one's, -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), averaged over pairs.
The same loss as TRL's DPOTrainer with ``loss_type="sigmoid"`` (tests/test_objectives.py checks it on one batch)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from tunewise.config import Config
from tunewise.example import Example
from tunewise.lm.loss import sequence_logps
from tunewise.objectives.base import Logs, Objective, Reference
from tunewise.objectives.preference import PairCollator, encode_pairs, pair_logs


class DPO(Objective):
    def __init__(self) -> None:
        super().__init__(name="dpo", data="pairs", train_rows=2, reference_rows=2, token_normalized=False,
                         logged=("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"))
        self.beta = 0.1


    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Config) -> list[dict[str, Any]]:
        return encode_pairs(examples, tokenizer, config)

    def collator(self, pad_token_id: int) -> PairCollator:
        return PairCollator(pad_token_id)

    def loss(self, model: Any, inputs: dict[str, torch.Tensor], *, num_items_in_batch: Any = None,
             reference: Reference | None = None) -> tuple[torch.Tensor, int, Logs]:
        if reference is None:
            raise ValueError("DPO needs a reference model")
        (logps, counts), = sequence_logps(model, inputs)
        with reference.model(model) as ref:
            (ref_logps, _), = sequence_logps(ref, inputs)
        n = logps.shape[0] // 2
        chosen = logps[:n] - ref_logps[:n]
        rejected = logps[n:] - ref_logps[n:]
        loss = -F.logsigmoid(self.beta * (chosen - rejected)).mean()
        return loss, int(counts.sum()), pair_logs((self.beta * chosen, self.beta * rejected))


OBJECTIVE = DPO()
