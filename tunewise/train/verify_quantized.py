"""Verify that a quantized base trains correctly before a run relies on it (as packing is verified).

On one real training batch, the gradients of the adapter's parameters are computed twice: through the quantized
base as training will run it (bitsandbytes' kernels), and through the same base with every quantized layer replaced by
a plain matmul with its dequantized weight. Both passes see the same inputs, the same dropout masks and the same
quantized weights, so a correct kernel gives the same gradients up to rounding; a kernel that computes the wrong
thing, or has no backward (bitsandbytes' packed 4-bit CPU kernel: tunewise/lm/bnb_cpu.py), gives gradients
that point elsewhere. The thresholds below come from measurements (docs/methods.md, "Verifying quantized training").
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from tunewise.lm.bnb_cpu import is_packed, keep_off_packed_cpu_kernel

log = logging.getLogger(__name__)

# Measured (docs/methods.md): a correct path gives cosine >= 0.99999 and a norm ratio within 1 +- 1e-4 (4-bit NF4/FP4
# and 8-bit, tiny model and SmolLM2-135M, fp32 compute on CPU); bitsandbytes' packed 4-bit CPU kernel gave cosine
# 0.27-0.62 and ratios 0.6-1.8. bf16/fp16 compute (GPUs) rounds more: the margins leave room for it.
MIN_COSINE = 0.99
NORM_RATIO = (0.9, 1.1)


class QuantizedTrainingError(ValueError):
    """The quantized base would train wrongly on this machine; the message says why and what to do. (A ValueError,
    so the CLI shows it as one line with exit code 2.)"""


@dataclass
class GradientCheck:
    """The adapter's gradients through the quantized base (q) against the dequantized base (d)."""

    cosine: float  # of the flattened gradients
    norm_ratio: float  # |q| / |d|
    worst_cosine: float  # lowest per-parameter cosine (parameters with a gradient in the reference)
    worst_parameter: str
    path: str  # the library path the quantized pass took
    packed_layers: int  # 4-bit layers in bitsandbytes' packed CPU layout during the check

    @property
    def ok(self) -> bool:
        return (math.isfinite(self.cosine) and self.cosine >= MIN_COSINE
                and NORM_RATIO[0] <= self.norm_ratio <= NORM_RATIO[1])

    def to_dict(self) -> dict[str, Any]:
        return {"cosine": self.cosine, "norm_ratio": self.norm_ratio, "worst_cosine": self.worst_cosine,
                "worst_parameter": self.worst_parameter, "path": self.path, "packed_layers": self.packed_layers,
                "ok": self.ok, "min_cosine": MIN_COSINE, "norm_ratio_range": list(NORM_RATIO)}


# ------------------------------------------------------------------------------------------ the quantized layers


def quantized_linears(model: torch.nn.Module) -> list[tuple[str, Any]]:
    """(name, module) of every bitsandbytes 4-bit or 8-bit linear layer in ``model``."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return []
    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def library_path(model: torch.nn.Module) -> str:
    """The quantized kernels a model's layers run through, in words (for messages and the run's records)."""
    layers = quantized_linears(model)
    if not layers:
        return "no quantized layers"
    import bitsandbytes as bnb

    module = layers[0][1]
    device = module.weight.device.type
    if isinstance(module, bnb.nn.Linear4bit):
        state = module.weight.quant_state
        packed = sum(is_packed(m) for _, m in layers)
        kind = (f"4-bit {getattr(state, 'quant_type', '?')}{' double-quant' if getattr(state, 'nested', False) else ''}"
                f" (Linear4bit, compute {str(module.compute_dtype or 'auto').replace('torch.', '')})")
        kernel = (f", packed avx512_bf16 CPU kernel on {packed} of {len(layers)} layers" if packed else
                  ", dequantize + matmul" if device == "cpu" else "")
    else:
        kind, kernel = "8-bit LLM.int8() (Linear8bitLt)", ""
    return f"bitsandbytes {bnb.__version__} {kind} on {device}{kernel}"


def dequantized_weight(module: Any, dtype: torch.dtype) -> torch.Tensor:
    """A quantized layer's weight as a plain (out_features, in_features) tensor: exactly the values its kernel is
    meant to multiply by (a packed 4-bit layer is read through bitsandbytes' own inverse, on a copy)."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import (
        _convert_weight_packed_for_cpu_inverse,
        dequantize_4bit,
    )

    weight = module.weight
    if isinstance(module, bnb.nn.Linear4bit):
        data, state = weight.data, weight.quant_state
        if is_packed(module):
            data, state = _convert_weight_packed_for_cpu_inverse(data.clone(), copy.deepcopy(state))
        return dequantize_4bit(data, state).to(dtype)
    cb = module.state.CB if module.state.CB is not None else getattr(weight, "CB", None)
    scb = module.state.SCB if module.state.SCB is not None else getattr(weight, "SCB", None)
    if cb is None or scb is None:  # has_fp16_weights: the weight is a plain float tensor
        return weight.data.to(dtype)
    return (cb.float() * (scb.float()[:, None] / 127.0)).to(dtype)


