"""KTO, Kahneman-Tversky optimization (Ethayarajh et al. 2024): learns from answers marked desirable or undesirable
one by one, no pairs needed (thumbs up / down from serving). Each answer's log-probability ratio to the reference is
compared with a batch estimate of the KL divergence between policy and reference (the answers of other prompts,
shifted by one within the batch): 1 - sigmoid(beta * (ratio - KL)) for desirable answers, 1 - sigmoid(beta * (KL -
ratio)) for undesirable ones, weighted. The same loss as TRL's KTOTrainer (tests/test_objectives.py)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tunewise.config import Config
from tunewise.example import Example
from tunewise.lm.chat import IGNORE_INDEX, encode_examples
from tunewise.lm.collate import PadCollator
from tunewise.lm.loss import sequence_logps
from tunewise.objectives.base import Logs, Objective, Reference, mean


def encode_unpaired(examples: Sequence[Example], tokenizer: Any, config: Config) -> list[dict[str, Any]]:
    """Features of the examples with a ``desirable`` mark: ``input_ids``/``labels`` (the answer trained),
    ``prompt_length`` (tokens before the answer) and ``desirable``."""
    marked = [e for e in examples if e.desirable is not None]
    features = []
    for example, encoded in zip(marked, encode_examples(marked, tokenizer, loss_on="last_turn",
                                                        max_tokens=config.data.max_tokens)):
        if encoded.n_trained == 0:
            continue
        start = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
        features.append({"input_ids": encoded.input_ids, "labels": encoded.labels, "prompt_length": start,
                         "desirable": bool(example.desirable)})
    return features


class UnpairedCollator:
    """The answers as right-padded rows, ``desirable`` per row, and the KL rows: prompt i with the answer of row
    i - 1 (the last answer for the first prompt), as TRL builds them."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = PadCollator(pad_token_id)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.pad([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        batch["desirable"] = torch.tensor([f["desirable"] for f in features], dtype=torch.bool)
        kl_rows = []
        for i, f in enumerate(features):
            other = features[i - 1]
            start, other_start = f["prompt_length"], other["prompt_length"]
            kl_rows.append({"input_ids": f["input_ids"][:start] + other["input_ids"][other_start:],
                            "labels": [IGNORE_INDEX] * start + other["labels"][other_start:]})
        kl = self.pad(kl_rows)
        batch.update({"kl_input_ids": kl["input_ids"], "kl_attention_mask": kl["attention_mask"], "kl_labels": kl["labels"]})
        return batch


def _kl_batch(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"input_ids": inputs["kl_input_ids"], "attention_mask": inputs["kl_attention_mask"], "labels": inputs["kl_labels"]}


def _mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The KL estimate averaged over the data-parallel processes (TRL gathers it the same way)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= torch.distributed.get_world_size()
    return value


class KTO(Objective):
    def __init__(self) -> None:
        super().__init__(name="kto", data="unpaired", train_rows=1, reference_rows=2, token_normalized=False,
                         logged=("rewards/chosen", "rewards/rejected", "kl"))
        self.beta, self.desirable_weight, self.undesirable_weight = 0.1, 1.0, 1.0


    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Config) -> list[dict[str, Any]]:
        return encode_unpaired(examples, tokenizer, config)

    def collator(self, pad_token_id: int) -> UnpairedCollator:
        return UnpairedCollator(pad_token_id)

    def loss(self, model: Any, inputs: dict[str, torch.Tensor], *, num_items_in_batch: Any = None,
             reference: Reference | None = None) -> tuple[torch.Tensor, int, Logs]:
        if reference is None:
            raise ValueError("KTO needs a reference model")
        kl_inputs = _kl_batch(inputs)
        with torch.no_grad():
            (kl_logps, _), = sequence_logps(model, kl_inputs)
        (logps, counts), = sequence_logps(model, inputs)
        with reference.model(model) as ref:
            (ref_kl_logps, _), = sequence_logps(ref, kl_inputs)
            (ref_logps, _), = sequence_logps(ref, inputs)
        kl = _mean_over_processes((kl_logps - ref_kl_logps).mean().detach()).clamp(min=0)
        desirable = inputs["desirable"].to(logps.device)
        ratio = logps - ref_logps
        chosen, rejected = ratio[desirable], ratio[~desirable]
        losses = torch.cat((self.desirable_weight * (1 - torch.sigmoid(self.beta * (chosen - kl))),
                            self.undesirable_weight * (1 - torch.sigmoid(self.beta * (kl - rejected)))))
        logs = {"rewards/chosen": mean(self.beta * chosen.detach()), "rewards/rejected": mean(self.beta * rejected.detach()),
                "kl": float(kl)}
        return losses.nanmean(), int(counts.sum()), logs


OBJECTIVE = KTO()
