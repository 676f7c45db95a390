"""Train stage: prepared data in RUN/data -> checkpoints, metrics.jsonl, and the final model in RUN/model."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from tunewise.config import Config, ConfigError
from tunewise.example import Example
from tunewise.lm.adapters import count_parameters, get_method
from tunewise.lm.chat import Encoded, encode_examples
from tunewise.lm.collate import PadCollator, pack_collator, packing_problem
from tunewise.lm.loading import load_for_training, load_tokenizer
from tunewise.lm.device import pick_device
from tunewise.objectives import Objective, get_objective
from tunewise.objectives.base import Reference
from tunewise.monitor.memory import memory_snapshot
from tunewise.monitor.session import MonitorSession
from tunewise.record import tracked
from tunewise.rundir import (
    RunDir,
    atomic_dir,
    atomic_write_json,
    is_main_process,
    last_checkpoint,
    read_jsonl,
)
from tunewise.runlock import writing_run
from tunewise.train.allocator import return_freed_memory_to_os, tuning_setting
from tunewise.train.best import BestModel, GenerationMetric
from tunewise.train.distributed import check_same_inputs
from tunewise.train.eval_budget import plan_evaluations
from tunewise.train.learning_rate import resolve_learning_rate
from tunewise.train.preflight import check_config
from tunewise.train.schedule import resolve_epochs
from tunewise.train.resume import (
    ResumeState,
    check_resume,
    remove_checkpoints,
    remove_incomplete_checkpoints,
    restore_checkpoint_state,
    saved_callback_state,
    started_precision,
    write_fingerprint,
)
from tunewise.train.sharding import check_engine, engine_arguments, full_state_dict

log = logging.getLogger(__name__)


def load_examples(path: Path) -> list[Example]:
    return [Example.from_record(r) for r in read_jsonl(path)] if path.is_file() else []


def to_dataset(encoded: list[Any]) -> Any:
    """A datasets.Dataset of encoded examples (SFT) or of an objective's features (dicts)."""
    from datasets import Dataset

    if encoded and isinstance(encoded[0], dict):
        return Dataset.from_list(encoded)
    return Dataset.from_dict({"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]})


def _row(encoded: Any) -> dict[str, Any]:
    """input_ids and labels of an encoded example or of an objective's features (its chosen / first row)."""
    if isinstance(encoded, dict):
        return {"input_ids": encoded["input_ids"], "labels": encoded["labels"]}
    return {"input_ids": encoded.input_ids, "labels": encoded.labels}


def _checkpointing_arg() -> str:
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


_CHECKPOINTING_ARG = _checkpointing_arg()


def training_arguments(config: Config, output_dir: Path, *, has_eval: bool, precision: Any,
                       engine: dict[str, Any] | None = None) -> Any:
    """The TrainingArguments of ``config``; ``engine``: the sharding engine's arguments
    (:func:`tunewise.train.sharding.engine_arguments`), given by training runs only."""
    from transformers import TrainingArguments

    t = config.training
    # FSDP checkpoints activations itself (the fsdp preset turns it on from training.gradient_checkpointing); the
    # Trainer's own would add a redundant all-gather in backward, and transformers refuses both at once
    checkpointing = t.gradient_checkpointing and "fsdp" not in (engine or {})
    warmup: float = t.warmup_steps if t.warmup_steps else t.warmup_ratio
    if t.epochs is None and t.max_steps <= 0:
        raise ValueError("training.epochs is automatic (null): resolve it from the data first "
                         "(tunewise.train.schedule.resolve_epochs), or set training.max_steps")
    if t.learning_rate is None:
        raise ValueError("training.learning_rate is automatic (null): resolve it from the model first "
                         "(tunewise.train.learning_rate.resolve_learning_rate)")
    eval_strategy = "no" if not has_eval else ("steps" if t.eval_steps else "epoch")
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs or 1.0,  # with max_steps set, the Trainer ignores it
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
        **{_CHECKPOINTING_ARG: checkpointing},
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
        **(engine or {}),  # training.sharding: FSDP2 / DeepSpeed ZeRO (tunewise/train/sharding.py)
    )


def train_run(
    config: Config, run_dir: str | Path, *, resume: bool = False, callbacks: Sequence[Any] = (),
    checkpointing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``config.method`` on RUN/data/train.jsonl (eval loss on val.jsonl) and save RUN/model.

    Returns a summary (steps, losses, time, tokens, parameters, peak memory), also written to RUN/train_summary.json.
    run.json follows the run (running -> succeeded / failed / cancelled); the monitor writes metrics.jsonl,
    summary.json and plots/. ``callbacks`` are extra TrainerCallbacks, called before tunewise's own.
    Raises :class:`tunewise.monitor.guards.TrainingStopped` when a guard stops the run, and
    :class:`tunewise.monitor.session.TrainingCancelled` (a KeyboardInterrupt) on Ctrl-C, after saving a checkpoint.
    ``checkpointing``: the automatic choice of activation checkpointing for ``training.gradient_checkpointing: null``
    (:func:`tunewise.decide.estimate.checkpointing_choice`, made by the caller: the estimator is a layer above);
    without it, null means off.
    """
    # one writer per run (tunewise/runlock.py): rank 0 (on another node, ranks > 0 write nothing and share the run
    # folder with the writer), then run.json's status around the whole stage
    with (writing_run(run_dir, "train") if is_main_process() else nullcontext()), tracked(run_dir, "train", config):
        return _train_run(config, run_dir, resume=resume, callbacks=callbacks, checkpointing=checkpointing)


def resolve_checkpointing(config: Config, choice: dict[str, Any] | None) -> tuple[Config, dict[str, Any]]:
    """(``config`` with training.gradient_checkpointing a bool, the choice as train_summary.json records it).

    An explicit true/false wins; null takes the caller's automatic ``choice`` (off without one). Checkpointing
    recomputes the same values in backward, so the choice changes memory and time, never the result: a resumed run
    may decide again from the memory available then (the run's fingerprint keeps the null)."""
    value = config.training.gradient_checkpointing
    if value is not None:
        decided: dict[str, Any] = {"on": bool(value), "source": "config", "reason": "training.gradient_checkpointing"}
    elif choice is not None:
        decided = {"source": "automatic", **choice}
    else:
        decided = {"on": False, "return_freed_memory": False, "source": "automatic",
                   "reason": "no memory estimate given to train_run: nothing changed"}
    training = config.training.model_copy(update={"gradient_checkpointing": bool(decided["on"])})
    return config.model_copy(update={"training": training}), decided


def _train_run(config: Config, run_dir: str | Path, *, resume: bool, callbacks: Sequence[Any],
               checkpointing: dict[str, Any] | None = None) -> dict[str, Any]:
    from transformers import set_seed

    run = RunDir.of(run_dir)
    train_file = run.require("data", run.split("train").name, hint="prepare the data first: `tunewise data prepare CONFIG`")
    check_engine(config)  # DeepSpeed missing, its file missing: one line before anything slow
    method = get_method(config.method)
    checkpoint = last_checkpoint(run.checkpoints) if resume else None
    if resume and checkpoint is None:
        log.warning("no checkpoint in %s: training from the start", run.checkpoints)
    # before anything slow: what can't work on this model or data, and a changed config or dataset on resume
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    check_config(config, run, data_paths=False, world_size=world_size)
    if checkpoint is not None:
        check_resume(config, run)
        if is_main_process():
            for name in remove_incomplete_checkpoints(run.checkpoints):
                log.info("removed %s (cut off while it was being saved)", name)
            log.info("resuming from %s", checkpoint.name)
    set_seed(config.training.seed)

    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    max_tokens = config.data.max_tokens
    train_examples = load_examples(train_file)
    val_examples = load_examples(run.split("val"))
    objective = get_objective(config.objective).configure(config)
    if objective.data == "sft":
        train_encoded: list[Any] = encode_examples(train_examples, tokenizer, loss_on=config.training.loss_on, max_tokens=max_tokens)
        train_encoded = [e for e in train_encoded if e.n_trained > 0]
        val_encoded: list[Any] = encode_examples(val_examples, tokenizer, loss_on=config.training.loss_on, max_tokens=max_tokens)
        val_encoded = [e for e in val_encoded if e.n_trained > 0]
    else:  # preference data: features of the objective's own (tunewise/objectives/)
        train_encoded = objective.encode(train_examples, tokenizer, config)
        val_encoded = objective.encode(val_examples, tokenizer, config)
    if not train_encoded and objective.data != "sft":
        wanted = {"pairs": "preference pairs (prompt, chosen, rejected)",
                  "unpaired": "answers marked desirable or not (prompt, completion, label: true|false)"}[objective.data]
        raise ConfigError(f"{train_file} has no {wanted} that fit data.max_tokens, which objective {objective.name} "
                          "trains on; see docs/objectives.md for the data formats")
    if not train_encoded:
        raise ConfigError(f"{train_file} has no example with a trained token; check the data and training.loss_on "
                          f"(now {config.training.loss_on!r})")

    n_val = len(val_encoded)
    val_encoded, eval_every = plan_in_training_evaluation(config, train_encoded, val_encoded, world_size)
    fingerprinted = config  # resume compares the config as written (a null checkpointing or epochs stays null)
    if eval_every is not None:
        config = config.model_copy(update={"training": config.training.model_copy(update={"eval_steps": eval_every})})
    config, checkpoint_choice = resolve_checkpointing(config, checkpointing)
    config, epochs_choice = resolve_epochs(config, len(train_encoded), world_size)
    if epochs_choice["source"] == "automatic" and config.training.max_steps <= 0:
        log.info("epochs: %g (automatic): %s", epochs_choice["epochs"], epochs_choice["reason"])
    if checkpoint_choice["source"] == "automatic":  # one line; a warning when memory is tight
        on = [name for name, key in (("activation checkpointing", "on"), ("freed memory returned to the OS",
                                                                         "return_freed_memory")) if checkpoint_choice.get(key)]
        (log.warning if on else log.info)("memory: %s (automatic): %s", " + ".join(on) or "nothing to save",
                                          checkpoint_choice["reason"])
    if checkpoint is not None:  # automatic precision: as the run started, whatever this machine's CPU would choose
        config = started_precision(config, run, pick_device())
    model, precision, dtype = load_for_training(config, method)
    # CPU: freed activations go back to the OS when memory is tight, or when asked (tunewise/train/allocator.py)
    wanted = tuning_setting()
    returned = precision.device == "cpu" and (wanted if wanted is not None else bool(checkpoint_choice.get(
        "return_freed_memory"))) and return_freed_memory_to_os()
    trainable, total = count_parameters(model)
    log.info("method %s: %s trainable of %s parameters", method.name, f"{trainable:,}", f"{total:,}")
    config, rate_choice = resolve_learning_rate(config, total)
    if rate_choice["source"] == "automatic":
        log.info("learning rate: %g (automatic): %s", rate_choice["learning_rate"], rate_choice["reason"])

    engine = engine_arguments(config, run, model)
    args = training_arguments(config, run.checkpoints, has_eval=bool(val_encoded), precision=precision, engine=engine)
    if args.world_size > 1:  # the process group is up: every rank must read what rank 0 reads
        check_same_inputs(config, run)
    if checkpoint is None:
        if is_main_process():
            run.metrics.unlink(missing_ok=True)
            stale = remove_checkpoints(run.checkpoints)
            if stale:  # a later --resume must not continue from another training's checkpoint
                log.warning("training from the start: removed the previous training's %s", ", ".join(stale))
        write_fingerprint(fingerprinted, run, precision)
    setup = build_trainer(config, run, method.name, model, tokenizer, args, train_encoded, val_encoded, val_examples,
                          callbacks=callbacks, resume=resume, objective=objective)
    trainer, session, best, packing = setup.trainer, setup.session, setup.best, setup.packing
    if checkpoint is not None:
        restored_state = restore_checkpoint_state(checkpoint, run, trainer)
        session.writer.start_fields = {k: restored_state[k] for k in ("trained_tokens", "input_tokens")
                                       if k in restored_state}
        if best is not None:
            restore_tracker(best, checkpoint)
    started = time.time()
    # the model and data are loaded: freezing them out of the garbage collector's view makes the collections during
    # training (and the Trainer's gc.collect() at its start) cheap (tiny model: -0.8 s of a 6 s training)
    gc.freeze()
    try:
        with session.watching(trainer):
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except BaseException:
        if is_main_process():  # a checkpoint cut off by the failure (a full disk) is no checkpoint
            remove_incomplete_checkpoints(run.checkpoints)
        raise
    finally:
        gc.unfreeze()
    elapsed = time.time() - started
    restored = bool(best and config.training.load_best_model_at_end and best.restore_best(trainer.model, trainer.state.global_step))

    gathered = full_state_dict(trainer)  # sharded (FSDP / ZeRO-3): every rank takes part in gathering the weights
    if trainer.is_world_process_zero():
        with atomic_dir(run.model) as tmp:
            save_model(trainer, tmp, gathered)
            tokenizer.save_pretrained(tmp)
            # branch ship: a filled model card and a portable base reference instead of PEFT's empty card
            from tunewise.model_card import fill_model_folder

            fill_model_folder(config, run.root, tmp)
    trained_tokens, input_tokens = trainer.token_totals()  # all processes together
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    summary = {
        "method": method.name,
        "objective": objective.name,
        "model": config.model,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_examples": len(train_encoded),
        "val_examples": n_val,
        "eval_sample_examples": len(val_encoded),  # evaluated during training (training.eval_budget)
        "eval_every_steps": config.training.eval_steps,  # null: once per epoch
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "epochs_planned": epochs_choice,
        "learning_rate": rate_choice,
        "train_loss_mean": result.training_loss,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "min_train_loss": min(train_losses) if train_losses else None,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "min_eval_loss": min(eval_losses) if eval_losses else None,
        "best": {"metric": best.metric, "value": best.best_value, "step": best.best_step, "restored": restored,
                 "early_stopped_at": best.stopped_at} if best else None,
        "packing": packing,
        "gradient_checkpointing": checkpoint_choice,
        "returned_freed_memory": bool(returned),
        "quantized_check": setup.quantized_check,
        "train_time_s": round(elapsed, 2),
        "trained_tokens": trained_tokens,
        "input_tokens": input_tokens,
        "tokens_per_s": round(trained_tokens / elapsed, 2) if elapsed else None,
        "input_tokens_per_s": round(input_tokens / elapsed, 2) if elapsed else None,
        "device": precision.device,
        "precision": precision.name,  # autocast bf16 / fp16, or fp32
        "dtype": str(dtype).replace("torch.", ""),
        "world_size": trainer.args.world_size,
        # adapters hash in milliseconds; a full model only when there are replicas to compare
        "weights_sha256": (weights_digest(trainer.model) if (method.saves_adapter or trainer.args.world_size > 1)
                           and not trainer.is_deepspeed_enabled else None),  # ZeRO's partitioned weights: not hashed
        "resumed_from": checkpoint.name if checkpoint else None,
        **memory_snapshot(),
    }
    if trainer.args.world_size > 1:  # every rank reports, so a run can show that the replicas stayed identical
        own = {"own_trained_tokens": trainer.trained_tokens, "own_input_tokens": trainer.input_tokens}
        atomic_write_json(run.root / "ranks" / f"rank-{trainer.args.process_index}.json", {**summary, **own})
    if trainer.is_world_process_zero():
        atomic_write_json(run.train_summary, summary)
    return summary


def plan_in_training_evaluation(config: Config, train: list[Any], val: list[Any],
                                world_size: int = 1) -> tuple[list[Any], int | None]:
    """(the validation rows the in-training evaluations use: all, or a sample within training.eval_budget; optimizer
    steps between evaluations when once per epoch would exceed the budget, else None). Encoded examples, or an
    objective's features: sized by their first row."""
    t = config.training
    val_lengths = [len(_row(e)["input_ids"]) for e in val]
    indices, every = plan_evaluations(t, [len(_row(e)["input_ids"]) for e in train], val_lengths, world_size)
    if val and not indices:
        log.info("in-training evaluation: none (this run is too short for one within training.eval_budget=%s of the "
                 "training time: there would be nothing to choose between); the evaluate stage scores the test split; "
                 "training.eval_budget: 1 evaluates anyway", t.eval_budget)
    elif len(indices) < len(val):
        log.info("in-training evaluation: %d of %d validation examples (training.eval_budget=%s of the training "
                 "time); the evaluate stage scores the whole test split", len(indices), len(val), t.eval_budget)
    if every is not None:
        log.info("in-training evaluation: every %d steps and at the last (once per epoch would take more than "
                 "training.eval_budget=%s of the training time)", every, t.eval_budget)
    return [val[i] for i in indices], every


@dataclass
class TrainerSetup:
    """What :func:`build_trainer` wires together."""

    trainer: Any
    session: MonitorSession
    best: BestModel | None
    packing: bool
    quantized_check: dict[str, Any] | None = None  # tunewise/train/verify_quantized.py, for quantized bases


def build_trainer(config: Config, run: RunDir, method: str, model: Any, tokenizer: Any, args: Any,
                  train: list[Any], val: list[Any], val_examples: Sequence[Example], *,
                  callbacks: Sequence[Any] = (), resume: bool = False, objective: Objective | None = None) -> TrainerSetup:
    """The TunewiseTrainer of a run: the collator (packing when the model honours it), best-model tracking and early
    stopping, the monitor (metrics.jsonl + sinks, guards, live view, Ctrl-C: tunewise/monitor/session.py) and, for
    a best-model metric other than eval_loss, its generation on ``val_examples``. ``callbacks`` come first.
    ``objective`` (default SFT) says how ``train``/``val`` (its features) are collated and what the loss is; one
    that needs a reference gets it here, before the first step (tunewise/objectives/base.py: Reference).
    Training runs and the estimator's calibration (tunewise/decide/calibrate.py) both build their Trainer here."""
    from tunewise.train.trainer import TunewiseTrainer

    session = MonitorSession(config, run, resume=resume)
    session.adjust_arguments(args)
    best = best_model_tracker(config, run, has_eval=bool(val))
    resume_state = ResumeState(run.metrics)
    sft = objective is None or objective.data == "sft"
    if sft:
        collator, packing = choose_collator(config, method, model, tokenizer, train)
    else:  # preference rows are scored whole, one answer per row: not packed
        collator, packing = objective.collator(tokenizer.pad_token_id), False
    probe_collator = collator if sft else PadCollator(tokenizer.pad_token_id)  # the check scores answers as SFT does
    quantized_check = guard_quantized_training(model, probe_collator, train, session) if get_method(method).quantized else None
    reference = Reference(model) if objective is not None and objective.needs_reference else None
    trainer = TunewiseTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(train),
        eval_dataset=to_dataset(val) if val else None,
        data_collator=collator,
        processing_class=tokenizer,
        # ResumeState last: it sees the saves the others ask for
        callbacks=[*callbacks, *([best] if best else []), *session.callbacks, resume_state],
    )
    resume_state.trainer = trainer
    if not sft:
        trainer.objective, trainer.reference = objective, reference
    if best is not None and best.metric != "eval_loss":
        trainer.generation_metric = GenerationMetric(
            tokenizer, [e for e in val_examples if e.reference][: config.training.eval_generation_examples],
            best.metric.removeprefix("eval_"), max_new_tokens=config.eval.max_new_tokens,
            batch_size=config.eval.batch_size,
        )
    session.attach(trainer)
    return TrainerSetup(trainer, session, best, packing, quantized_check)


def guard_quantized_training(model: Any, collator: Any, train: list[Any], session: MonitorSession) -> dict[str, Any]:
    """Check on one real batch that the quantized base trains correctly (raises QuantizedTrainingError with what to
    do when not), and let the guards re-check whenever a library warns of incorrect results during training."""
    from tunewise.train.verify_quantized import probe_batch, verify_quantized_training

    batch = probe_batch(collator, [_row(e) for e in train[:64]])
    check = verify_quantized_training(model, batch)
    session.guards.verify = lambda: verify_quantized_training(model, batch)
    return check.to_dict()


def best_model_tracker(config: Config, run: RunDir, *, has_eval: bool) -> BestModel | None:
    """The best-model / early-stopping callback, when there is validation data to judge by."""
    t = config.training
    if not has_eval:
        if t.early_stopping_patience or t.metric_for_best_model != "eval_loss":
            log.warning("training.early_stopping_patience / metric_for_best_model need validation data (data.val_ratio "
                        "> 0 or data.val_path); training without early stopping, the final model is the last step")
        return None
    return BestModel(run.checkpoints, t.metric_for_best_model, patience=t.early_stopping_patience,
                     min_delta=t.early_stopping_min_delta, save=t.load_best_model_at_end)


def restore_tracker(best: BestModel, checkpoint: Path) -> None:
    """Continue early stopping from the state saved in ``checkpoint`` (see tunewise/train/best.py)."""
    saved = saved_callback_state(checkpoint, type(best).__name__)
    if saved:
        best.restore(saved)


def choose_collator(config: Config, method: str, model: Any, tokenizer: Any, encoded: list[Encoded]) -> tuple[Any, bool]:
    """Padding-free packing when configured and the model honours it (checked on two real examples), else padding."""
    pad = PadCollator(tokenizer.pad_token_id)
    if not config.training.packing:
        return pad, False
    if method == "prompt":
        log.info("packing is off for prompt tuning (virtual tokens go before each example): padding batches")
        return pad, False
    packer = pack_collator(config, tokenizer.pad_token_id, model.config)
    probe = [{"input_ids": e.input_ids, "labels": e.labels} for e in sorted(encoded[:64], key=len)[:3]]
    problem = packing_problem(model, packer, probe)
    if problem:
        log.warning("packing check: %s: padding batches instead; set training.packing=false to silence this", problem)
        return pad, False
    return packer, True


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the trainable parameters (name order): equal digests mean identical trained weights. FSDP-sharded
    parameters are gathered whole first (a collective: every rank must call this)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            tensor = parameter.detach()
            tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            digest.update(name.encode())
            digest.update(tensor.float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_model(trainer: Any, folder: Path, state_dict: dict[str, Any] | None = None) -> None:
    """Save the trained model (an adapter, or the full model) as safetensors; ``state_dict``: the weights gathered
    from a sharded model (:func:`tunewise.train.sharding.full_state_dict`)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if state_dict is None:
        model.save_pretrained(folder, safe_serialization=True)
        return
    # the gathered dict holds a tied weight (lm_head = embeddings) under each name; save it once, as save_pretrained
    # does for an unsharded model
    seen: set[int] = set()
    aliases = set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            aliases.add(name)
        seen.add(id(parameter))
    state_dict = {k: v for k, v in state_dict.items() if k not in aliases}
    model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
