"""Checks of a valid config against what it will run on, before a stage does anything slow: the files it names,
the packages it needs, the sizes of the chosen model, and the prepared data.

:mod:`tunewise.config` checks what a config says on its own (types, ranges, names); a config can be valid and still
unable to work here: ``lora.r: 100000`` on a model whose layers are 96 wide allocated memory for 110 s and then
failed, and ``data.max_tokens`` above the model's context trains on positions the model has no embedding for. Each
check raises :class:`tunewise.config.ConfigError` naming the field, the value and the limit.

``tunewise run`` checks everything but the data at its start and the data once it is prepared; ``data prepare``
checks the data paths and the token limits; ``train`` checks everything before it loads the model. The default
``data.max_tokens`` (1024) is not held against a shorter context (the tiny test model has 512): the longest prepared
example is.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import Config, ConfigError
from tunewise.rundir import RunDir

DEFAULT_MAX_TOKENS = Config.model_fields["data"].default_factory().max_tokens  # type: ignore[misc]
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def check_paths(config: Config, *, data: bool = True) -> None:
    """data.path / data.test_path name data (with ``data``); the sharding engine can run here
    (tunewise/train/sharding.py)."""
    from tunewise.data.io import resolve_paths
    from tunewise.errors import DataError

    for attr in ("path", "test_path") if data else ():
        value = getattr(config.data, attr)
        if value is None:
            continue
        try:
            resolve_paths(value)
        except DataError as exc:
            raise ConfigError(f"data.{attr}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"data.{attr}: can't read {value!r} ({exc.strerror}); set it to a data file, folder or "
                              "glob") from None
    from tunewise.train.sharding import check_engine

    check_engine(config)  # training.sharding / training.deepspeed: the config file, the package, the device


@dataclass(frozen=True)
class ModelSizes:
    """What limits a config on one model: its context length and the (in, out) width of each linear layer."""

    context: int | None
    context_key: str | None
    linear: dict[str, tuple[int, int]] = field(default_factory=dict)  # short module name -> narrowest (in, out)


@functools.lru_cache(maxsize=8)
def model_sizes(model: str, trust_remote_code: bool = False) -> ModelSizes:
    """The sizes of ``model`` from its config alone: the layers are built on the meta device (no weights loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunewise.lm.loading import resolve_model

    try:
        model_config = AutoConfig.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # a tokenizer-only folder (enough for `data prepare`); loading the model says more
        return ModelSizes(None, None, {})
    text = getattr(model_config, "text_config", None) or model_config
    context, key = None, None
    for name in CONTEXT_KEYS:
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            context, key = value, name
            break
    linear: dict[str, tuple[int, int]] = {}
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(model_config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - an architecture that can't be built bare: no layer widths to check
        skeleton = None
    if skeleton is not None:
        for full_name, module in skeleton.named_modules():
            if isinstance(module, torch.nn.Linear) and not full_name.endswith(("lm_head", "embed_out", "output_layer")):
                short = full_name.rsplit(".", 1)[-1]
                old = linear.get(short)
                shape = (module.in_features, module.out_features)
                if old is None or min(shape) < min(old):
                    linear[short] = shape
    return ModelSizes(context, key, linear)


def check_context(config: Config, sizes: ModelSizes | None = None) -> None:
    """The config's token limits fit the model's context."""
    sizes = sizes or model_sizes(config.model, config.trust_remote_code)
    context = sizes.context
    if context:
        limits = [("data.max_tokens", config.data.max_tokens),
                  ("training.packing_row_tokens", config.training.packing_row_tokens),
                  ("eval.max_new_tokens", config.eval.max_new_tokens)]
        if config.method == "prompt":
            limits.append(("prompt.num_virtual_tokens + data.max_tokens",
                           config.prompt.num_virtual_tokens + config.data.max_tokens))
        for name, value in limits:
            if name == "data.max_tokens" and value == DEFAULT_MAX_TOKENS:
                continue  # the default, not a choice: the prepared examples are checked instead (check_data)
            if value is not None and value > context:
                raise ConfigError(f"{name}={value} is above the context of {config.model!r}: {context} tokens "
                                  f"({sizes.context_key} in its config.json); set it to at most {context}")


def check_lora_rank(config: Config, sizes: ModelSizes | None = None) -> None:
    """The LoRA rank fits the layers it adapts (a rank above a layer's width adds nothing but memory)."""
    sizes = sizes or model_sizes(config.model, config.trust_remote_code)
    if config.method in ("lora", "dora", "qlora") and sizes.linear:
        from tunewise.lm.adapters import ATTENTION_NAMES

        target = config.lora.target_modules
        if target in ("auto", "all-linear"):
            names = list(sizes.linear)
        elif target == "attention":
            names = [n for n in sizes.linear if n in ATTENTION_NAMES]
        else:
            names = [n for n in target if n in sizes.linear]  # unknown names are reported when the adapter is built
        if names:
            narrowest = min(names, key=lambda n: min(sizes.linear[n]))
            width = min(sizes.linear[narrowest])
            if config.lora.r > width:
                d_in, d_out = sizes.linear[narrowest]
                raise ConfigError(
                    f"lora.r={config.lora.r} is above the width of the layers it adapts: the narrowest, {narrowest} "
                    f"({d_in} -> {d_out}), allows a rank of at most {width}; set lora.r to {width} or less (8-64 is "
                    "usual), or leave that layer out of lora.target_modules")


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def check_data(config: Config, run: RunDir, world_size: int = 1, sizes: ModelSizes | None = None) -> None:
    """The prepared data fits: one optimizer step needs batch x accumulation x processes examples (more than the
    training data is a mistake: the batch would silently be the whole data, and the effective batch not what the
    config says), and no prepared example is longer than the model's context."""
    train = run.split("train")
    if not train.is_file():
        return
    n = count_lines(train)
    t = config.training
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * world_size
    if t.per_device_train_batch_size > n:
        raise ConfigError(f"training.per_device_train_batch_size={t.per_device_train_batch_size} is larger than the "
                          f"training data ({n} examples in {train}); set it to at most {n}, or add data")
    if per_step > n:
        raise ConfigError(
            f"training.gradient_accumulation_steps={t.gradient_accumulation_steps}: one optimizer step needs "
            f"{per_step} examples (batch {t.per_device_train_batch_size} x accumulation {t.gradient_accumulation_steps}"
            f"{f' x {world_size} processes' if world_size > 1 else ''}) and the training data has {n}; lower it to "
            f"at most {max(n // (t.per_device_train_batch_size * world_size), 1)}")
    try:
        report = json.loads(run.data_report.read_text(encoding="utf-8"))
        longest = max(int(split["total"]["max"]) for split in report["tokens"].values() if split.get("examples"))
    except (OSError, ValueError, KeyError, TypeError):
        return
    sizes = sizes or model_sizes(config.model, config.trust_remote_code)
    if sizes.context and longest > sizes.context:
        raise ConfigError(f"data.max_tokens={config.data.max_tokens} let examples of up to {longest} tokens into "
                          f"{run.data}, above the context of {config.model!r}: {sizes.context} tokens; set "
                          f"data.max_tokens to at most {sizes.context} and prepare the data again")


def check_config(config: Config, run: RunDir | None = None, *, data_paths: bool = True, model: bool = True,
                 world_size: int = 1) -> None:
    """Every check that applies: paths (when the data is still to be read), the model's limits, and the prepared
    data's size (when ``run`` has it)."""
    check_paths(config, data=data_paths)
    if model:
        sizes = model_sizes(config.model, config.trust_remote_code)
        check_context(config, sizes)
        check_lora_rank(config, sizes)
    if run is not None:
        check_data(config, run, world_size)
