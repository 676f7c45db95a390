"""Load a base causal LM and its tokenizer from a name tunewise knows, a local folder or a hub id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

BUILTIN = ("smollm2-135m", "tiny")


def resolve_model(name: str) -> str:
    """Turn ``smollm2-135m`` / ``tiny`` into their local folders; a folder or a hub id is returned as is."""
    if name == "smollm2-135m":
        from tunewise.models.smollm2 import ensure_smollm2

        return str(ensure_smollm2())
    if name == "tiny":
        from tunewise.models.tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    path = Path(name).expanduser()
    if path.exists():
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json", "tokenizer_config.json")):
            raise FileNotFoundError(
                f"model folder {name!r} has no config.json (nor adapter_config.json); point `model:` at a Hugging Face "
                "model folder"
            )
        return str(path)
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder {name!r} does not exist")
    return name  # a hub id; transformers reports a clear error if it can't be reached


def load_tokenizer(name: str, *, trust_remote_code: bool = False, padding_side: str = "left") -> Any:
    """The model's tokenizer, with a pad token (eos when it has none) and left padding for generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    if not tokenizer.chat_template:
        raise ValueError(
            f"the tokenizer of {name!r} has no chat template; use an instruct/chat model or a model folder whose "
            "tokenizer_config.json has one"
        )
    return tokenizer


def load_model(
    name: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str = "cpu",
    trust_remote_code: bool = False,
    quantization_config: Any = None,
) -> Any:
    """A causal LM in ``dtype`` on ``device``, from safetensors only (pickle checkpoints are refused).

    Every model tunewise trains, evaluates, exports, benchmarks or serves is loaded here, so this is the one place
    where bitsandbytes' 4-bit layers are kept off its packed CPU kernel (tunewise/models/bnb_cpu.py). A folder saved
    quantized (its config.json has a ``quantization_config``) is placed on ``device`` by ``device_map``, as a model
    quantized on load is (quantized weights can't be moved with ``.to``)."""
    from transformers import AutoModelForCausalLM

    from tunewise.models.bnb_cpu import keep_off_packed_cpu_kernel

    path = resolve_model(name)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    placed = quantization_config is not None or saved_quantized(path)
    if placed:
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not placed:
        model.to(device)
    keep_off_packed_cpu_kernel(model)
    return model


def saved_quantized(path: str) -> bool:
    """True for a local model folder whose config.json carries a ``quantization_config`` (a quantized export)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    import json

    try:
        return "quantization_config" in json.loads(config.read_text(encoding="utf-8"))
    except ValueError:
        return False
