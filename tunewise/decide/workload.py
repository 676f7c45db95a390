"""What one epoch asks of the hardware, from the prepared data: the batches training will see, tokenized and filtered
as :func:`tunewise.train.run.train_run` does, ordered by the Trainer's sampler and shaped by the collator training
uses (padding-free packing with a shared prefix by default, :class:`tunewise.lm.collate.PackCollator`; padding for
prompt tuning or ``training.packing: false``), with the tokens they feed the model and the optimizer steps they make."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tunewise.config import Config
from tunewise.train.eval_budget import plan_evaluations
from tunewise.train.schedule import total_steps

Feature = dict[str, list[int]]


@dataclass
class Batch:
    """One per-device batch as the model sees it: ``rows`` x ``length`` tokens (after packing or padding)."""

    rows: int
    length: int
    trained: int  # supervised tokens
    tokens: int  # the examples' own tokens (before packing cuts or shares any)
    indices: list[int] = field(default_factory=list)

    @property
    def padded(self) -> int:
        """Tokens the model computes over (rows x length)."""
        return self.rows * self.length


@dataclass
class Workload:
    """The batches of one epoch (per device) and the optimizer steps they make."""

    examples: int
    batch_size: int
    accumulation: int
    packing: bool
    batches: list[Batch]
    eval_batches: list[Batch]  # one in-training evaluation (the rows training.eval_budget keeps)
    lengths: list[int]
    trained: list[int]
    source: str
    eval_every: int | None = None  # optimizer steps between evaluations when once per epoch exceeds the budget
    features: list[Feature] = field(default_factory=list, repr=False)
    val_features: list[Feature] = field(default_factory=list, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        # as transformers' Trainer counts them: a last partial accumulation still makes a step
        return max(math.ceil(len(self.batches) / self.accumulation), 1)

    @property
    def tokens(self) -> int:
        """The examples' tokens per epoch (what API-style pricing bills)."""
        return sum(self.lengths)

    @property
    def padded_tokens(self) -> int:
        return sum(b.padded for b in self.batches)

    @property
    def trained_tokens(self) -> int:
        return sum(self.trained)

    @property
    def peak_batch(self) -> Batch:
        """The batch that needs the most activation memory (most computed tokens; most trained tokens on a tie)."""
        return max(self.batches, key=lambda b: (b.padded, b.length, b.trained))

    def total_steps(self, config: Config) -> int:
        """Optimizer steps of the whole run (``training.max_steps`` or ``training.epochs``)."""
        return total_steps(config.training, self.examples)  # training.epochs: null = automatic

    def summary(self) -> dict[str, Any]:
        peak = self.peak_batch
        return {
            "examples": self.examples, "batch_size": self.batch_size, "gradient_accumulation_steps": self.accumulation,
            "packing": self.packing, "batches_per_epoch": len(self.batches), "steps_per_epoch": self.steps_per_epoch,
            "tokens_per_epoch": self.tokens, "computed_tokens_per_epoch": self.padded_tokens,
            "trained_tokens_per_epoch": self.trained_tokens,
            "max_length": max(self.lengths), "mean_length": round(sum(self.lengths) / len(self.lengths), 2),
            "peak_batch": {"rows": peak.rows, "length": peak.length, "trained_tokens": peak.trained},
            "eval_examples": sum(len(b.indices) for b in self.eval_batches), "source": self.source,
        }


def uses_packing(config: Config, method: str | None = None) -> bool:
    """Whether training packs batches (prompt tuning always pads; :func:`tunewise.train.run.choose_collator`)."""
    return config.training.packing and (method or config.method) != "prompt"


