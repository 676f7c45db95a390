"""Merge a trained PEFT adapter into its base model, save it, and prove the saved model answers as the adapter did.

The merge itself is PEFT's ``merge_and_unload`` (LoRA, DoRA, IA3, ... : every tuner that can merge). What tunewise
adds is the check the popular tools skip: the merged model is reloaded *from disk* and compared with the adapter
model on a sample of the test set (the maximum absolute logit difference over every real token position, and the
greedy answers token for token). If either check fails, nothing is left in RUN/export/merged and an error says why.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from tunewise.config import Config
from tunewise.example import Example
from tunewise.export.common import (
    MERGED,
    export_root,
    folder_size,
    sample_examples,
    set_generation_ids,
)
from tunewise.lm.chat import encode_examples
from tunewise.lm.collate import PadCollator
from tunewise.lm.generate import generate
from tunewise.lm.loading import load_model, load_tokenizer
from tunewise.rundir import RunDir, atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

# PEFT methods that add virtual tokens instead of changing weights: there is nothing to fold into the base
_UNMERGEABLE = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT", "CPT"}


class MergeVerificationError(RuntimeError):
    """The merged model does not reproduce the adapter model; the merged folder was not kept."""


def default_atol(dtype: torch.dtype) -> float:
    """Tolerance on the max absolute logit difference: float32 merges agree to ~1e-5; half precision to ~1e-2."""
    return 1e-3 if dtype == torch.float32 else 5e-2


def adapter_config(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "adapter_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def trained_on_quantized_base(config: Config) -> bool:
    """QLoRA-style runs train the adapter against a 4-/8-bit base; the merge goes into the dequantized weights."""
    return config.method.lower().startswith("qlora") or getattr(getattr(config, "quantization", None), "bits", None) in (4, 8)


@torch.inference_mode()
def token_logits(model: Any, tokenizer: Any, examples: list[Example]) -> list[torch.Tensor]:
    """Per example, the logits at every real (non-pad) position of the full conversation, in float32."""
    encoded = encode_examples(examples, tokenizer)
    batch = PadCollator(tokenizer.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded])
    device = next(model.parameters()).device
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    return [logits[i, : len(e.input_ids)].float().cpu() for i, e in enumerate(encoded)]


def compare_models(
    reference: dict[str, Any], candidate: dict[str, Any], examples: list[Example]
) -> dict[str, Any]:
    """Max abs logit difference and greedy agreement between two ``{"logits", "outputs"}`` measurements."""
    diffs = [(a - b).abs().max().item() for a, b in zip(reference["logits"], candidate["logits"])]
    mismatches = [
        {"index": i, "input": ex.prompt_messages[-1].get("content") if ex.prompt_messages else "",
         "adapter": ref["text"], "merged": out["text"]}
        for i, (ex, ref, out) in enumerate(zip(examples, reference["outputs"], candidate["outputs"]))
        if ref["tokens"] != out["tokens"]
    ]
    return {
        "max_abs_logit_diff": max(diffs),
        "mean_max_abs_logit_diff": sum(diffs) / len(diffs),
        "positions_compared": sum(len(x) for x in reference["logits"]),
        "greedy_identical": len(examples) - len(mismatches),
        "greedy_compared": len(examples),
        "mismatches": mismatches[:10],
    }


def measure(model: Any, tokenizer: Any, examples: list[Example], max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """Logits on the full conversations and greedy answers (with their token ids) for ``examples``."""
    outputs = generate(model, tokenizer, [e.prompt_messages for e in examples], max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
    for out in outputs:
        out["tokens"] = tokenizer.encode(out["text"], add_special_tokens=False)
    return {"logits": token_logits(model, tokenizer, examples), "outputs": outputs}


def merge_run(
    config: Config,
    run_dir: str | Path,
    *,
    sample: int = 16,
    atol: float | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Merge RUN/model (a PEFT adapter) into the base, save RUN/export/merged, verify it, write RUN/export/merge.json.

    Raises ValueError when RUN/model is not a mergeable adapter, and MergeVerificationError when the reloaded
    merged model's logits differ from the adapter's by more than ``atol`` or any greedy answer differs.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = RunDir.of(run_dir)
    model_dir = run.require("model", hint="train first: `tunewise train RUN`")
    peft_config = adapter_config(model_dir)
    if peft_config is None:
        raise ValueError(
            f"{model_dir} is a full fine-tuned model, so there is no adapter to merge; quantize or serve it as it is "
            "(`tunewise export RUN --quantize int8`)"
        )
    peft_type = str(peft_config.get("peft_type", "unknown")).upper()
    if peft_type in _UNMERGEABLE:
        raise ValueError(f"{peft_type} adds virtual tokens rather than changing weights, so it can't be merged; "
                         "serve the adapter itself (`tunewise serve RUN`)")
    atol = default_atol(dtype) if atol is None else atol
    examples = sample_examples(run, sample)
    started = time.time()

    tokenizer = load_tokenizer(str(model_dir), trust_remote_code=config.trust_remote_code)
    dequantized = trained_on_quantized_base(config)
    # A QLoRA base is loaded here without its quantization config: the adapter is merged into dequantized weights.
    base = load_model(config.model, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code)
    adapter = PeftModel.from_pretrained(base, str(model_dir)).to(device).eval()
    max_new, batch = config.eval.max_new_tokens, config.eval.batch_size
    reference = measure(adapter, tokenizer, examples, max_new, batch)
    merged = adapter.merge_and_unload()  # folds the adapter into `base` in place
    del adapter

    target = export_root(run) / MERGED
    report: dict[str, Any] = {
        "peft_type": peft_type,
        "base": config.model,
        "adapter": str(model_dir),
        "output": str(target),
        "dtype": str(dtype).replace("torch.", ""),
        "dequantized_base": dequantized,
        "note": (
            "merged into the dequantized base: the adapter was trained against quantized weights, so serving the merged "
            "model is not bit-identical to serving adapter + quantized base" if dequantized else None
        ),
        "sample": len(examples),
        "atol": atol,
    }
    with atomic_dir(target) as tmp:
        set_generation_ids(merged, tokenizer)
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del merged, base
        reloaded = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=dtype, use_safetensors=True).to(device).eval()
        check = compare_models(reference, measure(reloaded, tokenizer, examples, max_new, batch), examples)
        report.update(check)
        report["verified"] = check["max_abs_logit_diff"] <= atol and check["greedy_identical"] == len(examples)
        report["size_bytes"] = folder_size(tmp)
        report["seconds"] = round(time.time() - started, 2)
        if not report["verified"]:
            atomic_write_json(run.merge_report, report)
            raise MergeVerificationError(
                f"the merged model does not reproduce the adapter: max |logit diff| {check['max_abs_logit_diff']:.3g} "
                f"(allowed {atol:g}), greedy answers identical on {check['greedy_identical']}/{len(examples)}; nothing "
                f"was saved. Details in {run.merge_report}; try merging in float32 (`--dtype float32`)"
            )
    atomic_write_json(run.merge_report, report)
    log.debug("merged %s into %s: max |logit diff| %.3g", peft_type, target, report["max_abs_logit_diff"])
    return report
