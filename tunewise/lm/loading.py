"""Load models: a base causal LM and its tokenizer from a name tunewise knows, a local folder or a hub id; and what
any path names (:func:`classify`: a run, an adapter folder, a model folder or a name) with the one loader every stage
uses for it (:func:`load_source`), so an adapter gets the same base everywhere: a QLoRA run's adapter goes on its base
quantized as in training, in evaluation, serving and export alike."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunewise.config import Config
from tunewise.lm.device import precision_for

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
    where bitsandbytes' 4-bit layers are kept off its packed CPU kernel (tunewise/lm/bnb_cpu.py). A folder saved
    quantized (its config.json has a ``quantization_config``) is placed on ``device`` by ``device_map``, as a model
    quantized on load is (quantized weights can't be moved with ``.to``)."""
    from transformers import AutoModelForCausalLM

    from tunewise.lm.bnb_cpu import keep_off_packed_cpu_kernel

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
    try:
        return "quantization_config" in json.loads(config.read_text(encoding="utf-8"))
    except ValueError:
        return False


def load_base(config: Config, *, dtype: torch.dtype, device: str) -> Any:
    """The base model of ``config``: quantized through bitsandbytes for a quantized method (QLoRA), else in ``dtype``."""
    from tunewise.lm.adapters import get_method

    quantization_config = None
    if get_method(config.method).quantized and config.quantization is not None:
        from tunewise.lm.quantization import bnb_config

        quantization_config = bnb_config(config.quantization, dtype)
    return load_model(config.model, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code,
                      quantization_config=quantization_config)


def load_for_training(config: Config, method: Any) -> tuple[Any, Any, torch.dtype]:
    """The base model on its device, prepared for ``method`` (adapters added, base frozen, k-bit prepared); returns
    (model, precision, dtype). LoRA-style methods keep the frozen base in the half-precision dtype on GPU; full
    fine-tuning keeps fp32 master weights and trains under autocast."""
    precision = precision_for(config)
    dtype = precision.dtype if method.saves_adapter else torch.float32
    model = load_base(config, dtype=dtype, device=precision.device)
    model.config.use_cache = False
    return method.prepare(model, config), precision, dtype


@dataclass(frozen=True)
class ModelSource:
    """What a path or name given by the user is, and how to load it.

    ``kind``: "run" (a run directory: its RUN/model), "adapter" (a PEFT adapter folder), "model" (a full model
    folder: a merged or quantized export, any Hugging Face folder), "gguf" (a GGUF file) or "name" (a hub id or a
    built-in name).
    ``path``: the weights; ``base``: the base model an adapter goes on (None for a full model); ``config``: a run's
    config, which says how its base is loaded (quantized as in training) and whether remote code is trusted."""

    kind: str
    path: str
    name: str
    base: str | None = None
    config: Config | None = None
    run_dir: Path | None = None

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.config and self.config.trust_remote_code)

    @property
    def is_adapter(self) -> bool:
        return self.base is not None


BASE_FILE = "tunewise_base.json"
"""In an adapter folder tunewise saved: the base as the run loaded it (name, local path, hash); its
adapter_config.json names the portable base (a hub id where known: tunewise/model_card.py)."""


def local_base(adapter_dir: Path) -> str | None:
    """The base a tunewise adapter folder was trained on, when it is on this machine (a built-in name or an existing
    folder from tunewise_base.json); None otherwise (then base_model_name_or_path, a hub id, is the way)."""
    try:
        ref = json.loads((Path(adapter_dir) / BASE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if ref.get("name") in BUILTIN:
        return ref["name"]
    local = ref.get("local")
    return local if local and Path(local).is_dir() else None


def load_gguf(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file, through transformers' GGUF reader (weights dequantized to float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _adapter_base(folder: Path) -> str | None:
    """The base of an adapter folder: the local copy its run trained on when present (:func:`local_base`), else its
    ``base_model_name_or_path``; None when ``folder`` holds no adapter."""
    file = folder / "adapter_config.json"
    if not file.is_file():
        return None
    base = local_base(folder) or json.loads(file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{file} names no base_model_name_or_path; set it to the base model's folder or hub id")
    return base


def classify(target: str | Path) -> ModelSource:
    """What ``target`` names: a run directory, an adapter folder, a full model folder, or a hub id / built-in name.
    The one place tunewise tells these apart (eval, serve, export, chat and decide all ask here)."""
    from tunewise.rundir import RunDir
    from tunewise.runs import config_of_run

    path = Path(target).expanduser()
    if path.suffix == ".gguf" and path.is_file():  # a GGUF export (tunewise export --gguf)
        return ModelSource("gguf", str(path), path.name)
    if RunDir.of(path).config.is_file():
        config, run = config_of_run(path)
        if not run.model.is_dir():
            raise FileNotFoundError(f"{path} is a run directory without a trained model ({run.model}); train it "
                                    f"first: `tunewise train {path}`")
        adapter = (run.model / "adapter_config.json").is_file()
        return ModelSource("run", str(run.model), path.name, config.model if adapter else None, config, run.root)
    if path.is_dir():
        base = _adapter_base(path)
        if base is not None:
            return ModelSource("adapter", str(path), path.name, base)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model folder (no config.json), an adapter folder (no "
                                    "adapter_config.json) or a run directory (no config.yaml)")
        # RUN/export/merged is called RUN-merged
        name = f"{path.parent.parent.name}-{path.name}" if path.parent.name == "export" else path.name
        return ModelSource("model", str(path), name)
    return ModelSource("name", str(target), str(target).replace("/", "_"))


def load_adapter_base(source: ModelSource, *, dtype: torch.dtype, device: str, trust_remote_code: bool = False) -> Any:
    """The base an adapter ``source`` goes on: a run's base as its training loaded it (quantized for QLoRA), an adapter
    folder's ``base_model_name_or_path`` as is."""
    if source.config is not None:
        return load_base(source.config, dtype=dtype, device=device)
    try:
        return load_model(str(source.base), dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(f"cannot load the adapter's base model {source.base!r} ({err}); fix "
                                f"base_model_name_or_path in {Path(source.path) / 'adapter_config.json'}") from err


def base_key(source: ModelSource) -> tuple[Any, ...]:
    """Adapters whose sources have equal keys can share one loaded base (same model, same quantization, same trust)."""
    config = source.config
    quantized = None
    if config is not None:
        from tunewise.lm.adapters import get_method

        if get_method(config.method).quantized and config.quantization is not None:
            quantized = config.quantization.model_dump_json()
    return (source.base, source.trust_remote_code, quantized)


def load_source(source: ModelSource, *, device: str, dtype: Any, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) for ``source``; an adapter is put on its base (:func:`load_adapter_base`). Remote code runs
    when the run's config or ``trust_remote_code`` says so."""
    if source.kind == "gguf":
        return load_gguf(source.path)
    trust = source.trust_remote_code or trust_remote_code
    tokenizer_from = source.path
    if source.is_adapter and not (Path(source.path) / "tokenizer_config.json").is_file():
        tokenizer_from = str(source.base)
    tokenizer = load_tokenizer(tokenizer_from, trust_remote_code=trust)
    if not source.is_adapter:
        return load_model(source.path, dtype=dtype, device=device, trust_remote_code=trust), tokenizer
    from peft import PeftModel

    base = load_adapter_base(source, dtype=dtype, device=device, trust_remote_code=trust)
    model = PeftModel.from_pretrained(base, source.path)
    # a quantized base was placed by device_map and can't be moved
    return (model if getattr(base, "hf_quantizer", None) is not None else model.to(device)), tokenizer
