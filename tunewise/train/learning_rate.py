"""The learning rate: ``training.learning_rate`` as written, or, when it is null (the default), chosen from the method,
the objective and the size of the model.

One rate for every method was wrong by an order of magnitude somewhere: LoRA's best rate is about 10x full
fine-tuning's (Schulman et al., "LoRA Without Regret", Thinking Machines 2025), and a few hundred scaling vectors (IA3)
or virtual tokens (prompt tuning) need larger steps still. The adapter rates below are the ones Thinking Machines'
sweep found best for models of 1-8B parameters (1e-3; 3e-4 for the largest) and the ones measured here on SmolLM2-135M
classification sets (docs/evaluation.md: 1e-3 against the former 2e-4 default); full fine-tuning takes a tenth of the
LoRA rate; IA3 and prompt tuning the rates of their papers' recipes (T-Few 3e-3; PEFT's prompt-tuning guide 3e-2).
Each method's rate is in the methods registry (tunewise/lm/adapters.py), the one place for method facts.
Preference objectives (DPO, ORPO, KTO) move a model that already answers well and are unstable at SFT rates: a fifth
of the SFT rate (LoRA 2e-4, tunewise's former default for every run).
"""

from __future__ import annotations

from typing import Any

from tunewise.config import Config
from tunewise.lm.adapters import get_method

#: from this many parameters on, a method's rate (:attr:`tunewise.lm.adapters.Method.learning_rate`) is scaled by
#: :data:`LARGE_MODEL_SCALE` (1e-3 -> 3e-4)
LARGE_MODEL = 5e9
LARGE_MODEL_SCALE = 0.3
#: preference objectives take this share of the SFT rate
PREFERENCE_SCALE = 0.2


def automatic_learning_rate(method: str, objective: str, parameters: int) -> dict[str, Any]:
    """``{"learning_rate", "source": "automatic", "reason"}`` for ``method`` training ``objective`` on a model of
    ``parameters`` parameters (:func:`tunewise.lm.adapters.count_parameters`' total)."""
    rate = get_method(method).learning_rate
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
