"""The loss: logits only at trained positions gives the same loss as the full head, and gradient accumulation gives
the same loss and update as one big batch (normalised by the trained tokens of the whole accumulated batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tunewise.config import config_from_dict
from tunewise.example import Example
from tunewise.lm.device import resolve_precision
from tunewise.lm.collate import PadCollator
from tunewise.train.run import to_dataset, training_arguments
from tunewise.lm.chat import encode_examples
from tunewise.lm.loss import sparse_causal_lm_loss
from tunewise.train.trainer import TunewiseTrainer


def random_model(tokenizer: Any, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def examples(n: int = 8) -> list[Example]:
    # answers of very different lengths, so per-micro-batch averaging would weigh tokens differently
    out = []
    for i in range(n):
        answer = " ".join(["word"] * (1 + 3 * (i % 4)))
        out.append(Example(messages=[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": answer}]))
    return out


def test_sparse_loss_equals_full_logits_loss(tiny_tokenizer: Any) -> None:
    model = random_model(tiny_tokenizer)
    encoded = encode_examples(examples(), tiny_tokenizer)
    batch = PadCollator(tiny_tokenizer.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded])
    reference = model(**batch).loss
    ours, n = sparse_causal_lm_loss(model, batch)
    assert n == sum(e.n_trained for e in encoded) - 0  # every trained token is predicted from the one before it
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


def _train_one_step(tokenizer: Any, tmp: Path, batch: int, accumulation: int) -> tuple[dict[str, torch.Tensor], float]:
    config = config_from_dict(
        {
            "method": "full",
            "training": {
                "max_steps": 1, "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
                "learning_rate": 0.5, "optimizer": "sgd", "lr_scheduler": "constant", "max_grad_norm": 1e6,
                "group_by_length": False, "logging_steps": 1, "save_steps": 100,
            },
        }
    )
    model = random_model(tokenizer)
    encoded = encode_examples(examples(), tokenizer)
    args = training_arguments(config, tmp, has_eval=False, precision=resolve_precision(device="cpu"))
    trainer = TunewiseTrainer(
        model=model, args=args, train_dataset=to_dataset(encoded), data_collator=PadCollator(tokenizer.pad_token_id)
    )
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, loss


def test_gradient_accumulation_matches_one_big_batch(tiny_tokenizer: Any, tmp_path: Path) -> None:
    big, big_loss = _train_one_step(tiny_tokenizer, tmp_path / "a", batch=8, accumulation=1)
    small, small_loss = _train_one_step(tiny_tokenizer, tmp_path / "b", batch=2, accumulation=4)
    start = random_model(tiny_tokenizer).state_dict()
    assert small_loss == pytest.approx(big_loss, rel=1e-5)
    moved = 0.0
    for name, value in big.items():
        torch.testing.assert_close(small[name], value, rtol=1e-5, atol=1e-6)
        moved = max(moved, (value - start[name]).abs().max().item())
    assert moved > 1e-3, "the step must actually change the weights for the comparison to mean anything"

    # and the naive alternative (mean of per-micro-batch means) really gives another update on this data
    model = random_model(tiny_tokenizer)
    encoded = encode_examples(examples(), tiny_tokenizer)
    collate = PadCollator(tiny_tokenizer.pad_token_id)
    for i in range(0, 8, 2):
        micro = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded[i : i + 2]])
        (sparse_causal_lm_loss(model, micro)[0] / 4).backward()
    naive = {n: start[n] - 0.5 * p.grad for n, p in model.named_parameters()}
    assert any(not torch.allclose(naive[n], big[n], rtol=1e-4, atol=1e-6) for n in naive)
