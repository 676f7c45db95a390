"""The fine-tuning methods: one registry entry per method (how the model is prepared, what is saved)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from tunewise.config import Config

ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "c_attn", "qkv_proj", "Wqkv")


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    prepare: Callable[[Any, Config], Any]
    saves_adapter: bool


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of the linear layers a LoRA could target (the output head excluded)."""
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not full_name.endswith(("lm_head", "embed_out", "output_layer")):
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_target_modules(model: torch.nn.Module, target: list[str] | str) -> list[str]:
    """``auto``/``all-linear``: every linear layer but the head (measured best here); ``attention``: q/k/v/o."""
    available = linear_module_names(model)
    if target in ("auto", "all-linear"):
        return available
    if target == "attention":
        chosen = [n for n in available if n in ATTENTION_NAMES]
        if not chosen:
            raise ValueError(f"lora.target_modules=attention: no attention projections found; the model's linear layers are {available}")
        return chosen
    missing = [n for n in target if n not in available]
    if missing:
        raise ValueError(f"lora.target_modules: {missing} not found in the model; its linear layers are {available}")
    return list(target)


def _prepare_lora(model: Any, config: Config) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=resolve_target_modules(model, lora.target_modules),
        use_rslora=lora.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    if config.training.gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, peft_config)


def _prepare_full(model: Any, config: Config) -> Any:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


METHODS: dict[str, Method] = {
    "lora": Method("lora", "low-rank adapters on the linear layers (PEFT)", _prepare_lora, saves_adapter=True),
    "full": Method("full", "every weight of the model is trained", _prepare_full, saves_adapter=False),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method {name!r} can't be trained by this version of tunewise; available: {', '.join(METHODS)}")
    return METHODS[name]


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
