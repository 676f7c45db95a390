"""What the export stages share: where exports live in the run directory, the sample they are checked on,
sizes on disk, and loading an export back (safetensors only)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from tunewise.data.example import Example
from tunewise.rundir import RunDir, read_jsonl

MERGED = "merged"


def export_root(run: RunDir) -> Path:
    """RUN/export: merged/ and quantized folders, merge.json and quantize.json."""
    return run.root / "export"


def sample_examples(run: RunDir, n: int | None, split: str = "test") -> list[Example]:
    """The first ``n`` examples with a reference answer from RUN/data/<split>.jsonl (all when ``n`` is None)."""
    path = run.require("data", f"{split}.jsonl", hint="prepare the data first: `tunewise data prepare CONFIG`")
    examples = [e for e in (Example.from_record(r) for r in read_jsonl(path)) if e.reference is not None]
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


def load_exported(path: str | Path, *, device: str = "cpu", trust_remote_code: bool = False) -> Any:
    """A merged or quantized export, from safetensors only (a pickle checkpoint is refused).

    Quantized exports carry their ``quantization_config`` in config.json; loading them needs the library that made
    them (torchao or bitsandbytes: ``pip install 'tunewise[quant]'``).
    """
    from transformers import AutoModelForCausalLM

    quiet_quantization_warnings()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), use_safetensors=True, device_map={"": device}, trust_remote_code=trust_remote_code,
            dtype=torch.float32 if device == "cpu" else "auto",
        )
    except ImportError as exc:
        raise ImportError(f"loading {path} needs a quantization library: {exc}; install it with "
                          "`pip install 'tunewise[quant]'`") from exc
    model.eval()
    return model


def set_generation_ids(model: Any, tokenizer: Any) -> None:
    """Make the saved generation config stop at the end-of-turn token and pad with the tokenizer's pad id."""
    from tunewise.evaluate.generate import stop_token_ids

    generation_config = model.generation_config
    generation_config.eos_token_id = stop_token_ids(tokenizer, model)
    generation_config.pad_token_id = tokenizer.pad_token_id