class _DequantizedLinear(torch.autograd.Function):
    """x @ W.T with W dequantized in the forward and again in the backward: nothing of W's size is kept between
    them, so the reference pass costs no more memory than the quantized one. W is frozen: no gradient for it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: Any, dtype: torch.dtype) -> torch.Tensor:
        ctx.module, ctx.dtype = module, dtype
        return x @ dequantized_weight(module, dtype).t()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad @ dequantized_weight(ctx.module, ctx.dtype), None, None


def _reference_forward(module: Any, x: torch.Tensor) -> torch.Tensor:
    compute = getattr(module, "compute_dtype", None) or x.dtype
    out = _DequantizedLinear.apply(x.to(compute), module, compute)
    if module.bias is not None:
        out = out + module.bias.to(compute)
    return out.to(x.dtype)


@contextmanager
def dequantized(model: torch.nn.Module) -> Iterator[int]:
    """Within the block, every quantized linear layer of ``model`` multiplies by its dequantized weight in plain
    torch (adapters on top of them are untouched). Yields the number of layers replaced."""
    layers = [m for _, m in quantized_linears(model)]
    for module in layers:
        module.forward = lambda x, module=module: _reference_forward(module, x)  # the instance attribute wins
    try:
        yield len(layers)
    finally:
        for module in layers:
            del module.forward


# ------------------------------------------------------------------------------------------------ the check


def adapter_gradients(model: Any, batch: dict[str, torch.Tensor], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Gradients of the trainable parameters for one batch, with training's loss, in training mode, with the RNG
    (dropout) seeded; the model's RNG state and any gradients it held are restored."""
    from tunewise.lm.loss import sparse_causal_lm_loss

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    held = [p.grad for _, p in params]
    was_training = model.training
    device = params[0][1].device if params else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        for _, p in params:
            p.grad = None
        model.train()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            loss, _ = sparse_causal_lm_loss(model, {k: v.to(device) for k, v in batch.items()})
            loss.backward()
        return {n: (p.grad.detach().float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32))
                for n, p in params}
    finally:
        for (_, p), grad in zip(params, held):
            p.grad = grad
        model.train(was_training)


