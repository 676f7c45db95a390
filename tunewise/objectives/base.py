"""What every training objective says about itself (the contract the trainer, evaluation and the estimate ask).

An objective is one module in tunewise/objectives/ exposing ``OBJECTIVE``, an :class:`Objective`:

* ``data``: which examples it trains on: "sft" (a conversation), "pairs" (a prompt with a chosen and a rejected
  answer) or "unpaired" (a prompt, an answer and whether the answer is desirable);
* :meth:`Objective.encode` and :meth:`Objective.collator`: examples -> features -> a batch;
* :meth:`Objective.loss`: the loss of a batch, the trained tokens in it, and what to log (rewards, margins...);
* ``train_rows`` / ``reference_rows``: sequences per example with and without gradients, for the estimate;
* ``token_normalized``: the loss is a sum over tokens divided by the accumulated batch's tokens (SFT), or a mean
  over examples (the preference objectives: the trainer divides by the accumulation steps).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from tunewise.config import Config
from tunewise.example import Example

Logs = dict[str, float]


@dataclass
class Objective:
    """Base class: the defaults are supervised fine-tuning's."""

    name: str = "sft"
    data: str = "sft"
    train_rows: int = 1
    reference_rows: int = 0
    token_normalized: bool = True
    logged: tuple[str, ...] = ()

    def configure(self, config: Config) -> "Objective":
        """A copy of the objective with its config section's settings (``dpo.beta``, ``kto.desirable_weight``...);
        the module's ``OBJECTIVE`` stays as it is."""
        section = getattr(config, self.name, None)
        configured = copy.copy(self)
        if section is not None:
            for name, value in section.model_dump().items():
                setattr(configured, name, value)
        return configured

    def encode(self, examples: Sequence[Example], tokenizer: Any, config: Config) -> list[dict[str, Any]]:
        raise NotImplementedError

    def collator(self, pad_token_id: int) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def loss(self, model: Any, inputs: dict[str, torch.Tensor], *, num_items_in_batch: Any = None,
             reference: "Reference | None" = None) -> tuple[torch.Tensor, int, Logs]:
        raise NotImplementedError

    @property
    def needs_reference(self) -> bool:
        return self.reference_rows > 0


class Reference:
    """The frozen reference model of DPO and KTO.

    For an adapter (LoRA, QLoRA, DoRA, IA3, prompt tuning) it is the policy itself with its adapters disabled: the
    base the adapter started from, never a second copy in memory. For full fine-tuning it is a frozen copy of the
    model taken before the first step (the only way to keep the starting point once every weight trains)."""

    def __init__(self, model: Any) -> None:
        inner = getattr(model, "module", model)
        self.copy = None
        if not hasattr(inner, "disable_adapter"):
            self.copy = copy.deepcopy(inner).eval().requires_grad_(False)

    @contextmanager
    def model(self, policy: Any) -> Iterator[Any]:
        """The model to score the reference with, under no_grad."""
        with torch.no_grad():
            if self.copy is not None:
                yield self.copy
                return
            inner = getattr(policy, "module", policy)  # DistributedDataParallel wraps the model
            with inner.disable_adapter():
                yield inner


def mean(values: torch.Tensor) -> float:
    """A logged number: the mean of ``values`` (0 for none)."""
    return float(values.float().mean()) if values.numel() else 0.0
