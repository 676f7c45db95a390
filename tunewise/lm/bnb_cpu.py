"""bitsandbytes' packed 4-bit CPU kernel, and why tunewise keeps every 4-bit layer off it.

On CPUs with ``avx512_bf16`` (bitsandbytes 0.50.2 reads the flag once per layer, when the layer is built, into
``Linear4bit.support_avx512bf16_for_cpu``), a ``Linear4bit`` that runs in eval mode without gradients repacks its
weights in place for a fused CPU kernel (``bitsandbytes.functional._convert_weight_packed_for_cpu``) and from then on
multiplies through ``gemv_4bit``. Measured with bitsandbytes 0.50.2 (docs/methods.md, "Quantized bases on the CPU"):

* the repacking assumes ``in_features`` is a multiple of the quantization block size (64) and ``out_features`` of
  32: other layers crash (``shape '[96, 1]' is invalid for input of size 144`` on the tiny model);
* ``gemv_4bit`` has no backward: a layer that was repacked by an evaluation pass (or tunewise's packing check) and
  is then trained through gets no gradient to its input (torch warns "autograd kernel was not registered ... silently
  incorrect") and 4-bit QLoRA stops learning;
* the kernel computes in bf16 whatever ``bnb_4bit_compute_dtype`` says, so the same 4-bit model answers differently
  on CPUs with and without the flag.

So tunewise turns the flag off on every 4-bit layer it loads (:func:`keep_off_packed_cpu_kernel`, called by
:func:`tunewise.lm.loading.load_model`, which training, evaluation, export, bench and serve all load through):
the unpacked path (dequantize + matmul in the compute dtype) runs on every CPU, trains correctly and gives the same
numbers everywhere. What it costs in speed on an ``avx512_bf16`` CPU could not be measured on the machines tunewise
is developed on (none has the flag); ``tunewise doctor`` says whether a machine would take the packed path.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterator

import torch

log = logging.getLogger(__name__)

PACK_BLOCK_N = 32  # bitsandbytes' _convert_weight_packed_for_cpu(block_n=32): rows are packed in groups of 32


def cpu_has_avx512_bf16() -> bool:
    """What bitsandbytes itself decides (its native ``has_avx512bf16_cpu``); False without bitsandbytes."""
    try:
        from bitsandbytes.functional import has_avx512bf16
    except Exception:  # noqa: BLE001 - no bitsandbytes, or one that fails to load: no packed path either
        return False
    return bool(has_avx512bf16())


def linear4bit_modules(model: torch.nn.Module) -> Iterator[tuple[str, Any]]:
    """(name, module) of every bitsandbytes ``Linear4bit`` in ``model`` (none when bitsandbytes is not imported:
    a model cannot hold one then)."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            yield name, module


def packable(in_features: int, out_features: int, blocksize: int = 64) -> bool:
    """Whether bitsandbytes' repacking can take a layer of this shape (in_features = K, out_features = N)."""
    return in_features % blocksize == 0 and in_features % 2 == 0 and out_features % PACK_BLOCK_N == 0


def is_packed(module: Any) -> bool:
    """True when this Linear4bit's weight is already in the packed CPU layout."""
    return bool(getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False))


def unpack(module: Any) -> None:
    """Return a packed Linear4bit's weight to the standard layout (bitsandbytes' own inverse)."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
        module.weight.data, module.weight.quant_state)
    if getattr(module, "quant_state", None) is not None:
        module.quant_state = module.weight.quant_state


def pack_for_cpu(model: torch.nn.Module) -> int:
    """Repack every 4-bit layer whose shape allows it into the packed CPU layout, as bitsandbytes' own eval-mode
    forward does on an ``avx512_bf16`` CPU: lets tests and measurements take that path on any CPU (on one without
    the flag the packed layout is then multiplied by bitsandbytes' generic kernel). Returns the layers packed."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    packed = 0
    for _, module in linear4bit_modules(model):
        state = module.weight.quant_state
        if is_packed(module) or not packable(module.in_features, module.out_features, state.blocksize):
            continue
        module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu(module.weight.data, state)
        module.quant_state = module.weight.quant_state
        packed += 1
    return packed


def keep_off_packed_cpu_kernel(model: torch.nn.Module) -> int:
    """Keep every 4-bit layer of ``model`` on the unpacked path (module docstring); layers already packed are
    unpacked. Returns how many layers would otherwise have taken the packed path (0 on CPUs without the flag)."""
    would = 0
    for _, module in linear4bit_modules(model):
        if getattr(module, "support_avx512bf16_for_cpu", False):
            would += 1
        module.support_avx512bf16_for_cpu = False
        if is_packed(module):
            unpack(module)
    if would:
        log.debug("kept %d 4-bit layers off bitsandbytes' packed avx512_bf16 CPU kernel", would)
    return would


def packed_path_report(model: torch.nn.Module | None = None) -> dict[str, Any]:
    """What bitsandbytes would do on this CPU: whether it has the packed kernel, and for ``model`` how many 4-bit
    layers it would repack, how many of them crash (shape) and how many are packed now."""
    report: dict[str, Any] = {"cpu_avx512_bf16": cpu_has_avx512_bf16()}
    if model is not None:
        layers = list(linear4bit_modules(model))
        blocks = [getattr(m.weight.quant_state, "blocksize", 64) if m.weight.quant_state is not None else 64
                  for _, m in layers]
        report.update(
            layers=len(layers),
            unpackable_shapes=sum(not packable(m.in_features, m.out_features, b) for (_, m), b in zip(layers, blocks)),
            packed_now=sum(is_packed(m) for _, m in layers),
            flag_on=sum(bool(getattr(m, "support_avx512bf16_for_cpu", False)) for _, m in layers),
        )
    return report
