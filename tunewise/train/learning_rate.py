"""The learning rate: ``training.learning_rate`` as written, or, when it is null (the default), chosen from the method,
the objective and the size of the model.

One rate for every method was wrong by an order of magnitude somewhere: LoRA's best rate is about 10x full
fine-tuning's (Schulman et al., "LoRA Without Regret", Thinking Machines 2025), and a few hundred scaling vectors (IA3)
or virtual tokens (prompt tuning) need larger steps still. The adapter rates below are the ones Thinking Machines'
sweep found best for models of 1-8B parameters (1e-3; 3e-4 for the largest) and the ones measured here on SmolLM2-135M
classification sets (docs/evaluation.md: 1e-3 against the former 2e-4 default); full fine-tuning takes a tenth of the
LoRA rate; IA3 and prompt tuning the rates of their papers' recipes (T-Few 3e-3; PEFT's prompt-tuning guide 3e-2).
Preference objectives (DPO, ORPO, KTO) move a model that already answers well and are unstable at SFT rates: a fifth
of the SFT rate (LoRA 2e-4, tunewise's former default for every run).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tunewise.config import Config

#: the automatic SFT rate per method, for a model under :data:`LARGE_MODEL` parameters
SMALL_MODEL_RATES = {"lora": 1e-3, "dora": 1e-3, "qlora": 1e-3, "full": 1e-4, "ia3": 3e-3, "prompt": 3e-2}
#: from this many parameters on, the rates above are scaled by :data:`LARGE_MODEL_SCALE` (1e-3 -> 3e-4)
LARGE_MODEL = 5e9
LARGE_MODEL_SCALE = 0.3
#: preference objectives take this share of the SFT rate
PREFERENCE_SCALE = 0.2


def base_parameters(model: torch.nn.Module) -> int:
    """Parameters of the model as trained, counting a 4-bit quantized weight by its shape (bitsandbytes packs two
    values per element)."""
    total = 0
    for parameter in model.parameters():
        shape = getattr(getattr(parameter, "quant_state", None), "shape", None)
        total += math.prod(shape) if shape is not None else parameter.numel()
    return total


def automatic_learning_rate(method: str, objective: str, parameters: int) -> dict[str, Any]:
    """``{"learning_rate", "source": "automatic", "reason"}`` for ``method`` training ``objective`` on a model of
    ``parameters`` parameters."""
    rate = SMALL_MODEL_RATES.get(method, SMALL_MODEL_RATES["lora"])
    why = [f"{method}"]
    if parameters >= LARGE_MODEL:
        rate *= LARGE_MODEL_SCALE
        why.append(f"a model of {parameters / 1e9:.1f}B parameters")
    if objective != "sft":
        rate *= PREFERENCE_SCALE
        why.append(f"the {objective} objective")
    return {"learning_rate": float(f"{rate:.3g}"), "source": "automatic", "reason": ", ".join(why)}


def resolve_learning_rate(config: Config, parameters: int) -> tuple[Config, dict[str, Any]]:
    """(``config`` with training.learning_rate a number, the choice as train_summary.json records it)."""
    if config.training.learning_rate is not None:
        return config, {"learning_rate": config.training.learning_rate, "source": "config",
                        "reason": "training.learning_rate"}
    decided = automatic_learning_rate(config.method, config.objective, parameters)
    training = config.training.model_copy(update={"learning_rate": decided["learning_rate"]})
    return config.model_copy(update={"training": training}), decided
