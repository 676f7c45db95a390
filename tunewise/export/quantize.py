"""Quantize the model a run ships (merged adapter or full fine-tune) for deployment, and measure what it costs.

Schemes (every one saved as safetensors + config.json, loadable with ``AutoModelForCausalLM.from_pretrained``):

* ``int8``: int8 dynamic quantization (int8 weights per channel, activations quantized per token at run time) through
  torchao's ``Int8DynamicActivationInt8WeightConfig``. ``torch.ao.quantization.quantize_dynamic`` still exists in
  torch 2.13 but is deprecated (the warning points to torchao's ``quantize_``), and its modules only save through
  pickle; torchao tensors save as safetensors through transformers' ``TorchAoConfig``, so no pickle is ever loaded.
* ``bnb-8bit``: bitsandbytes LLM.int8() (``load_in_8bit``).
* ``bnb-4bit``: bitsandbytes NF4 with double quantization (``load_in_4bit``), float32 compute on CPU.

For each, the size on disk and the quality before and after (the run's eval metrics on greedy answers and the
perplexity of the reference answers, on the test sample) go to RUN/export/quantize.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from tunewise.config import Config
from tunewise.export.common import (
    MERGED,
    export_root,
    folder_size,
    load_exported,
    quiet_quantization_warnings,
    sample_examples,
)
from tunewise.export.quality import measure_quality, quality_change
from tunewise.lm.loading import load_model, load_tokenizer
from tunewise.rundir import RunDir, atomic_dir, atomic_write_json

log = logging.getLogger(__name__)


def _torchao_int8() -> Any:
    from transformers import TorchAoConfig

    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    except ImportError as exc:
        raise ImportError("int8 quantization needs torchao: `pip install 'tunewise[quant]'`") from exc
    return TorchAoConfig(Int8DynamicActivationInt8WeightConfig())


def _bnb(bits: int) -> Callable[[], Any]:
    def make() -> Any:
        import importlib.util

        from transformers import BitsAndBytesConfig

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError(f"bnb-{bits}bit needs bitsandbytes: `pip install 'tunewise[quant]'`")
        if bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.float32)

    return make


SCHEMES: dict[str, tuple[str, Callable[[], Any]]] = {
    "int8": ("int8 dynamic quantization (torchao Int8DynamicActivationInt8Weight)", _torchao_int8),
    "bnb-8bit": ("bitsandbytes LLM.int8()", _bnb(8)),
    "bnb-4bit": ("bitsandbytes NF4, double quantization", _bnb(4)),
}


def source_model_dir(run: RunDir) -> Path:
    """What gets quantized: RUN/export/merged for an adapter run, RUN/model for a full fine-tune."""
    model_dir = run.require("model", hint="train first: `tunewise train RUN`")
    if (model_dir / "adapter_config.json").is_file():
        return run.require("export", MERGED, hint="merge the adapter first: `tunewise export RUN --merge`")
    return model_dir


def quantize_model(source: Path, scheme: str, target: Path, *, device: str = "cpu") -> Any:
    """Load ``source`` quantized with ``scheme`` and save it (safetensors) with its tokenizer into ``target``
    (written whole or not at all)."""
    with atomic_dir(target) as tmp:
        return _quantize_into(source, scheme, tmp, device=device)


def _quantize_into(source: Path, scheme: str, folder: Path, *, device: str) -> Any:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization {scheme!r}; choose from {', '.join(SCHEMES)}")
    quiet_quantization_warnings()
    model = load_model(str(source), quantization_config=SCHEMES[scheme][1](), device=device, dtype=torch.float32)
    tokenizer = load_tokenizer(str(source))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return model


def _previous_schemes(path: Path, source: str, n: int) -> dict[str, Any]:
    """Schemes an earlier call measured on the same source and sample (kept, so the report grows one scheme at a time)."""
    import json

    if not path.is_file():
        return {}
    previous = json.loads(path.read_text(encoding="utf-8"))
    return dict(previous.get("schemes") or {}) if (previous.get("source"), previous.get("n")) == (source, n) else {}


def quantize_run(
    config: Config,
    run_dir: str | Path,
    schemes: Sequence[str],
    *,
    max_examples: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Quantize the run's shipped model with each scheme into RUN/export/<scheme>; write RUN/export/quantize.json.

    Quality is measured on the reloaded export (what a user would deploy) against the unquantized source, on the
    same test examples (``max_examples`` of them, default the eval config's ``max_examples`` or all).
    """
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        raise ValueError(f"unknown quantization {unknown}; choose from {', '.join(SCHEMES)}")
    run = RunDir.of(run_dir)
    source = source_model_dir(run)
    examples = sample_examples(run, max_examples or config.eval.max_examples)
    tokenizer = load_tokenizer(str(source), trust_remote_code=config.trust_remote_code)
    quality = dict(metrics=config.eval.metrics, max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size)

    original = load_exported(source, device=device, trust_remote_code=config.trust_remote_code)
    before = measure_quality(original, tokenizer, examples, **quality)
    del original
    report: dict[str, Any] = {
        "source": str(source),
        "source_size_bytes": folder_size(source),
        "n": len(examples),
        "before": {k: v for k, v in before.items() if k != "predictions"},
        "schemes": _previous_schemes(run.quantize_report, str(source), len(examples)),
    }
    for scheme in schemes:
        target = export_root(run) / scheme
        started = time.time()
        # the folder appears only once it is saved, reloads and has been measured: a failure leaves nothing behind
        # (and an earlier export of the scheme in place)
        with atomic_dir(target) as tmp:
            _quantize_into(source, scheme, tmp, device=device)
            model = load_exported(tmp, device=device, trust_remote_code=config.trust_remote_code)
            after = measure_quality(model, tokenizer, examples, **quality)
            del model
            size = folder_size(tmp)
        report["schemes"][scheme] = {
            "description": SCHEMES[scheme][0],
            "output": str(target),
            "size_bytes": size,
            "weights_ratio": size["weights"] / report["source_size_bytes"]["weights"],
            "after": {k: v for k, v in after.items() if k != "predictions"},
            "change": quality_change(before, after),
            "seconds": round(time.time() - started, 2),
        }
        log.debug("%s: %.2f MB -> %s", scheme, size["weights"] / 1e6, after["metrics"])
        atomic_write_json(run.quantize_report, report)
    return report
