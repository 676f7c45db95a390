"""Batching for training.

* :class:`PadCollator` right-pads a batch to its longest row; labels are masked by position (never by pad id).
* :class:`PackCollator` is the padding-free path (the default): a batch's examples are laid end to end in rows (as
  many as cost least, :meth:`PackCollator.rows`), position ids restart at 0 for each example and no attention mask
  is passed. transformers (>= 5) turns
  restarting position ids into a block-diagonal causal mask (``masking_utils.find_packed_sequence_indices``; only
  without a KV cache, i.e. ``use_cache=False``), so no token attends across an example boundary, and the loss equals
  unpacked training on the same batch (tests/test_packing.py). A prefix shared by every example of the batch (the
  system prompt) is computed once per row. :func:`packing_works` checks all this on the real model before a run
  relies on it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from tunewise.lm.chat import IGNORE_INDEX

# inputs that describe the batch for tunewise's own bookkeeping; never passed to the model
BOOKKEEPING_KEYS = ("num_input_tokens",)


class PadCollator:
    """Right-pads ``input_ids``/``labels`` to the longest row (rounded up to ``pad_to_multiple_of``).

    Written by hand rather than ``DataCollatorForLanguageModeling`` because that one rebuilds labels from
    ``input_ids`` and masks by pad id, which hides the eos token when pad == eos.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        n = len(features)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, :k] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.as_tensor(f["labels"], dtype=torch.long)
            attention_mask[i, :k] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pack_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``max(row_tokens, longest)`` tokens (first-fit decreasing)."""
    capacity = max(row_tokens, max(lengths))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return [sorted(row) for row in rows]


def shared_prefix_length(features: Sequence[dict[str, Any]]) -> int:
    """Tokens at the start of every example that are identical and predict no trained token.

    Position ``i`` predicts token ``i + 1``, so a prefix of ``P`` tokens may be computed once only if no example
    trains tokens ``1..P``: its first trained token must come after the prefix."""
    if len(features) < 2:
        return 0
    ids = [f["input_ids"] for f in features]
    limit = min(len(x) for x in ids) - 1  # every example keeps at least one token of its own
    for f in features:
        first_trained = next((i for i, y in enumerate(f["labels"]) if y != IGNORE_INDEX), len(f["labels"]))
        limit = min(limit, first_trained - 1)
    head = ids[0]
    for other in ids[1:]:
        n = 0
        while n < limit and head[n] == other[n]:
            n += 1
        limit = n
    return max(limit, 0)


def attention_pair_ratio(model_config: Any) -> float | None:
    """How many query-key pairs of attention cost as much as one token through a decoder layer's linear layers:
    (the layer's linear weights) / (2 x query width), from the model's config (None when it does not say).

    Attention runs over every pair of a packed row, masked or not (CPU kernels do not skip masked blocks): a row of
    ``C`` tokens costs about ``C`` token units plus ``C**2 / ratio``. SmolLM2-135M: ratio ~3,000 (measured ~2,300 on
    this CPU: one packed row of 8 x 128 tokens took 15-17 s forward + backward, 8 rows of 128 took 11.7 s)."""
    text = getattr(model_config, "text_config", None) or model_config
    hidden, heads = getattr(text, "hidden_size", None), getattr(text, "num_attention_heads", None)
    if not hidden or not heads:
        return None
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    query = heads * head_dim
    kv = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    inter = getattr(text, "intermediate_size", None) or 4 * hidden
    linear = 2 * hidden * query + 2 * hidden * kv + 3 * hidden * inter  # q, o, k, v projections and a gated MLP
    return linear / (2 * query)


class PackCollator:
    """Padding-free batches (module docstring).

    With ``share_prefix`` (the default), tokens that open every example of the batch (a system prompt, the template's
    header) are computed once per row: each row is ``prefix + rest_1 + rest_2 + ...``, every ``rest_k`` continues
    the prefix's position ids and attends to the prefix and to itself only (a 4-D mask). The prefix predicts no
    trained token (:func:`shared_prefix_length`), so the loss and its gradients are those of the unshared batch.

    How many rows: attention runs over whole rows, masked pairs included (CPU kernels do not skip them), so one long
    row is not free: with ``pair_ratio`` (:func:`attention_pair_ratio`) the collator picks the row count of least
    estimated cost (:meth:`rows`): fewer rows feed the prefix fewer times and pad less; more rows cost less attention.
    ``row_tokens`` caps every row.
    """

    def __init__(self, pad_token_id: int, row_tokens: int, *, share_prefix: bool = True, min_shared: int = 4,
                 pair_ratio: float | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.row_tokens = row_tokens
        self.share_prefix = share_prefix
        self.min_shared = min_shared
        self.pair_ratio = pair_ratio

    def rows(self, rests: Sequence[int], shared: int) -> list[list[int]]:
        """Examples per row, for examples of ``rests`` tokens after a ``shared`` prefix.

        Without ``pair_ratio``, rows fill up to ``row_tokens``. With it, candidate row lengths from one row per batch
        down to the longest example are packed (first-fit decreasing) and the plan of least cost is taken:
        ``rows x width`` tokens through the linear layers plus ``rows x width**2 / pair_ratio`` for attention, where
        ``width`` includes the prefix and the padding of shorter rows (fewest rows on a tie)."""
        room = max(self.row_tokens - shared, 1)
        if self.pair_ratio is None:
            return pack_rows(rests, room)
        longest, total = max(rests), sum(rests)
        best: list[list[int]] = []
        best_cost = math.inf
        k = 1
        while True:
            capacity = min(max(longest, -(-total // k)), room)
            rows = pack_rows(rests, capacity)
            width = shared + max(sum(rests[i] for i in row) for row in rows) + 1  # + the last example's last label
            cost = len(rows) * width * (1 + width / self.pair_ratio)
            if cost < best_cost:
                best, best_cost = rows, cost
            if capacity <= longest or k >= len(rests):
                return best
            k = k + 1 if k < 4 else k * 3 // 2

    def plan(self, features: Sequence[dict[str, Any]]) -> tuple[int, list[list[int]], list[int]]:
        """(shared prefix length, example indices per row, tokens of each example fed to the model).

        Tokens after an example's last trained token predict nothing, and neither does that token itself: its
        label is carried to the next slot of the row. Only the last example of a row keeps its last trained token,
        so the label has a place."""
        shared = shared_prefix_length(features) if self.share_prefix else 0
        if shared < self.min_shared:
            shared = 0
        last = [last_trained_index(f["labels"]) for f in features]
        rows = self.rows([t - shared for t in last], shared)
        used = list(last)
        for row in rows:
            used[row[-1]] += 1
        return shared, rows, used

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        shared, rows, used = self.plan(features)
        width = max(shared + sum(used[i] - shared for i in row) for row in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        segments = torch.full((n, width), -1, dtype=torch.long)  # 0 = shared prefix, k = k-th example, -1 = padding
        for r, row in enumerate(rows):
            if shared:
                input_ids[r, :shared] = torch.as_tensor(features[row[0]]["input_ids"][:shared], dtype=torch.long)
                position_ids[r, :shared] = torch.arange(shared)
                segments[r, :shared] = 0
            at = shared
            carry = IGNORE_INDEX  # the label the previous example's last fed position predicts
            for k, i in enumerate(row, start=1):
                rest = used[i] - shared
                ids, example_labels = features[i]["input_ids"], features[i]["labels"]
                input_ids[r, at : at + rest] = torch.as_tensor(ids[shared : used[i]], dtype=torch.long)
                labels[r, at + 1 : at + rest] = torch.as_tensor(example_labels[shared + 1 : used[i]], dtype=torch.long)
                # the first slot of an example holds the previous example's last target (the token opening an
                # example is never predicted from inside it: it is prompt, or prefix shared by construction)
                labels[r, at] = carry
                carry = example_labels[used[i]] if used[i] < len(example_labels) else IGNORE_INDEX
                position_ids[r, at : at + rest] = torch.arange(shared, used[i])
                segments[r, at : at + rest] = k
                at += rest
            # the tail padding of a shorter row is one more "example" (positions from 0): it attends only to itself
            position_ids[r, at:] = torch.arange(width - at)
        batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels,
                 "num_input_tokens": torch.tensor(sum(len(f["input_ids"]) for f in features))}
        if shared:
            batch["attention_mask"] = shared_prefix_mask(segments)
        return batch


def pack_collator(config: Any, pad_token_id: int, model_config: Any = None) -> PackCollator:
    """The PackCollator a run with ``config`` trains with (and the estimator shapes its batches with)."""
    t = config.training
    return PackCollator(pad_token_id, t.packing_row_tokens or config.data.max_tokens, share_prefix=t.share_prefix,
                        pair_ratio=attention_pair_ratio(model_config) if model_config is not None else None)


def last_trained_index(labels: Sequence[int]) -> int:
    """Index of the last trained label (the last index when there is none: the example is fed whole)."""
    for i in range(len(labels) - 1, -1, -1):
        if labels[i] != IGNORE_INDEX:
            return i
    return len(labels) - 1


def shared_prefix_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean (rows, 1, L, L) mask, True = may attend: causal, within a segment, and from every example to the
    shared prefix (segment 0). Padding (-1) attends causally to padding only, so no row of the mask is empty."""
    n, width = segments.shape
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & ((query == key) | ((key == 0) & (query > 0)))
    return allowed[:, None]


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4-D mask as the additive float mask every attention backend (eager, sdpa) accepts."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def model_inputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without labels and bookkeeping, a 4-D boolean mask turned additive in the model's dtype."""
    inputs = {k: v for k, v in batch.items() if k != "labels" and k not in BOOKKEEPING_KEYS}
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 4 and mask.dtype == torch.bool:
        inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
        inputs["attention_mask"] = additive_mask(mask, inner.get_input_embeddings().weight.dtype)
    return inputs


def packing_works(model: Any, collator: PackCollator, features: Sequence[dict[str, Any]], atol: float | None = None) -> bool:
    """True when ``model`` gives each example the same logits inside ``collator``'s packed batch as alone."""
    return packing_problem(model, collator, features, atol) is None


#: half precision: the share of an example's positions whose logits may differ beyond the tolerance (rounding)
HALF_OUTLIER_SHARE = 0.02


def _agrees(model: Any, got: torch.Tensor, alone: torch.Tensor, atol: float | None) -> bool:
    """Whether an example's logits inside a packed batch (``got``) are its logits alone.

    float32 agrees to ~1e-5 everywhere. bf16/fp16 kernels differ by a few units in the last place, and over a few
    hundred tokens a rare position differs by more (measured: one position of 275 off by 3.75 on logits of ~40, the
    rest under 0.6); attention across examples changes every position after the first example, so in half precision
    up to :data:`HALF_OUTLIER_SHARE` of the positions (at least one) may be off."""
    half = model.get_input_embeddings().weight.dtype != torch.float32
    tolerance = atol if atol is not None else (5e-2 * float(alone.abs().max()) if half else 1e-3)
    close = ((got - alone).abs() <= tolerance + 1e-3 * alone.abs()).all(dim=-1)
    if not half:
        return bool(close.all())
    return int((~close).sum()) <= max(1, int(HALF_OUTLIER_SHARE * close.numel()))


@torch.no_grad()
def packing_problem(model: Any, collator: PackCollator, features: Sequence[dict[str, Any]],
                    atol: float | None = None) -> str | None:
    """None when ``model`` gives each example the same logits inside ``collator``'s packed batch as alone; else
    what differs, in words, telling apart the two causes (training then falls back to padding):

    * a layer whose numerics depend on the batch's shape (the same tokens give other outputs in a batch of another
      shape, e.g. a kernel that tiles differently): found by running one example alone and twice in one batch, and
      named (:func:`batch_shape_dependence`);
    * attention that leaks across examples (it ignores restarting position ids or 4-D masks: custom code, some
      attention backends), when every layer gives the same outputs whatever the batch shape."""
    features = [f for f in features if len(f["input_ids"]) > 1]
    if len(features) < 2:
        return None
    was_training = model.training
    model.eval()
    try:
        device = model.get_input_embeddings().weight.device
        batch = {k: v.to(device) for k, v in collator(list(features)).items()}
        packed = model(**model_inputs(model, batch), use_cache=False).logits.float()
        shared, rows, used = collator.plan(features)
        for r, row in enumerate(rows):
            at = shared
            for i in row:
                ids = features[i]["input_ids"][: used[i]]
                alone = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0].float()
                got = torch.cat([packed[r, :shared], packed[r, at : at + len(ids) - shared]])
                if not _agrees(model, got, alone, atol):
                    layer = batch_shape_dependence(model, ids)
                    if layer:
                        return (f"the numerics of {layer} depend on the batch shape (the same tokens give other "
                                "outputs alone and in a batch of two), so packed and unpacked batches train "
                                "differently; this is the layer type, not attention across examples")
                    return ("this model attends across packed examples (its attention ignores restarting position "
                            "ids or 4-D masks)")
                at += len(ids) - shared
        return None
    finally:
        model.train(was_training)


