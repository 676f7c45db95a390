"""What a method puts in memory, from the model's real config: the model is built on the meta device (no weights
are loaded or allocated), the method's PEFT preparation is applied to it, and parameters and the tensors autograd
keeps for the backward pass are counted exactly.

* Parameters: :func:`tunewise.lm.adapters.count_parameters` on the meta model prepared by the method itself, so the
  trainable count is the one training reports (QLoRA: the LoRA preparation on the same target modules).
* Quantized weights (QLoRA): the bytes bitsandbytes stores, computed from shapes (meta tensors cannot be quantized).
* Activations: one forward pass of the meta model records every tensor autograd saves for backward (shapes only),
  attributed to its decoder layer. Attention is counted as a fused kernel (SDPA flash on CPU, flash/mem-efficient on
  CUDA) saves it: query, key and value (expanded to all heads when a padding mask is given), output, log-sum-exp and
  the mask. Logits are counted separately: tunewise computes them only at trained positions.
* When the meta forward fails (an architecture that needs real data in its forward), a stated per-layer formula for
  decoder-only transformers is used instead (:func:`formula_activations`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from tunewise.config import Config, config_from_dict

log = logging.getLogger(__name__)

_META_ATTENTION = "tunewise_meta_count"


def method_config(config: Config, method: str) -> Config:
    """``config`` with ``method`` swapped in (the quantization section follows: only qlora has one)."""
    raw = config.model_dump(mode="json")
    raw["method"] = method
    if method != "qlora":
        raw["quantization"] = None
    else:  # tunewise does not shard a quantized base: the qlora column is one device's
        raw["training"].update(sharding=None, fsdp=None, fsdp_config=None, deepspeed=None)
    return config_from_dict(raw)


def model_config(name: str, *, trust_remote_code: bool = False) -> Any:
    """The transformers config of a model name, local folder or hub id (no weights are read)."""
    from transformers import AutoConfig

    from tunewise.lm.loading import resolve_model

    try:
        return AutoConfig.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ValueError(
            f"cannot read the config of model {name!r}: {str(exc).splitlines()[0]}; give a local model folder, or a hub "
            "id with network access"
        ) from None


def checkpoint_bytes(name: str) -> int | None:
    """Bytes of the model's safetensors files on disk (None for a hub id that is not downloaded)."""
    from pathlib import Path

    from tunewise.lm.loading import resolve_model

    path = Path(resolve_model(name))
    if not path.is_dir():
        return None
    files = list(path.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) if files else None


@dataclass
class Parameters:
    """Parameter counts and bytes of a model prepared for a method."""

    total: int
    trainable: int
    weight_bytes: int  # resident weights as trained: quantized linears for qlora
    trainable_bytes: int  # bytes of the trainable parameters (their gradients have the same size)
    quantized_params: int = 0  # parameters stored quantized (qlora)
    quantized_bytes: int = 0
    target_modules: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def quantized_linear_bytes(out_features: int, in_features: int, *, bits: int, double_quant: bool) -> int:
    """Bytes bitsandbytes stores for one quantized ``out x in`` weight (verified against bitsandbytes 0.50 on CPU).

    4-bit: two weights per byte, one absmax per block of 64 (fp32, or uint8 plus one fp32 per 256 blocks and a
    256-entry fp32 code with double quantization) and the 16-entry fp32 NF4/FP4 code. 8-bit: one byte per weight and
    one fp32 scale per output row.
    """
    n = out_features * in_features
    if bits == 8:
        return n + 4 * out_features
    blocks = math.ceil(n / 64)
    absmax = blocks + 4 * math.ceil(blocks / 256) + 4 * 256 if double_quant else 4 * blocks
    return math.ceil(n / 2) + absmax + 4 * 16