def _order(lengths: Sequence[int], group: int, *, by_length: bool, seed: int) -> list[int]:
    """The sample order of transformers' Trainer: length-grouped mega-batches (longest batch first) or a shuffle."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    if by_length:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return list(get_length_grouped_indices(list(lengths), group, generator=generator))
    return torch.randperm(len(lengths), generator=generator).tolist()


def shape_batch(features: Sequence[Feature], indices: Sequence[int], packer: Any | None) -> Batch:
    """The shape a collator gives these examples: packed rows (the collator's own plan) or padding to the longest."""
    chosen = [features[i] for i in indices]
    trained = sum(sum(1 for y in f["labels"] if y != -100) for f in chosen)
    tokens = sum(len(f["input_ids"]) for f in chosen)
    if packer is None:
        return Batch(rows=len(chosen), length=max(len(f["input_ids"]) for f in chosen), trained=trained, tokens=tokens,
                     indices=list(indices))
    shared, rows, used = packer.plan(chosen)
    width = max(shared + sum(used[i] - shared for i in row) for row in rows)
    return Batch(rows=len(rows), length=width, trained=trained, tokens=tokens, indices=list(indices))


def packer_for(config: Config, pad_token_id: int = 0) -> Any:
    """The collator training packs with (its row length follows the model's config, as in training)."""
    from tunewise.decide.footprint import model_config
    from tunewise.lm.collate import pack_collator

    return pack_collator(config, pad_token_id, model_config(config.model, trust_remote_code=config.trust_remote_code))


def build_workload(config: Config, features: Sequence[Feature], val_features: Sequence[Feature] = (), *,
                   source: str, method: str | None = None) -> Workload:
    """Batches of one epoch from tokenized examples (``input_ids`` and ``labels`` each): sampled as the Trainer samples
    (``training.group_by_length``) and shaped by the collator training uses for ``method``."""
    t = config.training
    packing = uses_packing(config, method)
    packer = packer_for(config) if packing else None
    lengths = [len(f["input_ids"]) for f in features]
    order = _order(lengths, t.per_device_train_batch_size * t.gradient_accumulation_steps,
                   by_length=t.group_by_length, seed=t.seed)
    size = t.per_device_train_batch_size
    batches = [shape_batch(features, order[i:i + size], packer) for i in range(0, len(order), size)]
    # the in-training evaluations read their rows of the validation split (training.eval_budget) in order
    sampled, eval_every = plan_evaluations(t, lengths, [len(f["input_ids"]) for f in val_features])
    eval_size = t.per_device_eval_batch_size
    eval_batches = [shape_batch(val_features, sampled[i:i + eval_size], packer) for i in range(0, len(sampled), eval_size)]
    return Workload(examples=len(features), batch_size=size, accumulation=t.gradient_accumulation_steps, packing=packing,
                    batches=batches, eval_batches=eval_batches, eval_every=eval_every, lengths=lengths,
                    trained=[sum(1 for y in f["labels"] if y != -100) for f in features], source=source,
                    features=list(features), val_features=list(val_features))


def for_method(workload: Workload, config: Config, method: str) -> Workload:
    """``workload`` reshaped for ``method`` when its collator differs (prompt tuning pads)."""
    if uses_packing(config, method) == workload.packing or not workload.features:
        return workload
    return build_workload(config, workload.features, workload.val_features, source=workload.source, method=method)


def _encoded(config: Config, path: Path, tokenizer: Any) -> tuple[list[Feature], list[dict[str, Any]]]:
    """(features, records) of a prepared split, filtered as training filters them."""
    from tunewise.example import Example
    from tunewise.lm.chat import encode_examples
    from tunewise.rundir import read_jsonl

    records = read_jsonl(path) if path.is_file() else []
    encoded = encode_examples([Example.from_record(r) for r in records], tokenizer, loss_on=config.training.loss_on,
                              max_tokens=config.data.max_tokens)
    kept = [({"input_ids": e.input_ids, "labels": e.labels}, r) for e, r in zip(encoded, records) if e.n_trained > 0]
    return [f for f, _ in kept], [r for _, r in kept]


def workload_from_run(config: Config, run_dir: str | Path,
                      tokenizer: Any | None = None) -> tuple[Workload, list[dict[str, Any]], list[dict[str, Any]]]:
    """The epoch's batches from RUN/data (train and val), tokenized as training tokenizes them.

    Returns (workload, training records, validation records); the records are in the workload's index order, so a
    calibration can train on exactly the rows of chosen batches.
    """
    from tunewise.lm.loading import load_tokenizer
    from tunewise.rundir import RunDir

    run = RunDir.of(run_dir)
    train_file = run.require("data", run.split("train").name, hint="prepare the data first: `tunewise data prepare CONFIG`")
    tokenizer = tokenizer or load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    train, train_records = _encoded(config, train_file, tokenizer)
    if not train:
        raise ValueError(f"{train_file} has no example with a trained token; check the data and `training.loss_on`")
    val, val_records = _encoded(config, run.split("val"), tokenizer)
    return build_workload(config, train, val, source=str(train_file)), train_records, val_records


def synthetic_workload(config: Config, examples: int, seq_len: int, trained_per_example: int) -> Workload:
    """A workload for a model without prepared data: ``examples`` rows of ``seq_len`` tokens, the last
    ``trained_per_example`` of them supervised (user-given sizes; no shared prefix is assumed)."""
    trained = min(max(trained_per_example, 1), seq_len)
    features = [{"input_ids": [i % 7 + 3] * seq_len, "labels": [-100] * (seq_len - trained) + [1] * trained}
                for i in range(examples)]
    # distinct first tokens per example: no shared prefix for the packer to find
    for i, f in enumerate(features):
        f["input_ids"] = [3 + (i % 2)] + f["input_ids"][1:]
    return build_workload(config, features, source="given --examples/--seq-len")