@torch.no_grad()
def batch_shape_dependence(model: Any, ids: Sequence[int]) -> str | None:
    """The first layer (in call order) whose output for ``ids`` alone differs from its output for the same row in a
    batch of two identical rows, as ``"name (Class from library)"``; None when no layer's output depends on the
    batch shape. No attention crosses rows of a batch, so a difference here is the layer's own arithmetic."""
    calls: list[list[tuple[str, torch.Tensor]]] = []  # per forward pass: (module name, its row-0 output) in call order

    def record(name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            tensor = output[0] if isinstance(output, (tuple, list)) else getattr(output, "logits", output)
            if isinstance(tensor, torch.Tensor) and tensor.dim() >= 2:
                calls[-1].append((name, tensor[0].detach().float().clone()))
        return hook

    modules = dict(model.named_modules())
    handles = [m.register_forward_hook(record(n)) for n, m in modules.items() if n]
    try:
        device = model.get_input_embeddings().weight.device
        one = torch.tensor([list(ids)], device=device)
        for rows in (one, one.repeat(2, 1)):
            calls.append([])
            model(input_ids=rows, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    # relative to each layer's own scale (a layer's outputs may be far smaller than the logits): float32 kernels
    # agree to ~1e-6 of it whatever the batch shape, half precision to a few units in the last place
    half = model.get_input_embeddings().weight.dtype != torch.float32
    relative = 2e-2 if half else 1e-4
    for (name, alone), (other, batched) in zip(*calls):
        scale = float(alone.abs().max())
        if name == other and alone.shape == batched.shape and float((alone - batched).abs().max()) > relative * scale:
            cls = type(modules[name])
            return f"{name} ({cls.__name__} from {cls.__module__.split('.')[0]})"
    return None
