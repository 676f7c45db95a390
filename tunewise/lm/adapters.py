"""The fine-tuning methods: one registry entry per method (how the model is prepared, what is saved)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tunewise.config import Config

ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "c_attn", "qkv_proj", "Wqkv")


@dataclass(frozen=True)
class Method:
    """A training method: ``prepare`` turns the loaded base into the model to train; ``saves_adapter`` says whether
    RUN/model is a PEFT adapter (else a full model); ``quantized`` bases are loaded through bitsandbytes
    (:func:`tunewise.lm.quantization.bnb_config`) for training and for evaluation of the adapter; ``learning_rate``
    is its automatic SFT rate on a model under 5B parameters (:mod:`tunewise.train.learning_rate` scales it)."""

    name: str
    description: str
    prepare: Callable[[Any, Config], Any]
    saves_adapter: bool
    learning_rate: float
    quantized: bool = False
    config_section: str | None = None


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


def _lora_config(model: Any, config: Config, *, use_dora: bool) -> Any:
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=resolve_target_modules(model, lora.target_modules),
        use_rslora=lora.use_rslora,
        use_dora=use_dora or lora.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _peft(model: Any, config: Config, peft_config: Any) -> Any:
    from peft import get_peft_model

    if config.training.gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, peft_config)


def _prepare_lora(model: Any, config: Config) -> Any:
    return _peft(model, config, _lora_config(model, config, use_dora=False))


def _prepare_dora(model: Any, config: Config) -> Any:
    return _peft(model, config, _lora_config(model, config, use_dora=True))


def _prepare_qlora(model: Any, config: Config) -> Any:
    """LoRA on a base loaded 4-/8-bit by bitsandbytes; PEFT's kbit preparation casts norms/embeddings to fp32."""
    from peft import prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False):
        raise ValueError("method qlora: the base model was not loaded quantized; load it with tunewise.lm.loading.load_base")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.training.gradient_checkpointing)
    return _peft(model, config, _lora_config(model, config, use_dora=False))


IA3_KEY_VALUE = ("k_proj", "v_proj", "key", "value", "c_attn", "qkv_proj", "Wqkv")
IA3_FEEDFORWARD = ("down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2")


def resolve_ia3_modules(model: torch.nn.Module, config: Config) -> tuple[list[str], list[str]]:
    """(target, feedforward) module names for IA3: ``auto`` = key/value and MLP down projections (the paper's choice)."""
    available = linear_module_names(model)
    ia3 = config.ia3
    if ia3.target_modules == "auto":
        targets = [n for n in available if n in IA3_KEY_VALUE or n in IA3_FEEDFORWARD]
    else:
        targets = list(ia3.target_modules)
    missing = [n for n in targets if n not in available]
    if missing or not targets:
        raise ValueError(f"ia3.target_modules: {missing or 'none found'} not in the model; its linear layers are {available}")
    if ia3.feedforward_modules == "auto":
        feedforward = [n for n in targets if n in IA3_FEEDFORWARD]
    else:
        feedforward = list(ia3.feedforward_modules)
    outside = [n for n in feedforward if n not in targets]
    if outside:
        raise ValueError(f"ia3.feedforward_modules: {outside} must also be in ia3.target_modules ({targets})")
    return targets, feedforward


def _prepare_ia3(model: Any, config: Config) -> Any:
    from peft import IA3Config

    targets, feedforward = resolve_ia3_modules(model, config)
    return _peft(model, config, IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM"))


def _prepare_prompt(model: Any, config: Config) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit

    prompt = config.prompt
    init = {"prompt_tuning_init": PromptTuningInit.RANDOM}
    if prompt.init_text:
        init = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": prompt.init_text,
            "tokenizer_name_or_path": getattr(model, "name_or_path", None) or config.model,  # the folder it loaded from
        }
    return _peft(model, config, PromptTuningConfig(num_virtual_tokens=prompt.num_virtual_tokens, task_type="CAUSAL_LM", **init))


def _prepare_full(model: Any, config: Config) -> Any:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


METHODS: dict[str, Method] = {  # learning rates: docs/methods.md says where each comes from
    "lora": Method("lora", "low-rank adapters on the linear layers (PEFT); lora.use_rslora for rsLoRA", _prepare_lora,
                   saves_adapter=True, learning_rate=1e-3, config_section="lora"),
    "full": Method("full", "every weight of the model is trained", _prepare_full, saves_adapter=False,
                   learning_rate=1e-4),
    "dora": Method("dora", "weight-decomposed LoRA: magnitude vectors + low-rank direction (PEFT)", _prepare_dora,
                   saves_adapter=True, learning_rate=1e-3, config_section="lora"),
    "qlora": Method("qlora", "LoRA on a 4-bit (NF4, double quant) or 8-bit bitsandbytes base", _prepare_qlora,
                    saves_adapter=True, learning_rate=1e-3, quantized=True, config_section="quantization"),
    "ia3": Method("ia3", "(IA)^3: learned scaling vectors on key/value/MLP activations (PEFT)", _prepare_ia3,
                  saves_adapter=True, learning_rate=3e-3, config_section="ia3"),
    "prompt": Method("prompt", "prompt tuning: learned virtual tokens before every input (PEFT)", _prepare_prompt,
                     saves_adapter=True, learning_rate=3e-2, config_section="prompt"),
}


def virtual_token_count(model: Any) -> int:
    """Virtual tokens a PEFT prompt-learning model (prompt tuning) puts before the input; 0 for other models."""
    peft_config = getattr(getattr(model, "module", model), "active_peft_config", None)  # unwrap DDP
    if peft_config is None or not getattr(peft_config, "is_prompt_learning", False):
        return 0
    return int(peft_config.num_virtual_tokens)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method {name!r} can't be trained by this version of tunewise; available: {', '.join(METHODS)}")
    return METHODS[name]


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit quantized weight counts by its shape (bitsandbytes packs two
    values per element)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = 0
    for parameter in model.parameters():
        shape = getattr(getattr(parameter, "quant_state", None), "shape", None)
        total += math.prod(shape) if shape is not None else parameter.numel()
    return trainable, total
