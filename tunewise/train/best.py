"""The best model of a run: tracked at every evaluation, used for early stopping, and restored as the final model.

transformers has ``load_best_model_at_end`` + ``EarlyStoppingCallback``, but they require checkpoints at exactly the
evaluation cadence and pick the best among the checkpoints kept by ``save_total_limit``. Here the trainable
parameters of each new best are written to ``RUN/checkpoints/best-STEP/`` (an adapter is a few MB), independent of
the checkpoint cadence; the tracker's state (best value, step, evaluations without improvement) is saved inside every
checkpoint, so ``--resume`` continues early stopping exactly where the interrupted run was.

A generation metric (``training.metric_for_best_model: exact_match``, ...) is computed by
:class:`GenerationMetric`: the trainer calls it during each evaluation and adds ``eval_<metric>`` to the logged
metrics, so it also reaches metrics.jsonl and the plots.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from tunewise.example import Example

log = logging.getLogger(__name__)

WEIGHTS = "trainable.safetensors"


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """An FSDP-sharded parameter (a DTensor) gathered whole (a collective), anything else as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def is_sharded(model: torch.nn.Module) -> bool:
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters on CPU; sharded ones gathered whole (every rank must call it then)."""
    return {name: _whole(p.detach()).to("cpu", copy=True).contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def save_trainable(weights: dict[str, torch.Tensor], folder: Path) -> None:
    """Write :func:`trainable_state`'s tensors to ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / WEIGHTS))


def load_trainable(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(folder / WEIGHTS))
    parameters = dict(model.named_parameters())
    missing = [name for name in state if name not in parameters]
    if missing:
        raise RuntimeError(f"{folder}: parameters {missing[:3]} are not in the model; was it written by another run?")
    with torch.no_grad():
        for name, tensor in state.items():
            parameter = parameters[name]
            tensor = tensor.to(parameter.device, parameter.dtype)
            if hasattr(parameter, "device_mesh"):  # FSDP: each rank keeps its own shard of the saved tensor
                from torch.distributed.tensor import distribute_tensor

                tensor = distribute_tensor(tensor, parameter.device_mesh, parameter.placements)
            parameter.copy_(tensor)


class GenerationMetric:
    """Answers ``examples`` greedily and scores them with ``metric`` (a name of tunewise.metrics)."""

    def __init__(self, tokenizer: Any, examples: Sequence[Example], metric: str, *, max_new_tokens: int, batch_size: int):
        self.tokenizer, self.examples, self.metric = tokenizer, list(examples), metric
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, model: Any) -> float:
        from tunewise.lm.generate import generate
        from tunewise.metrics import compute_metrics

        was_training = model.training
        try:
            outputs = generate(model, self.tokenizer, [e.prompt_messages for e in self.examples],
                               max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        finally:
            model.train(was_training)
        scores = compute_metrics([o["text"] for o in outputs], [e.reference or "" for e in self.examples], [self.metric])
        return float(scores[self.metric])


class BestModel(TrainerCallback, ExportableState):
    """Tracks ``metric`` (``eval_loss``: lower is better; anything else: higher is better) at each evaluation, saves
    the trainable parameters of each new best, and stops after ``patience`` evaluations without an improvement of
    more than ``min_delta`` (``patience=None``: never)."""

    def __init__(self, checkpoints: Path, metric: str = "eval_loss", *, patience: int | None = None,
                 min_delta: float = 0.0, save: bool = True) -> None:
        self.checkpoints = Path(checkpoints)
        self.metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.greater_is_better = self.metric != "eval_loss"
        self.patience, self.min_delta, self.save = patience, min_delta, save
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_evaluations = 0
        self.stopped_at: int | None = None
        self.last_evaluated: int | None = None

    # --- ExportableState: kept in every checkpoint's trainer_state.json, restored by --resume
    def state(self) -> dict[str, Any]:
        return {
            "args": {"checkpoints": str(self.checkpoints), "metric": self.metric, "patience": self.patience,
                     "min_delta": self.min_delta, "save": self.save},
            "attributes": {"best_value": self.best_value, "best_step": self.best_step,
                           "bad_evaluations": self.bad_evaluations},
        }

    def restore(self, saved: dict[str, Any]) -> None:
        for key, value in saved.get("attributes", {}).items():
            setattr(self, key, value)

    @property
    def folder(self) -> Path | None:
        return self.checkpoints / f"best-{self.best_step}" if self.best_step is not None else None

    def improved(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.greater_is_better:
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # the last step must compete too: evaluate it even when it is off the evaluation cadence (with evaluations
        # per epoch the Trainer already evaluates at the end of the last one)
        if (str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "steps" and state.max_steps
                and state.global_step >= state.max_steps and self.last_evaluated != state.global_step):
            control.should_evaluate = True

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    model: Any = None, **kwargs: Any) -> None:
        self.last_evaluated = state.global_step
        value = (metrics or {}).get(self.metric)
        if value is None:
            log.warning("early stopping / best model: %s was not computed at step %s", self.metric, state.global_step)
            return
        if self.improved(float(value)):
            self.best_value, self.best_step, self.bad_evaluations = float(value), state.global_step, 0
            # sharded parameters are gathered by every rank together; rank 0 writes
            if self.save and model is not None and (state.is_world_process_zero or is_sharded(model)):
                weights = trainable_state(model)
                if state.is_world_process_zero:
                    save_trainable(weights, self.folder)  # type: ignore[arg-type]
        else:
            self.bad_evaluations += 1
        if self.patience is not None and self.bad_evaluations >= self.patience:
            log.info("early stopping at step %s: %s has not improved on %.4g (step %s) for %s evaluations",
                     state.global_step, self.metric, self.best_value, self.best_step, self.bad_evaluations)
            self.stopped_at = state.global_step
            control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # the newest checkpoint refers to the current best: older best-* folders can no longer be resumed into
        if state.is_world_process_zero:
            for folder in self.checkpoints.glob("best-*"):
                if folder != self.folder:
                    shutil.rmtree(folder, ignore_errors=True)

    def restore_best(self, model: torch.nn.Module, final_step: int) -> bool:
        """Load the best parameters into ``model`` unless the last step is the best. True when something changed."""
        folder = self.folder
        if folder is None or self.best_step == final_step or not (folder / WEIGHTS).is_file():
            return False
        load_trainable(model, folder)
        log.info("final model: the best evaluation (step %s, %s %.4g) instead of step %s",
                 self.best_step, self.metric, self.best_value, final_step)
        return True
