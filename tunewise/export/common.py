"""What the export stages share: where exports live in the run directory, the sample they are checked on,
sizes on disk, and loading an export back (safetensors only)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from tunewise.example import Example
from tunewise.rundir import RunDir

MERGED = "merged"


def export_root(run: RunDir) -> Path:
    """RUN/export: merged/ and quantized folders, merge.json and quantize.json."""
    return run.export


def sample_examples(run: RunDir, n: int | None, split: str = "test") -> list[Example]:
    """The first ``n`` examples with a reference answer from RUN/data/<split>.jsonl (all when ``n`` is None)."""
    path = run.split(split)
    examples = [e for e in (Example.from_record(r) for r in run.read_split(split)) if e.reference is not None]
    if not examples:
        raise ValueError(f"{path} has no example with an assistant answer to check the export on")
    return examples[:n] if n else examples


def folder_size(path: Path) -> dict[str, int]:
    """Bytes on disk: ``total`` (every file) and ``weights`` (*.safetensors only)."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return {
        "total": sum(p.stat().st_size for p in files),
        "weights": sum(p.stat().st_size for p in files if p.suffix == ".safetensors"),
    }


def quiet_quantization_warnings() -> None:
    """bitsandbytes warns on every 8-bit matmul that fp32 inputs are cast to fp16; torchao warns about enums."""
    import logging

    # bitsandbytes logs (not warns) "MatMul8bitLt: inputs will be cast from torch.float32 to float16" on every call
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*Failed to load.*")


def export_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete model export (None when it is): tunewise writes exports into a temporary
    folder and renames it at the end, so a folder with a missing or unreadable part was cut short or made by hand."""
    import json

    folder = Path(path)
    if not folder.is_dir():
        return f"{folder} does not exist"
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{folder}/config.json is missing or unreadable"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError):
            return f"{index} is unreadable"
    else:
        shards = ["model.safetensors"]
    from safetensors import safe_open

    for shard in shards:
        try:
            with safe_open(str(folder / shard), framework="pt") as f:
                f.keys()
        except Exception:  # noqa: BLE001 - missing, truncated or not safetensors: all mean "incomplete"
            return f"{folder / shard} is missing or truncated"
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return f"{folder} has no tokenizer"
    return None


def load_exported(path: str | Path, *, device: str = "cpu", trust_remote_code: bool = False,
                  dtype: torch.dtype | None = None) -> Any:
    """A merged or quantized export, from safetensors only (a pickle checkpoint is refused), loaded through
    :func:`tunewise.models.load_model` (so a 4-bit export stays off bitsandbytes' packed CPU kernel). An incomplete
    folder (:func:`export_problem`) raises FileNotFoundError saying how to make it again.

    Quantized exports carry their ``quantization_config`` in config.json; loading them needs the library that made
    them (torchao or bitsandbytes: ``pip install 'tunewise[quant]'``). ``dtype``: None = fp32 on a CPU, the saved
    dtype elsewhere.
    """
    from tunewise.lm.loading import load_model

    problem = export_problem(path)
    if problem:
        raise FileNotFoundError(f"{path} is not a complete export ({problem}); export it again with "
                                f"`tunewise export RUN {_export_option(Path(path).name)}`")
    quiet_quantization_warnings()
    try:
        model = load_model(str(path), device=device, trust_remote_code=trust_remote_code,
                           dtype=dtype or (torch.float32 if device == "cpu" else "auto"))
    except ImportError as exc:
        raise ImportError(f"loading {path} needs a quantization library: {exc}; install it with "
                          "`pip install 'tunewise[quant]'`") from exc
    model.eval()
    return model


def _export_option(name: str) -> str:
    """The export option that makes a folder of this name (RUN/export/<name>)."""
    if name == MERGED:
        return "--merge"
    return f"--quantize {name}" if name in QUANTIZED_NAMES else "--merge` or `--quantize SCHEME"


QUANTIZED_NAMES = ("int8", "bnb-8bit", "bnb-4bit")  # the folders of tunewise/export/quantize.py's SCHEMES


def set_generation_ids(model: Any, tokenizer: Any) -> None:
    """Make the saved generation config stop at the end-of-turn token and pad with the tokenizer's pad id."""
    from tunewise.lm.generate import stop_token_ids

    generation_config = model.generation_config
    generation_config.eos_token_id = stop_token_ids(tokenizer, model)
    generation_config.pad_token_id = tokenizer.pad_token_id