def compare_gradients(quantized: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> tuple[float, float, float, str]:
    """(cosine, norm ratio |q|/|d|, worst per-parameter cosine, its name) of two gradient sets."""
    q = torch.cat([g.flatten() for g in quantized.values()]).double()
    d = torch.cat([reference[n].flatten() for n in quantized]).double()
    dn, qn = float(d.norm()), float(q.norm())
    cosine = float(q @ d) / (qn * dn) if qn and dn else (1.0 if qn == dn else 0.0)
    worst, worst_name = 1.0, ""
    floor = 1e-6 * dn  # parameters whose reference gradient is ~0 (LoRA A at initialisation) say nothing
    for name, g in quantized.items():
        r = reference[name].double().flatten()
        rn = float(r.norm())
        if rn <= floor:
            continue
        gn = float(g.double().norm())
        c = float(g.double().flatten() @ r) / (gn * rn) if gn else 0.0
        if c < worst:
            worst, worst_name = c, name
    return cosine, (qn / dn if dn else math.inf), worst, worst_name


def check_quantized_gradients(model: Any, batch: dict[str, torch.Tensor], *, seed: int = 0) -> GradientCheck:
    """Measure (module docstring) without judging; the model is left as it was."""
    if not quantized_linears(model):
        raise ValueError("the model has no bitsandbytes-quantized layer to check")
    packed = sum(is_packed(m) for _, m in quantized_linears(model))
    path = library_path(model)
    quantized = adapter_gradients(model, batch, seed=seed)
    with dequantized(model):
        reference = adapter_gradients(model, batch, seed=seed)
    cosine, ratio, worst, worst_name = compare_gradients(quantized, reference)
    return GradientCheck(cosine, ratio, worst, worst_name, path, packed)


def failure_message(check: GradientCheck) -> str:
    """One message: what is wrong, which library path, what to do."""
    cause = (f"bitsandbytes' packed 4-bit CPU kernel (gemv_4bit, which has no backward) was active on "
             f"{check.packed_layers} layers" if check.packed_layers else f"the kernels of {check.path}")
    return (f"quantized training check failed: on one training batch the adapter's gradients through the quantized "
            f"base differ from those through the same base dequantized (cosine {check.cosine:.4f}, norm ratio "
            f"{check.norm_ratio:.3f}; a correct kernel gives cosine >= {MIN_COSINE} and a ratio within "
            f"{NORM_RATIO[0]}-{NORM_RATIO[1]}), so QLoRA would not learn what the data says. Cause: {cause} "
            f"({check.path}). Use method: lora, or quantization.bits: {8 if '4-bit' in check.path else 4}, or install "
            "the bitsandbytes version tunewise was tested with (constraints.txt; `tunewise doctor` compares)")


def verify_quantized_training(model: Any, batch: dict[str, torch.Tensor], *, seed: int = 0) -> GradientCheck:
    """Check, and raise :class:`QuantizedTrainingError` when the quantized base would train wrongly.

    The automatic fallback: layers found in bitsandbytes' packed CPU layout are moved off it and checked again
    (a warning says so); only a path that is still wrong stops the run."""
    check = check_quantized_gradients(model, batch, seed=seed)
    if not check.ok and check.packed_layers:
        moved = check.packed_layers
        keep_off_packed_cpu_kernel(model)
        first = check
        check = check_quantized_gradients(model, batch, seed=seed)
        if check.ok:
            log.warning("quantized training check: %d 4-bit layers were on bitsandbytes' packed CPU kernel, whose "
                        "gradients are wrong (cosine %.3f); tunewise moved them to the unpacked path (cosine %.6f)",
                        moved, first.cosine, check.cosine)
    if not check.ok:
        raise QuantizedTrainingError(failure_message(check))
    log.debug("quantized training check passed: cosine %.6f, norm ratio %.6f (%s)", check.cosine, check.norm_ratio,
              check.path)
    return check


def probe_batch(collator: Any, features: list[dict[str, Any]], n: int = 2) -> dict[str, torch.Tensor]:
    """The batch the check runs on: the collator training uses, on up to ``n`` of the shortest training examples
    that have a trained token (cheap, and the same batch shape training feeds)."""
    usable = [f for f in features if any(y != -100 for y in f["labels"][1:])]
    chosen = sorted(usable or features, key=lambda f: len(f["input_ids"]))[:n]
    batch = collator([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in chosen])
    return {k: v for k, v in batch.items()}



def check_on_this_machine(config: Any, run_dir: Any) -> dict[str, Any]:
    """Load the base as ``config`` (a qlora config) trains it and run the check on a batch of the run's prepared
    training data, as a training run would (the automatic fallback included). For ``tunewise advise``, which must not
    recommend QLoRA where it would train wrongly: {"ok", the numbers, "message" when it fails}."""
    from tunewise.example import Example
    from tunewise.lm.adapters import get_method
    from tunewise.lm.chat import encode_examples
    from tunewise.lm.collate import PadCollator
    from tunewise.lm.loading import load_tokenizer
    from tunewise.rundir import RunDir
    from tunewise.lm.loading import load_for_training

    run = RunDir.of(run_dir)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    records = run.read_split("train")
    encoded = encode_examples([Example.from_record(r) for r in records[:64]], tokenizer, loss_on=config.training.loss_on,
                              max_tokens=config.data.max_tokens)
    model, _, _ = load_for_training(config, get_method(config.method))
    batch = probe_batch(PadCollator(tokenizer.pad_token_id), [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded])
    try:
        return {**verify_quantized_training(model, batch).to_dict()}
    except QuantizedTrainingError as exc:
        return {**check_quantized_gradients(model, batch).to_dict(), "ok": False, "message": str(exc)}
