"""``training.sharding: fsdp | zero2 | zero3``: a model too large for one device, sharded by the engines the field
runs (PyTorch FSDP2 through accelerate, or DeepSpeed ZeRO), configured by a preset that tunewise writes into the run
directory as the engine's own config file (RUN/fsdp_config.json, RUN/deepspeed_config.json), so what ran can be read
and, copied and edited, given back as ``training.fsdp_config`` / ``training.deepspeed``.

What each preset shards (per device, N devices; tunewise/decide/estimate.py counts the same):

* ``fsdp`` (FSDP2, ``fully_shard`` per decoder layer): weights, gradients and optimizer states / N; one layer's
  full weights are gathered at a time. Checkpoints are sharded (torch.distributed.checkpoint, one file per rank,
  resumable on another number of processes); the final RUN/model is gathered into ordinary safetensors.
* ``zero2`` (DeepSpeed ZeRO stage 2): gradients and optimizer states / N, full weights on every device.
* ``zero3`` (DeepSpeed ZeRO stage 3): like fsdp; the final model is gathered in 16-bit on save.

FSDP on CPU: accelerate 1.15 selects FSDP only for accelerator devices (``AcceleratorState.__init__`` turns the
FSDP plugin on inside its MULTI_GPU/NPU/XPU/... branch) and runs CPU processes as DDP (``MULTI_CPU``), ignoring the
plugin without a word; PyTorch's FSDP2 itself runs on CPU with gloo. :func:`enable_fsdp_on_cpu` switches the
accelerator's state to FSDP in that one case, and from there accelerate's and torch's own FSDP2 code runs (wrapping,
sharded checkpoints, state dict gathering); that is what the CPU tests exercise. DeepSpeed needs GPUs here
(transformers does not hand DeepSpeed to accelerate when ``use_cpu``), so ZeRO is refused on CPU.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from tunewise.config import Config, ConfigError
from tunewise.rundir import RunDir, atomic_write_json, is_main_process

log = logging.getLogger(__name__)

DEEPSPEED_EXTRA = "pip install 'tunewise[deepspeed]'"

_DEEPSPEED_COMMON: dict[str, Any] = {
    # "auto": transformers fills these from the training arguments (HfTrainerDeepSpeedConfig)
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "gradient_clipping": "auto",
}
ZERO_PRESETS: dict[str, dict[str, Any]] = {
    "zero2": {**_DEEPSPEED_COMMON, "zero_optimization": {
        "stage": 2, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto",
        "allgather_partitions": True, "reduce_scatter": True,
    }},
    "zero3": {**_DEEPSPEED_COMMON, "zero_optimization": {
        "stage": 3, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
        # the final model is gathered into ordinary 16-bit weights when it is saved (else only ZeRO shards exist)
        "stage3_gather_16bit_weights_on_model_save": True,
    }},
}


class EngineUnavailable(ConfigError):
    """The sharding engine a config asks for cannot run here (not installed, no config file, not on this device)."""


def engine_of(config: Config) -> str | None:
    """'fsdp', 'deepspeed' or None: which engine ``config`` trains with."""
    t = config.training
    if t.sharding == "fsdp" or t.fsdp:
        return "fsdp"
    if t.sharding in ZERO_PRESETS or t.deepspeed:
        return "deepspeed"
    return None


def _no_split_modules(model: Any) -> list[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sorted(getattr(base, "_no_split_modules", None) or [])


def fsdp_config(config: Config, model: Any = None) -> dict[str, Any]:
    """The transformers ``fsdp_config`` of ``config``: tunewise's FSDP2 preset (one shard unit per decoder layer,
    sharded checkpoints, FSDP's own activation checkpointing when training.gradient_checkpointing) with
    ``training.fsdp_config`` on top."""
    t = config.training
    preset: dict[str, Any] = {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "reshard_after_forward": True,
        "state_dict_type": "SHARDED_STATE_DICT",
        "cpu_ram_efficient_loading": False,
        "activation_checkpointing": bool(t.gradient_checkpointing),
    }
    layers = _no_split_modules(model) if model is not None else []
    if layers:  # accelerate would take the same default from the model; written out so the file says what ran
        preset["transformer_layer_cls_to_wrap"] = layers
    return {**preset, **(t.fsdp_config or {})} if t.sharding == "fsdp" else dict(t.fsdp_config or {})


def deepspeed_config(config: Config) -> dict[str, Any]:
    """The DeepSpeed config of ``config``: a ZeRO preset, or the JSON file ``training.deepspeed`` names."""
    t = config.training
    if t.sharding in ZERO_PRESETS:
        return copy.deepcopy(ZERO_PRESETS[t.sharding])
    path = Path(str(t.deepspeed))
    if not path.is_file():
        raise EngineUnavailable(f"training.deepspeed: file {str(path)!r} not found; give the path of a DeepSpeed JSON "
                                "config, or use training.sharding: zero2 or zero3 for tunewise's preset")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EngineUnavailable(f"training.deepspeed: {path} is not valid JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise EngineUnavailable(f"training.deepspeed: {path} must hold a JSON object (a DeepSpeed config)")
    return loaded


def check_engine(config: Config) -> None:
    """Raise :class:`EngineUnavailable` (one line, what to do) when the sharding engine cannot run here: the
    DeepSpeed config file missing or broken, DeepSpeed not installed (the ``deepspeed`` extra), or ZeRO on CPU."""
    if engine_of(config) != "deepspeed":
        return
    t = config.training
    field = f"training.sharding: {t.sharding}" if t.sharding else f"training.deepspeed: {t.deepspeed}"
    deepspeed_config(config)  # a missing or broken file
    if importlib.util.find_spec("deepspeed") is None:
        raise EngineUnavailable(f"{field} needs DeepSpeed, which is not installed: {DEEPSPEED_EXTRA} (on the GPU "
                                "machines; or use training.sharding: fsdp, which needs nothing extra)")
    from tunewise.lm.device import resolve_precision

    if resolve_precision(t.bf16, t.fp16).device == "cpu":
        raise EngineUnavailable(f"{field}: DeepSpeed ZeRO needs GPUs (transformers does not use DeepSpeed for CPU "
                                "processes); on CPU use training.sharding: fsdp")


def engine_arguments(config: Config, run: RunDir | None = None, model: Any = None) -> dict[str, Any]:
    """TrainingArguments for the sharding engine of ``config`` ({} without one); rank 0 writes the engine's config
    file into ``run``. Every rank builds the same dict itself, so no rank reads a file another one is writing."""
    engine = engine_of(config)
    if engine is None:
        return {}
    check_engine(config)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        log.warning("training.sharding / %s in one process shards nothing: start several (--nproc N, or --nnodes; "
                    "docs/scale.md)", engine)
    if engine == "fsdp":
        settings = fsdp_config(config, model)
        arguments: dict[str, Any] = {"fsdp": config.training.fsdp or True, "fsdp_config": settings}
        written = {"fsdp": config.training.fsdp, **settings} if config.training.fsdp else settings
        target = run.fsdp_config if run is not None else None
    else:
        settings = deepspeed_config(config)
        arguments, written = {"deepspeed": copy.deepcopy(settings)}, settings
        target = run.deepspeed_config if run is not None else None
    if target is not None and is_main_process():
        atomic_write_json(target, written)
        log.info("sharding with %s: settings in %s", engine, target)
    return arguments


# --------------------------------------------------------------------------------------------------------------------
# inside the Trainer


def enable_fsdp_on_cpu(trainer: Any) -> None:
    """Turn FSDP on in the accelerator of ``trainer`` when it asked for FSDP and accelerate made it DDP because the
    processes are CPU processes (see the module docstring); a no-op everywhere else, including once accelerate
    selects FSDP on CPU itself."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if trainer.args.fsdp_plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    # as AcceleratorState.__init__ ends: every later AcceleratorState() copies the PartialState's type back
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    if plugin.activation_checkpointing and trainer.args.activation_checkpointing:  # as the Trainer checks it
        raise ValueError("fsdp_config activation_checkpointing and training.gradient_checkpointing are both on; the "
                         "fsdp preset turns FSDP's own on from training.gradient_checkpointing")


def is_sharded(trainer: Any) -> bool:
    return bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))


def full_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The whole model's state dict gathered from its shards (a collective: every rank calls it; rank 0 gets the
    tensors), or None when the model is not sharded."""
    if not is_sharded(trainer):
        return None
    model = trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model
    return trainer.accelerator.get_state_dict(model)
