"""The transformers Trainer with two changes: logits only where the loss needs them, and richer logs.

* The vocabulary projection is computed only at positions that predict a trained token (tunewise/lm/loss.py).
* The loss is the sum over trained tokens divided by the number of trained tokens in the *whole accumulated batch*
  (``num_items_in_batch``), so gradient accumulation gives the same loss and gradients as one big batch.
* Every log record gets trained tokens, tokens/s and memory, for metrics.jsonl.
* The data order of every epoch is a function of the seed and the epoch alone (:class:`EpochSeededLengthGroupedSampler`),
  so a run resumed in a later epoch sees the batches the uninterrupted run saw.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from tunewise.lm.loss import sparse_causal_lm_loss
from tunewise.monitor.memory import memory_snapshot


def input_token_count(inputs: dict[str, torch.Tensor]) -> int:
    """Real (non-pad) tokens of a batch from either collator."""
    if "num_input_tokens" in inputs:
        return int(inputs["num_input_tokens"])
    if "attention_mask" in inputs:
        return int(inputs["attention_mask"].sum())
    return int(inputs["input_ids"].numel())


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """``train_sampling_strategy="group_by_length"`` with the shuffle of epoch ``e`` drawn from a generator seeded
    with ``seed + e``.

    transformers builds its LengthGroupedSampler without a generator, so each epoch's shuffle is drawn from torch's
    global RNG, whose state at the start of an epoch depends on every dropout mask drawn before it. A resumed run
    restores that RNG only at the checkpoint's step (after its epoch was shuffled) and draws the shuffle from the
    state of a fresh process: killed in the first epoch it resumed identically, killed in a later one it trained on
    another order from the first resumed step (FIELD-NOTES). accelerate's SeedableRandomSampler does the same for
    the "random" strategy (seed + epoch); the Trainer calls :meth:`set_epoch` through the dataloader at each epoch."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class TunewiseTrainer(Trainer):
    """A Trainer whose loss and logs follow the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trained_tokens = 0  # this process, this session
        self.input_tokens = 0
        # (trained, input) tokens of the sessions before a resume, all processes together (tunewise/train/resume.py)
        self.token_offset = (0, 0)
        self._last_log_time: float | None = None
        self._last_log_tokens = (0, 0)
        self._train_start = time.time()
        # training.metric_for_best_model other than eval_loss: scored by generating at each evaluation (train/best.py)
        self.generation_metric: Any = None
        self._flops_per_token: int | None = None
        # our loss is normalised by num_items_in_batch, so Trainer must not divide by the accumulation steps again
        self.model_accepts_loss_kwargs = True
        # a preference objective (tunewise/objectives/) and its reference model; None: supervised fine-tuning
        self.objective: Any = None
        self.reference: Any = None
        self._objective_logs: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, list(sampler.lengths), seed)
        return sampler

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        from tunewise.train.sharding import enable_fsdp_on_cpu

        enable_fsdp_on_cpu(self)  # training.sharding: fsdp on CPU processes (accelerate alone would run DDP)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """6 x parameters x tokens, like the Trainer's, without walking every module at every step."""
        if self._flops_per_token is None:
            model = self.accelerator.unwrap_model(self.model)
            count = getattr(model, "num_parameters", None)
            self._flops_per_token = 6 * (count(exclude_embeddings=True) if count else sum(p.numel() for p in model.parameters()))
        return self._flops_per_token * int(inputs["input_ids"].numel())

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if self.objective is not None:
            return self._objective_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, n = sparse_causal_lm_loss(model, inputs, num_items_in_batch)
        if model.training:
            self.trained_tokens += n
            self.input_tokens += input_token_count(inputs)
        if (
            self.args.average_tokens_across_devices
            and num_items_in_batch is not None
            and self.accelerator.num_processes > 1
        ):
            # num_items_in_batch is summed over processes, and DDP / FSDP average gradients (the evaluation loop
            # averages the processes' losses): undo the average. Evaluation gets the summed count too (transformers 5)
            loss = loss * self.accelerator.num_processes
        return (loss, {}) if return_outputs else loss

    def _objective_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool,
                        num_items_in_batch: Any) -> Any:
        """The objective's loss, a mean over its examples: divided by the accumulation steps here (the Trainer
        leaves that to tunewise, see ``model_accepts_loss_kwargs``); what it logs is averaged into the next log."""
        loss, n, logs = self.objective.loss(model, inputs, num_items_in_batch=num_items_in_batch, reference=self.reference)
        mode = "train" if model.training else "eval"
        for name, value in logs.items():
            self._objective_logs[mode].setdefault(name, []).append(value)
        if model.training:
            self.trained_tokens += n
            self.input_tokens += input_token_count(inputs)
            loss = loss / max(getattr(self, "current_gradient_accumulation_steps", None) or self.args.gradient_accumulation_steps, 1)
        return (loss, {}) if return_outputs else loss

    def _flush_objective_logs(self, logs: dict[str, float]) -> None:
        """Add the objective's averaged numbers since the last log (rewards, margins, accuracy...): ``eval_`` ones to
        an evaluation's log."""
        mode, prefix = ("eval", "eval_") if "eval_loss" in logs else ("train", "")
        if "loss" not in logs and mode == "train":
            return
        for name, values in self._objective_logs[mode].items():
            if values:
                logs[prefix + name] = round(sum(values) / len(values), 6)
        self._objective_logs[mode] = {}

    def token_totals(self) -> tuple[int, int]:
        """(trained, input) tokens of the training so far (interrupted sessions before a resume included), summed over
        all processes (a collective call under DDP: every rank must make it)."""
        if self.accelerator.num_processes <= 1:
            trained, inputs = self.trained_tokens, self.input_tokens
        else:
            counts = torch.tensor([self.trained_tokens, self.input_tokens], dtype=torch.int64,
                                  device=self.accelerator.device)
            trained, inputs = self.accelerator.reduce(counts, reduction="sum").tolist()
        return int(trained) + self.token_offset[0], int(inputs) + self.token_offset[1]

    def restore_token_totals(self, trained: int, inputs: int) -> None:
        """Continue counting from the totals a checkpoint recorded (``--resume``)."""
        self.token_offset = self._last_log_tokens = (int(trained), int(inputs))

    def saved_token_totals(self) -> tuple[int, int]:
        """What a checkpoint records as the tokens so far, without a collective call (only rank 0 writes the
        trainer state): exact in one process; under DDP the totals of the last training log, which the guards
        make precede every save (tunewise/monitor/guards.py)."""
        if self.accelerator.num_processes <= 1:
            return self.token_totals()
        return self._last_log_tokens

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        now = time.time()
        if self.objective is not None:
            self._flush_objective_logs(logs)
        if "loss" in logs:  # a training log (every rank makes it): add throughput since the previous one
            since = self._last_log_time or self._train_start
            dt = max(now - since, 1e-9)
            trained, inputs = self.token_totals()
            logs["trained_tokens"] = trained
            logs["input_tokens"] = inputs
            logs["tokens_per_s"] = round((trained - self._last_log_tokens[0]) / dt, 2)
            logs["input_tokens_per_s"] = round((inputs - self._last_log_tokens[1]) / dt, 2)
            self._last_log_time, self._last_log_tokens = now, (trained, inputs)
        if "eval_loss" in logs and self.generation_metric is not None:
            logs[f"eval_{self.generation_metric.metric}"] = self.generation_metric(self.model)
        logs.update(memory_snapshot())
        super().log(logs, start_time)
