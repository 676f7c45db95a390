"""bitsandbytes quantization of a base model for QLoRA (4-bit NF4/FP4 or 8-bit), for training and evaluation alike."""

from __future__ import annotations

from typing import Any

import torch

from tunewise.config import QuantizationConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def compute_dtype(quantization: QuantizationConfig, precision_dtype: torch.dtype) -> torch.dtype:
    """The dtype the dequantized matmuls run in: the config's, or the training precision (fp32 on CPU) for ``auto``."""
    return precision_dtype if quantization.compute_dtype == "auto" else _DTYPES[quantization.compute_dtype]


def bnb_config(quantization: QuantizationConfig, precision_dtype: torch.dtype) -> Any:
    """A transformers ``BitsAndBytesConfig`` for ``quantization``. Raises ImportError with the install line."""
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise ImportError(f"method qlora needs bitsandbytes ({exc}); install it with `pip install bitsandbytes`") from exc
    if quantization.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(quantization, precision_dtype),
    )