def _quantized_modules(model: Any) -> list[tuple[str, Any]]:
    """The linear layers transformers' bitsandbytes quantizer converts (it skips the output head and tied weights)."""
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = get_keys_to_not_convert(model)
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and should_convert_module(name, skip)
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def build_meta_model(config: Config, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(base model, model prepared for ``config.method``) on the meta device; nothing is allocated."""
    from transformers import AutoModelForCausalLM

    from tunewise.lm.adapters import get_method

    hf_config = model_config(config.model, trust_remote_code=config.trust_remote_code)
    with _quiet(), torch.device("meta"):
        base = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, trust_remote_code=config.trust_remote_code)
    base.config.use_cache = False
    quantized = []
    if config.method == "qlora":
        # QLoRA = LoRA on the same targets of a quantized base: record what would be quantized before wrapping
        quantized = [(n, m.out_features, m.in_features, id(m.weight)) for n, m in _quantized_modules(base)]
        prepare_config = method_config(config, "lora")
    elif config.method == "prompt" and config.prompt.init_text:
        # initialising from text reads real embeddings; the parameter count is the same with a random init
        raw = config.model_dump(mode="json")
        raw["prompt"]["init_text"] = None
        prepare_config = config_from_dict(raw)
    else:
        prepare_config = config
    with _quiet(), torch.device("meta"):
        prepared = get_method(prepare_config.method).prepare(base, prepare_config)
    prepared._tunewise_quantized = quantized  # (name, out, in, weight id) of the linears QLoRA quantizes
    return base, prepared


def count_meta_parameters(config: Config, prepared: Any, *, dtype: torch.dtype) -> Parameters:
    """Exact counts of a meta model prepared for ``config.method``, with the bytes it holds when trained."""
    from tunewise.lm.adapters import count_parameters, resolve_target_modules

    trainable, total = count_parameters(prepared)
    trainable_bytes = sum(p.numel() * p.element_size() for p in prepared.parameters() if p.requires_grad)
    quantized = getattr(prepared, "_tunewise_quantized", [])
    quantized_params = sum(o * i for _, o, i, _ in quantized)
    quantized_bytes = 0
    if quantized:
        q = config.quantization
        assert q is not None
        quantized_bytes = sum(
            quantized_linear_bytes(o, i, bits=q.bits, double_quant=q.double_quant) for _, o, i, _ in quantized
        )
        # prepare_model_for_kbit_training casts every parameter that is not quantized to fp32
        skip = {pid for *_, pid in quantized}
        weight_bytes = quantized_bytes + sum(
            p.numel() * (4 if p.dtype in (torch.float16, torch.bfloat16) else p.element_size())
            for p in prepared.parameters() if id(p) not in skip
        )
    else:
        weight_bytes = sum(p.numel() * p.element_size() for p in prepared.parameters())
    targets: list[str] = []
    if config.method in ("lora", "dora", "qlora"):
        base = prepared.get_base_model() if hasattr(prepared, "get_base_model") else prepared
        with contextlib.suppress(ValueError):
            targets = resolve_target_modules(base, config.lora.target_modules)
    return Parameters(
        total=total, trainable=trainable, weight_bytes=weight_bytes, trainable_bytes=trainable_bytes,
        quantized_params=quantized_params, quantized_bytes=quantized_bytes, target_modules=targets,
    )


@dataclass
class ShardUnits:
    """What FSDP and ZeRO-3 hold whole at a time on each device, from the meta model: one decoder layer (the unit
    tunewise's fsdp preset shards, and gathers before its forward and backward) and the parameters outside the
    decoder layers (embeddings, final norm, an untied head: the root unit, kept gathered through forward and
    backward)."""

    layers: int
    layer_bytes: int  # the largest decoder layer's parameters
    layer_trainable_bytes: int  # its trainable parameters (their unsharded gradients exist before reduce-scatter)
    root_bytes: int  # parameters outside the decoder layers

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def shard_units(prepared: Any) -> ShardUnits:
    """The :class:`ShardUnits` of a meta model prepared for a method (each parameter counted once; tied weights too)."""
    base = prepared.get_base_model() if hasattr(prepared, "get_base_model") else prepared
    layers = _decoder_layers(base)
    in_layers: set[int] = set()
    sizes, trainable = [], []
    for layer in layers:
        params = {id(p): p for p in layer.parameters()}
        in_layers.update(params)
        sizes.append(sum(p.numel() * p.element_size() for p in params.values()))
        trainable.append(sum(p.numel() * p.element_size() for p in params.values() if p.requires_grad))
    unique = {id(p): p for p in prepared.parameters()}
    root = sum(p.numel() * p.element_size() for pid, p in unique.items() if pid not in in_layers)
    return ShardUnits(layers=len(layers), layer_bytes=max(sizes, default=0),
                      layer_trainable_bytes=max(trainable, default=0), root_bytes=root)


def _elsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# --------------------------------------------------------------------------------------------------------------------
# activations


@dataclass
class Activations:
    """Bytes autograd keeps for backward for one batch of ``batch`` rows of ``seq`` tokens."""

    batch: int
    seq: int
    per_layer: list[int]  # bytes saved inside each decoder layer
    outside: int  # bytes saved outside the decoder layers (embeddings, final norm)
    layer_input: int  # bytes of one layer's input (what gradient checkpointing keeps per layer)
    source: str  # "meta forward" or "formula"

    @property
    def total(self) -> int:
        """Saved bytes without gradient checkpointing."""
        return self.outside + sum(self.per_layer)

    @property
    def checkpointed(self) -> int:
        """Saved bytes with gradient checkpointing: each layer's input, plus one layer recomputed during backward."""
        if not self.per_layer:
            return self.outside
        return self.outside + len(self.per_layer) * self.layer_input + max(self.per_layer)

    def bytes(self, gradient_checkpointing: bool) -> int:
        return self.checkpointed if gradient_checkpointing else self.total

    def per_token_per_layer(self) -> float:
        """Mean saved bytes per token per decoder layer (the number the docs state)."""
        n = len(self.per_layer) or 1
        return sum(self.per_layer) / n / max(self.batch * self.seq, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch, "seq": self.seq, "source": self.source, "layers": len(self.per_layer),
            "bytes": self.total, "bytes_checkpointed": self.checkpointed,
            "bytes_per_token_per_layer": round(self.per_token_per_layer(), 1),
        }


class _FusedAttention(torch.autograd.Function):
    """Meta-device stand-in for a fused attention kernel: saves what SDPA's flash kernel saves for backward."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padded: bool) -> torch.Tensor:  # type: ignore[override]
        b, heads, s, _ = q.shape
        out = torch.empty_like(q)
        lse = q.new_empty((b, heads, s))
        if padded:
            # with a padding mask transformers expands key/value to every query head and the kernel keeps the mask
            k, v = k.new_empty(q.shape), v.new_empty(q.shape)
            ctx.save_for_backward(q, k, v, out, lse, q.new_empty((b, 1, s, s)))
        else:
            ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # pragma: no cover - never run on meta tensors
        raise RuntimeError("meta attention is for counting only")


def _meta_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    out = _FusedAttention.apply(query, key, value, bool(getattr(module, "_tunewise_padded", False)))
    return out.transpose(1, 2).contiguous(), None


def _decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The repeated blocks: the longest ModuleList in the model."""
    best: list[torch.nn.Module] = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            best = list(module)
    return best


def meta_activations(prepared: Any, hf_config: Any, batch: int, seq: int, *, padded: bool) -> Activations:
    """Run ``prepared`` (a meta model) on one ``batch x seq`` batch and count the bytes autograd saves per layer."""
    from transformers import AttentionInterface

    AttentionInterface.register(_META_ATTENTION, _meta_attention)
    base = prepared.get_base_model() if hasattr(prepared, "get_base_model") else prepared
    previous = base.config._attn_implementation
    # fused kernels (sdpa, flash) get a stand-in that saves what they save; eager attention runs as it is on meta
    # tensors, so its heads x seq x seq probabilities are counted as autograd saves them
    if previous != "eager":
        base.set_attn_implementation(_META_ATTENTION)
    layers = _decoder_layers(base)
    for module in base.modules():
        module._tunewise_padded = padded
    current: list[int | None] = [None]
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(lambda m, a, i=i: current.__setitem__(0, i)))
        handles.append(layer.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))
    # what backward needs is what the graph still holds when the forward ends: a tensor saved by a sub-graph that is
    # dropped during the forward (DoRA detaches its weight norm) is freed, so every saved tensor is recorded by weak
    # reference and counted only if it is alive at the end, each storage once (views and detached copies share their
    # source's storage). Meta storages have no data pointer: the StorageImpl's address (_cdata) tells live ones apart.
    param_storages = {p.untyped_storage()._cdata for p in prepared.parameters()}
    saved: list[tuple[weakref.ref, int | None]] = []
    layer_input = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append((weakref.ref(t), current[0]))
        return t

    if layers:
        handles.append(layers[0].register_forward_pre_hook(
            lambda m, args, kwargs: layer_input.__setitem__(0, _first_tensor_bytes(args, kwargs)), with_kwargs=True))
    ids = torch.zeros((batch, seq), dtype=torch.long, device="meta")
    inputs: dict[str, Any] = {"input_ids": ids}
    if previous == "eager":
        # a ready 4-D mask: transformers would otherwise read position ids' values to find packed sequences
        dtype = next(p.dtype for p in base.parameters() if p.is_floating_point())
        inputs["attention_mask"] = torch.zeros((batch, 1, seq, seq), dtype=dtype, device="meta")
    prepared.train()
    try:
        with _quiet(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            output = prepared(**inputs, logits_to_keep=1, use_cache=False)  # keeps the graph alive while counting
    finally:
        for h in handles:
            h.remove()
        if previous != "eager":
            base.set_attn_implementation(previous)
    per_layer = [0] * len(layers)
    outside = 0
    counted: set[int] = set()
    for ref, layer in saved:
        t = ref()
        if t is None:
            continue
        storage = t.untyped_storage()
        if storage._cdata in param_storages or storage._cdata in counted:
            continue
        counted.add(storage._cdata)
        if layer is None:
            outside += storage.nbytes()
        else:
            per_layer[layer] += storage.nbytes()
    del output
    return Activations(batch=batch, seq=seq, per_layer=per_layer, outside=outside, layer_input=layer_input[0],
                       source="meta forward")


def _first_tensor_bytes(args: tuple, kwargs: dict) -> int:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.numel() * value.element_size()
    return 0


def formula_activations(hf_config: Any, config: Config, batch: int, seq: int, *, dtype: torch.dtype,
                        padded: bool) -> Activations:
    """Saved bytes per decoder layer of a pre-norm decoder with a gated MLP (Llama, Mistral, Qwen, ...).

    Per token, in elements: ``4*I`` (MLP gate, up, activation, product) ``+ 4*H`` (norm outputs, residual inputs)
    ``+ 2*Q + 2*KV`` (query/output, key/value; ``4*Q`` when padding expands key/value) ``+ heads`` (log-sum-exp)
    ``+ 2`` (norm statistics); full fine-tuning adds ``2*H`` (norm inputs for the weight gradients); LoRA adds ``r``
    per adapted module and, with dropout, the dropped input of each adapted module (``H`` each, ``I`` for the down
    projection); with padding, the mask adds ``seq`` per token. Measured equal to the meta count on Llama models.
    """
    text = getattr(hf_config, "text_config", None) or hf_config
    hidden = text.hidden_size
    inter = getattr(text, "intermediate_size", 4 * hidden)
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv = getattr(text, "num_key_value_heads", heads) * head_dim
    q = heads * head_dim
    layers = text.num_hidden_layers
    per_token = 4 * inter + 4 * hidden + heads + 2
    per_token += 4 * q if padded else 2 * q + 2 * kv
    if padded:
        per_token += seq
    if config.method == "full":
        per_token += 2 * hidden
    if config.method in ("lora", "dora", "qlora"):
        n_targets = 7 if config.lora.target_modules in ("auto", "all-linear") else 4
        per_token += n_targets * config.lora.r
        if config.lora.dropout > 0:
            per_token += (n_targets - 1) * hidden + inter
    size = _elsize(dtype)
    per_layer = per_token * batch * seq * size
    return Activations(batch=batch, seq=seq, per_layer=[per_layer] * layers, outside=2 * batch * seq * hidden * size,
                       layer_input=batch * seq * hidden * size, source="formula")


def activations(config: Config, prepared: Any, batch: int, seq: int, *, dtype: torch.dtype,
                masked: bool | None = None) -> Activations:
    """Saved activation bytes for one batch: meta forward, or the formula when the meta forward is not possible.

    ``masked``: the batch has an attention mask (padding, or packed examples); default: more than one row."""
    hf_config = model_config(config.model, trust_remote_code=config.trust_remote_code)
    padded = batch > 1 if masked is None else masked
    try:
        return meta_activations(prepared, hf_config, batch, seq, padded=padded)
    except Exception as exc:  # an architecture whose forward needs real values: fall back to the stated formula
        log.warning("meta forward not possible for %s (%s); activations from the per-layer formula", config.model, exc)
        return formula_activations(hf_config, config, batch, seq, dtype=dtype, padded=padded)
