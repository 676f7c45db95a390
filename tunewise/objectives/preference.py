"""What the pairwise preference objectives (DPO, ORPO) share: a prompt with a chosen and a rejected answer encoded
as two rows that differ only in the answer, collated chosen rows first, and scored by the log-probability of each
answer's tokens."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tunewise.config import Config
from tunewise.example import Example
from tunewise.lm.chat import IGNORE_INDEX, encode_examples
from tunewise.lm.collate import PadCollator


def encode_pairs(examples: Sequence[Example], tokenizer: Any, config: Config, *, loss_on: str = "last_turn",
                 whole_chosen: bool = False) -> list[dict[str, Any]]:
    """Features of the pairs among ``examples``: ``input_ids``/``labels`` (prompt + chosen) and
    ``rejected_input_ids``/``rejected_labels`` (prompt + rejected); ``loss_on`` says which tokens are scored. A pair
    whose chosen or rejected answer was cut off entirely by ``data.max_tokens`` is left out. ``whole_chosen`` adds
    ``chosen_all_labels``: every token of the chosen row (ORPO's NLL term with ``training.loss_on: all``)."""
    pairs = [e for e in examples if e.rejected]
    chosen = encode_examples(pairs, tokenizer, loss_on=loss_on, max_tokens=config.data.max_tokens)
    rejected = encode_examples([e.rejected_example() for e in pairs], tokenizer, loss_on=loss_on,
                               max_tokens=config.data.max_tokens)
    features = []
    for c, r in zip(chosen, rejected):
        if c.n_trained == 0 or r.n_trained == 0:
            continue
        feature = {"input_ids": c.input_ids, "labels": c.labels, "rejected_input_ids": r.input_ids,
                   "rejected_labels": r.labels}
        if whole_chosen:
            feature["chosen_all_labels"] = list(c.input_ids)
        features.append(feature)
    return features


class PairCollator:
    """A batch of n pairs as 2n right-padded rows: the chosen rows, then the rejected rows (one forward pass scores
    both, as TRL does). With ``chosen_all_labels`` the batch also has ``nll_labels``: every token of the chosen
    rows and none of the rejected."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = PadCollator(pad_token_id)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        rows += [{"input_ids": f["rejected_input_ids"], "labels": f["rejected_labels"]} for f in features]
        batch = self.pad(rows)
        if "chosen_all_labels" in features[0]:
            nll = [{"input_ids": f["input_ids"], "labels": f["chosen_all_labels"]} for f in features]
            nll += [{"input_ids": f["rejected_input_ids"], "labels": [IGNORE_INDEX] * len(f["rejected_input_ids"])}
                    for f in features]
            batch["nll_labels"] = self.pad(nll)["labels"]
        return batch


def pair_logs(prefix_rewards: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """What a pairwise objective logs from the implicit rewards of the chosen and the rejected answers."""
    chosen, rejected = (r.detach().float() for r in prefix_rewards)
    return {
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
        "rewards/margins": float((chosen - rejected).mean()),
        "rewards/accuracies": float((chosen > rejected).float().mean()),
    }
