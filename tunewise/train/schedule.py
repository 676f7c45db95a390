"""How long training runs: ``training.epochs`` as written, or, when it is null (the default), chosen from the size of
the training set.

One pass over a few hundred rows is a few dozen optimizer steps: too few for an adapter to learn a task (measured in
docs/evaluation.md). transformers' and TRL's own default is 3 epochs whatever the size; tunewise gives a small data set
enough passes for about :data:`TARGET_STEPS` steps, at most :data:`MAX_EPOCHS`, and a large one a single pass. The best
evaluation is kept at the end (``training.load_best_model_at_end``), so a pass too many does not cost the result.
"""

from __future__ import annotations

import math
from typing import Any

from tunewise.config import Config, TrainingConfig

TARGET_STEPS = 200
MAX_EPOCHS = 3.0


def steps_per_epoch(examples: int, training: TrainingConfig, world_size: int = 1) -> int:
    """Optimizer steps of one pass over ``examples`` rows, as transformers' Trainer counts them (a last partial batch
    and a last partial accumulation each still make one)."""
    batches = math.ceil(examples / (training.per_device_train_batch_size * max(world_size, 1)))
    return max(math.ceil(batches / training.gradient_accumulation_steps), 1)


def automatic_epochs(steps: int) -> float:
    """Epochs for a training set of ``steps`` optimizer steps per pass: enough for :data:`TARGET_STEPS` steps, between
    1 and :data:`MAX_EPOCHS`, rounded up to a tenth of an epoch."""
    wanted = math.ceil(10 * TARGET_STEPS / max(steps, 1)) / 10
    return min(max(wanted, 1.0), MAX_EPOCHS)


def planned_epochs(training: TrainingConfig, steps: int) -> dict[str, Any]:
    """What the run will do: ``{"epochs", "source", "reason"}`` (source ``config`` or ``automatic``)."""
    if training.epochs is not None:
        return {"epochs": float(training.epochs), "source": "config", "reason": "training.epochs"}
    epochs = automatic_epochs(steps)
    if epochs >= MAX_EPOCHS and steps * MAX_EPOCHS < TARGET_STEPS:
        why = f"{steps} steps per epoch: {MAX_EPOCHS:g} epochs at most"
    elif epochs > 1:
        why = f"{steps} steps per epoch: {epochs:g} epochs make about {TARGET_STEPS} steps"
    else:
        why = f"{steps} steps per epoch: one pass makes {TARGET_STEPS} steps or more"
    return {"epochs": epochs, "source": "automatic", "reason": why}


def total_steps(training: TrainingConfig, examples: int, world_size: int = 1) -> int:
    """Optimizer steps of the run: ``max_steps``, or the (planned) epochs of ``examples`` rows."""
    if training.max_steps > 0:
        return training.max_steps
    per_epoch = steps_per_epoch(examples, training, world_size)
    return max(math.ceil(planned_epochs(training, per_epoch)["epochs"] * per_epoch), 1)


def resolve_epochs(config: Config, examples: int, world_size: int = 1) -> tuple[Config, dict[str, Any]]:
    """(``config`` with training.epochs a number, the choice as train_summary.json records it). ``max_steps`` set
    still wins over epochs in the Trainer, as documented for the field."""
    decided = planned_epochs(config.training, steps_per_epoch(examples, config.training, world_size))
    training = config.training.model_copy(update={"epochs": decided["epochs"]})
    return config.model_copy(update={"training": training}), decided
