"""Train stage: prepared data in RUN/data -> checkpoints, metrics.jsonl, and the final model in RUN/model."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from tunewise.config import Config
from tunewise.data.example import Example
from tunewise.models import load_tokenizer
from tunewise.models.device import resolve_precision
from tunewise.monitor.memory import memory_snapshot
from tunewise.monitor.record import tracked
from tunewise.monitor.session import MonitorSession
from tunewise.rundir import RunDir, atomic_dir, atomic_write_json, read_jsonl
from tunewise.train.collate import PadCollator
from tunewise.train.methods import count_parameters, get_method, load_base
from tunewise.train.tokenize import Encoded, encode_examples

log = logging.getLogger(__name__)


def load_examples(path: Path) -> list[Example]:
    return [Example.from_record(r) for r in read_jsonl(path)] if path.is_file() else []


def to_dataset(encoded: list[Encoded]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]})


def _checkpointing_arg() -> str:
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


_CHECKPOINTING_ARG = _checkpointing_arg()


def training_arguments(config: Config, output_dir: Path, *, has_eval: bool, precision: Any) -> Any:
    from transformers import TrainingArguments

    t = config.training
    warmup: float = t.warmup_steps if t.warmup_steps else t.warmup_ratio
    eval_strategy = "no" if not has_eval else ("steps" if t.eval_steps else "epoch")
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=warmup,
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=precision.device == "cpu",
        # transformers 5.x renamed gradient_checkpointing to activation_checkpointing (the old name warns)
        **{_CHECKPOINTING_ARG: t.gradient_checkpointing},
        optim=t.optimizer,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",
        prediction_loss_only=True,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        dataloader_num_workers=0,
    )


def last_checkpoint(checkpoints: Path) -> Path | None:
    found = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    return found[-1] if found else None


def train_run(
    config: Config, run_dir: str | Path, *, resume: bool = False, callbacks: Sequence[Any] = ()
) -> dict[str, Any]:
    """Train ``config.method`` on RUN/data/train.jsonl (eval loss on val.jsonl) and save RUN/model.

    Returns a summary (steps, losses, time, tokens, parameters, peak memory), also written to RUN/train_summary.json.
    run.json follows the run (running -> succeeded / failed / cancelled); the monitor writes metrics.jsonl,
    summary.json and plots/. ``callbacks`` are extra TrainerCallbacks, called before tunewise's own.
    Raises :class:`tunewise.monitor.guards.TrainingStopped` when a guard stops the run, and
    :class:`tunewise.monitor.session.TrainingCancelled` (a KeyboardInterrupt) on Ctrl-C, after saving a checkpoint.
    """
    # --- monitor: run.json status around the whole stage
    with tracked(run_dir, "train", config):
        return _train_run(config, run_dir, resume=resume, callbacks=callbacks)


def _train_run(config: Config, run_dir: str | Path, *, resume: bool, callbacks: Sequence[Any]) -> dict[str, Any]:
    from transformers import set_seed

    from tunewise.train.trainer import TunewiseTrainer

    run = RunDir.of(run_dir)
    train_file = run.require("data", "train.jsonl", hint="prepare the data first: `tunewise data prepare CONFIG`")
    method = get_method(config.method)
    set_seed(config.training.seed)

    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    max_tokens = config.data.max_tokens
    train_encoded = encode_examples(load_examples(train_file), tokenizer, loss_on=config.training.loss_on, max_tokens=max_tokens)
    train_encoded = [e for e in train_encoded if e.n_trained > 0]
    val_encoded = encode_examples(load_examples(run.data / "val.jsonl"), tokenizer, loss_on=config.training.loss_on, max_tokens=max_tokens)
    val_encoded = [e for e in val_encoded if e.n_trained > 0]
    if not train_encoded:
        raise ValueError(f"{train_file} has no example with a trained token; check the data and `training.loss_on`")

    precision = resolve_precision(config.training.bf16, config.training.fp16)
    # LoRA-style methods keep the frozen base in the half-precision dtype on GPU; full fine-tuning keeps fp32 master
    # weights and trains under autocast.
    dtype = precision.dtype if method.saves_adapter else torch.float32
    model = load_base(config, dtype=dtype, device=precision.device)
    model.config.use_cache = False
    model = method.prepare(model, config)
    trainable, total = count_parameters(model)
    log.info("method %s: %s trainable of %s parameters", method.name, f"{trainable:,}", f"{total:,}")

    args = training_arguments(config, run.checkpoints, has_eval=bool(val_encoded), precision=precision)
    if not resume and run.metrics.exists():
        run.metrics.unlink()
    # --- monitor: metrics.jsonl + sinks, guards, live view, Ctrl-C (tunewise/monitor/session.py)
    session = MonitorSession(config, run, resume=resume)
    session.adjust_arguments(args)
    trainer = TunewiseTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(train_encoded),
        eval_dataset=to_dataset(val_encoded) if val_encoded else None,
        data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[*callbacks, *session.callbacks],
    )
    session.attach(trainer)
    checkpoint = last_checkpoint(run.checkpoints) if resume else None
    if resume and checkpoint is None:
        log.warning("no checkpoint in %s: training from the start", run.checkpoints)
    started = time.time()
    with session.watching(trainer):
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    elapsed = time.time() - started

    if trainer.is_world_process_zero():
        with atomic_dir(run.model) as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    summary = {
        "method": method.name,
        "model": config.model,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_examples": len(train_encoded),
        "val_examples": len(val_encoded),
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "train_loss_mean": result.training_loss,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "min_train_loss": min(train_losses) if train_losses else None,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "min_eval_loss": min(eval_losses) if eval_losses else None,
        "train_time_s": round(elapsed, 2),
        "trained_tokens": trainer.trained_tokens,
        "tokens_per_s": round(trainer.trained_tokens / elapsed, 2) if elapsed else None,
        "device": precision.device,
        "dtype": str(dtype).replace("torch.", ""),
        "resumed_from": checkpoint.name if checkpoint else None,
        **memory_snapshot(),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(run.root / "train_summary.json", summary)
    return summary
