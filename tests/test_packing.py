"""Padding-free packing: no attention across examples, and the same loss and gradients as padded batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_train_loss import examples, random_model
from tunewise.config import config_from_dict
from tunewise.lm.device import resolve_precision
from tunewise.example import Example
from tunewise.lm.collate import (
    PackCollator,
    PadCollator,
    pack_rows,
    packing_problem,
    packing_works,
    shared_prefix_length,
)
from tunewise.train.run import to_dataset, training_arguments
from tunewise.lm.chat import encode_examples
from tunewise.lm.loss import sparse_causal_lm_loss
from tunewise.train.trainer import TunewiseTrainer


def features(tokenizer: Any, loss_on: str = "answers") -> list[dict[str, Any]]:
    encoded = encode_examples(examples(), tokenizer, loss_on=loss_on)  # type: ignore[arg-type]
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]


def test_pack_rows_first_fit_decreasing() -> None:
    rows = pack_rows([5, 3, 8, 2, 4], row_tokens=10)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 8, 2, 4][i] for i in row) <= 10 for row in rows)
    assert len(rows) == 3  # 22 tokens need at least 3 rows of 10
    assert pack_rows([30, 2], row_tokens=10) == [[0], [1]]  # a row is never shorter than the longest example


def test_packed_batch_layout(tiny_tokenizer: Any) -> None:
    feats = features(tiny_tokenizer)
    batch = PackCollator(tiny_tokenizer.pad_token_id, row_tokens=10_000, share_prefix=False)(feats)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    total = sum(len(f["input_ids"]) for f in feats)
    assert int(batch["num_input_tokens"]) == total
    # ChatML ends "answer<|im_end|>\n": the newline and the final <|im_end|> (predicted, never predicting) are not fed,
    # except the last example's <|im_end|> which holds the row's last label
    assert batch["input_ids"].shape[1] == total - 2 * len(feats) + 1
    assert int((batch["labels"] != -100).sum()) == sum(sum(1 for y in f["labels"][1:] if y != -100) for f in feats)
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(feats)
    assert batch["labels"][0, 0] == -100
    # every later example's first slot holds the previous example's last target, its end-of-turn token
    assert all(batch["labels"][0, s] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>") for s in starts[1:])


@pytest.mark.parametrize("loss_on", ["answers", "all"])
def test_packed_loss_and_gradients_equal_padded(tiny_tokenizer: Any, loss_on: str) -> None:
    feats = features(tiny_tokenizer, loss_on)
    results = []
    for collate in (PadCollator(tiny_tokenizer.pad_token_id), PackCollator(tiny_tokenizer.pad_token_id, row_tokens=100, share_prefix=False)):
        model = random_model(tiny_tokenizer)
        batch = collate(feats)
        if isinstance(collate, PackCollator):
            assert batch["input_ids"].shape[0] < len(feats) / 2, "rows must really hold several examples"
        loss, n = sparse_causal_lm_loss(model, batch)
        loss.backward()
        results.append((loss.item(), n, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (padded_loss, padded_n, padded_grads), (packed_loss, packed_n, packed_grads) = results
    assert packed_n == padded_n
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_no_attention_across_packed_examples(tiny_tokenizer: Any) -> None:
    model = random_model(tiny_tokenizer).eval()
    a, b = features(tiny_tokenizer)[:2]
    other_a = {"input_ids": [(t + 7) % 100 for t in a["input_ids"]], "labels": a["labels"]}
    collate = PackCollator(tiny_tokenizer.pad_token_id, row_tokens=10_000, share_prefix=False)

    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # transformers builds the block-diagonal mask only without a cache: training never has one
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits

    _, _, used = collate.plan([a, b])
    with torch.no_grad():
        first, second = forward(collate([a, b])), forward(collate([other_a, b]))
        alone = model(input_ids=torch.tensor([b["input_ids"][: used[1]]])).logits
    n = used[0]
    assert not torch.allclose(first[0, :n], second[0, :n])  # example a really changed ...
    torch.testing.assert_close(first[0, n:], second[0, n:])  # ... and b did not notice
    torch.testing.assert_close(first[0, n:], alone[0], rtol=1e-4, atol=1e-5)
    assert packing_works(model, collate, [a, b])


def test_packing_check_catches_a_model_that_attends_across(tiny_tokenizer: Any) -> None:
    class Leaky(torch.nn.Module):  # mixes every position into every other one, whatever the position ids say
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(len(tiny_tokenizer), 8)

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.embed

        def forward(self, input_ids: torch.Tensor, use_cache: bool = False, **kwargs: Any) -> Any:
            hidden = self.embed(input_ids)
            return type("Out", (), {"logits": hidden + hidden.mean(dim=1, keepdim=True)})()

    features = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5, 6, 7], "labels": [-100, 5, 6, 7]}]
    assert not packing_works(Leaky(), PackCollator(0, 100), features)
    assert "attends across packed examples" in packing_problem(Leaky(), PackCollator(0, 100), features)


def test_packing_check_in_half_precision_forgives_a_rounding_outlier_not_a_leak(tiny_tokenizer: Any) -> None:
    """bf16 over a few hundred tokens leaves a rare position off by more than the tolerance (seen on SmolLM2 with
    275-token rows: the estimate then planned padded batches, twice the memory training used); a leak changes every
    position after the first example, in bf16 too."""
    model = random_model(tiny_tokenizer).to(torch.bfloat16).eval()
    feats = features(tiny_tokenizer)[:3]
    packer = PackCollator(tiny_tokenizer.pad_token_id, row_tokens=10_000, share_prefix=False)

    def one_position_off(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if output.shape[1] > max(len(f["input_ids"]) for f in feats):  # the packed batch, not an example alone
            output = output.clone()
            output[0, 4] += 10 * output.abs().max()
        return output

    handle = model.lm_head.register_forward_hook(one_position_off)
    try:
        assert packing_problem(model, packer, feats) is None
    finally:
        handle.remove()
    shift = model.lm_head.register_forward_hook(  # every position of the packed batch off: what a leak looks like
        lambda module, inputs, output: output + 10 * output.abs().max() if output.shape[1] > 40 else output)
    try:
        assert packing_problem(model, packer, feats) is not None
    finally:
        shift.remove()


def test_packing_check_names_a_layer_whose_numerics_depend_on_the_batch_shape(tiny_tokenizer: Any) -> None:
    """A layer whose output depends on how many tokens the batch holds (as a kernel that tiles by batch size can) is
    told apart from attention across examples, and named."""
    model = random_model(tiny_tokenizer).eval()
    feats = features(tiny_tokenizer)[:3]
    packer = PackCollator(tiny_tokenizer.pad_token_id, row_tokens=10_000, share_prefix=False)
    assert packing_problem(model, packer, feats) is None
    layer = model.model.layers[1].mlp.down_proj
    handle = layer.register_forward_hook(lambda module, inputs, output: output * (1 + 1e-2 * inputs[0].shape[:-1].numel()))
    try:
        problem = packing_problem(model, packer, feats)
    finally:
        handle.remove()
    assert problem is not None and "model.layers.1.mlp.down_proj (Linear from torch)" in problem
    assert "depend on the batch shape" in problem and "not attention across examples" in problem


def _train(tokenizer: Any, tmp: Path, packing: bool, share_prefix: bool = False) -> list[float]:
    config = config_from_dict({"method": "full", "training": {
        "max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "group_by_length": False,
        "logging_steps": 1, "save_steps": 100, "packing": packing}})
    model = random_model(tokenizer)
    encoded = encode_examples(examples(16), tokenizer)
    collate = PackCollator(tokenizer.pad_token_id, 64, share_prefix=share_prefix) if packing else PadCollator(tokenizer.pad_token_id)
    args = training_arguments(config, tmp, has_eval=False, precision=resolve_precision(device="cpu"))
    trainer = TunewiseTrainer(model=model, args=args, train_dataset=to_dataset(encoded), data_collator=collate)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_packed_training_follows_the_padded_loss_curve(tiny_tokenizer: Any, tmp_path: Path) -> None:
    padded = _train(tiny_tokenizer, tmp_path / "pad", packing=False)
    packed = _train(tiny_tokenizer, tmp_path / "pack", packing=True)
    shared = _train(tiny_tokenizer, tmp_path / "share", packing=True, share_prefix=True)
    assert len(packed) == len(padded) == len(shared) == 4
    assert packed == pytest.approx(padded, rel=1e-4)
    assert shared == pytest.approx(padded, rel=1e-4)
    assert padded[-1] < padded[0]


def system_prompt_features(tokenizer: Any, loss_on: str = "answers") -> list[dict[str, Any]]:
    rows = [Example(messages=[
        {"role": "system", "content": "Reverse the letters of the word you are given, then stop."},
        {"role": "user", "content": word},
        {"role": "assistant", "content": word[::-1]}]) for word in ("apple", "banana", "kiwi", "cherry", "fig", "lime")]
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in encode_examples(rows, tokenizer, loss_on=loss_on)]  # type: ignore[arg-type]


def test_shared_prefix_stops_before_the_first_trained_token(tiny_tokenizer: Any) -> None:
    feats = system_prompt_features(tiny_tokenizer)
    shared = shared_prefix_length(feats)
    first_trained = min(next(i for i, y in enumerate(f["labels"]) if y != -100) for f in feats)
    assert 10 < shared < first_trained
    assert all(f["input_ids"][:shared] == feats[0]["input_ids"][:shared] for f in feats)
    assert shared_prefix_length(system_prompt_features(tiny_tokenizer, "all")) == 0  # every token is trained
    assert shared_prefix_length(feats[:1]) == 0


@pytest.mark.parametrize("row_tokens", [64, 1000])
def test_shared_prefix_gives_the_loss_and_gradients_of_padded_batches(tiny_tokenizer: Any, row_tokens: int) -> None:
    feats = system_prompt_features(tiny_tokenizer)
    packer = PackCollator(tiny_tokenizer.pad_token_id, row_tokens=row_tokens)
    batch = packer(feats)
    shared, rows, _ = packer.plan(feats)
    assert shared > 10 and "attention_mask" in batch and batch["attention_mask"].dim() == 4
    assert batch["input_ids"].numel() < sum(len(f["input_ids"]) for f in feats)  # fewer tokens than unshared
    results = []
    for collate in (PadCollator(tiny_tokenizer.pad_token_id), packer):
        model = random_model(tiny_tokenizer)
        loss, n = sparse_causal_lm_loss(model, collate(feats))
        loss.backward()
        results.append((loss.item(), n, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (padded_loss, padded_n, padded_grads), (shared_loss, shared_n, shared_grads) = results
    assert shared_n == padded_n and shared_loss == pytest.approx(padded_loss, rel=1e-5)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6)
    assert packing_works(random_model(tiny_tokenizer), packer, feats)
    assert packing_works(random_model(tiny_tokenizer).to(torch.bfloat16), packer, feats)  # GPU runs train in bf16


def test_examples_sharing_a_prefix_do_not_see_each_other(tiny_tokenizer: Any) -> None:
    from tunewise.lm.collate import model_inputs

    model = random_model(tiny_tokenizer).eval()
    feats = system_prompt_features(tiny_tokenizer)[:2]
    packer = PackCollator(tiny_tokenizer.pad_token_id, row_tokens=1000)
    shared, _, used = packer.plan(feats)
    changed = [{"input_ids": feats[0]["input_ids"][:shared] + [(t + 5) % 100 for t in feats[0]["input_ids"][shared:]],
                "labels": feats[0]["labels"]}, feats[1]]
    with torch.no_grad():
        first = model(**model_inputs(model, packer(feats)), use_cache=False).logits[0]
        second = model(**model_inputs(model, packer(changed)), use_cache=False).logits[0]
    start_b = used[0]  # prefix + a's rest
    assert not torch.allclose(first[shared:start_b], second[shared:start_b])
    torch.testing.assert_close(first[start_b:], second[start_b:])


def _prefixed(lengths: list[int], prefix: int) -> list[dict[str, list[int]]]:
    """Features sharing ``prefix`` untrained tokens, each with a trained tail of 8 tokens."""
    return [{"input_ids": list(range(1, prefix + 1)) + [100 + i] * (n - prefix),
             "labels": [-100] * (n - 8) + [7] * 8} for i, n in enumerate(lengths)]


def test_rows_follow_the_cost_of_attention(tiny_tokenizer: Any) -> None:
    """A row's attention covers all its pairs: long examples get rows of their own, short ones share a row (and its
    prefix); the loss stays the padded batch's either way."""
    from tunewise.models.tiny import ensure_tiny_model
    from tunewise.lm.collate import attention_pair_ratio
    from transformers import AutoConfig

    smollm2_ratio = 3072  # attention_pair_ratio of SmolLM2-135M's config
    packer = PackCollator(0, row_tokens=4096, pair_ratio=smollm2_ratio)
    long = _prefixed([256] * 8, prefix=0)
    assert packer.plan(long)[1] == [[i] for i in range(8)]  # 8 x 256 rather than one row of 2,048 (1.5x the cost)
    # measured on SmolLM2 LoRA, one thread: 8 examples of 128 tokens took 11.7 s as 8 rows, 15-17 s as one row
    assert len(packer.plan(_prefixed([128] * 8, prefix=0))[1]) == 8
    # 8 examples of 106-131 tokens opening with the same 28-token system prompt (the real case where one row of 761
    # tokens trained in 64-68 s and 3 rows of 324 in 75-76 s): one row
    shared, rows, _ = packer.plan(_prefixed([131, 110, 123, 106, 124, 130, 130, 118], prefix=28))
    assert shared == 28 and len(rows) == 1
    _, rows, used = packer.plan(_prefixed([20] * 16, prefix=0))  # short examples share rows of equal width: no padding
    assert 1 <= len(rows) < 16 and len({sum(used[i] for i in row) for row in rows}) == 1
    assert PackCollator(0, row_tokens=4096).plan(long)[1] == [list(range(8))]  # no ratio: rows fill up to row_tokens
    assert len(PackCollator(0, row_tokens=600, pair_ratio=10**9).plan(long)[1]) == 4  # row_tokens caps rows

    ratio = attention_pair_ratio(AutoConfig.from_pretrained(ensure_tiny_model()))
    assert ratio and 100 < ratio < smollm2_ratio
    feats = system_prompt_features(tiny_tokenizer)
    for packer in (PackCollator(tiny_tokenizer.pad_token_id, 1000, pair_ratio=ratio),
                   PackCollator(tiny_tokenizer.pad_token_id, 1000, pair_ratio=5.0),  # attention dear: many rows
                   PackCollator(tiny_tokenizer.pad_token_id, 1000, share_prefix=False, pair_ratio=ratio)):
        model = random_model(tiny_tokenizer)
        packed, n = sparse_causal_lm_loss(model, packer(feats))
        padded, m = sparse_causal_lm_loss(model, PadCollator(tiny_tokenizer.pad_token_id)(feats))
        assert n == m and packed.item() == pytest.approx(padded.item(), rel=1e-5)
    assert len(PackCollator(tiny_tokenizer.pad_token_id, 1000, pair_ratio=5.0).plan(feats)[1]) > 1
