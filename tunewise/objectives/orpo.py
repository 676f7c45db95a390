"""ORPO, odds-ratio preference optimization (Hong et al. 2024): supervised loss on the chosen answer minus beta
times log sigmoid of the log odds ratio of the chosen over the rejected answer (mean per-token log-probabilities).
No reference model: one model in memory, one forward pass per pair, so it also replaces the SFT stage.

The NLL term covers the chosen answer (``training.loss_on: all``: every token of the chosen conversation, which is
what TRL's ORPOTrainer does; tests/test_objectives.py checks equality with it on one batch)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from tunewise.config import Config
from tunewise.example import Example
from tunewise.lm.loss import sequence_logps
from tunewise.objectives.base import Logs, Objective, Reference
from tunewise.objectives.preference import PairCollator, encode_pairs, pair_logs


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation (the branch at -ln 2, Maechler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


class ORPO(Objective):
    def __init__(self) -> None:
        super().__init__(name="orpo", data="pairs", train_rows=2, reference_rows=0, token_normalized=False,
                         logged=("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                                 "nll_loss", "log_odds_ratio"))
        self.beta = 0.1


    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Config) -> list[dict[str, Any]]:
        return encode_pairs(examples, tokenizer, config, whole_chosen=config.training.loss_on == "all")

    def collator(self, pad_token_id: int) -> PairCollator:
        return PairCollator(pad_token_id)

    def loss(self, model: Any, inputs: dict[str, torch.Tensor], *, num_items_in_batch: Any = None,
             reference: Reference | None = None) -> tuple[torch.Tensor, int, Logs]:
        nll_labels = inputs.get("nll_labels")
        scored = sequence_logps(model, inputs, *([nll_labels] if nll_labels is not None else []))
        logps, counts = scored[0]
        n = logps.shape[0] // 2
        nll_sums, nll_counts = scored[-1]
        nll = -nll_sums[:n].sum() / nll_counts[:n].sum().clamp(min=1)
        mean_logps = logps / counts.clamp(min=1)
        chosen, rejected = mean_logps[:n], mean_logps[n:]
        log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
        ratio = F.logsigmoid(log_odds)
        loss = nll - self.beta * ratio.mean()
        logs = pair_logs((self.beta * chosen, self.beta * rejected))
        logs.update({"nll_loss": float(nll.detach()), "log_odds_ratio": float(ratio.detach().mean())})
        return loss, int(counts.sum()), logs


OBJECTIVE = ORPO()
