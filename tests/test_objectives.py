"""Each preference objective's loss equals TRL's implementation on the same batch (to 1e-5): TRL builds and collates
the batch, then both compute the loss of one LoRA policy (adapter weights moved off zero, so policy != reference)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

trl = pytest.importorskip("trl", reason="trl is a test dependency (pyproject's test extra): pip install -e '.[test]'")

PAIRS = [
    {"prompt": [{"role": "user", "content": "reverse abc"}], "chosen": [{"role": "assistant", "content": "cba"}],
     "rejected": [{"role": "assistant", "content": "abc"}]},
    {"prompt": [{"role": "user", "content": "reverse hello"}], "chosen": [{"role": "assistant", "content": "olleh"}],
     "rejected": [{"role": "assistant", "content": "hello world, twice as long"}]},
    {"prompt": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "reverse xy"}],
     "chosen": [{"role": "assistant", "content": "yx"}], "rejected": [{"role": "assistant", "content": "x y"}]},
]


def _policy(tiny_dir: Path) -> Any:
    """A LoRA policy on the tiny model whose adapter starts at zero (so TRL's reference equals the base)."""
    from peft import LoraConfig, get_peft_model

    from tunewise.lm.loading import load_model

    torch.manual_seed(0)
    return get_peft_model(load_model(str(tiny_dir)), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                 task_type="CAUSAL_LM"))


def _move_adapter(model: Any) -> None:
    """Random LoRA B weights: the policy now differs from the reference (the adapter disabled, or TRL's copy of it
    taken at zero)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B.default" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    model.train()


def _args(config_class: Any, tmp_path: Path, **kwargs: Any) -> Any:
    return config_class(output_dir=str(tmp_path / "trl"), report_to=[], per_device_train_batch_size=len(PAIRS),
                        use_cpu=True, bf16=False, **kwargs)


def _quiet() -> None:
    warnings.filterwarnings("ignore")


def test_dpo_loss_equals_trl(tiny_dir: Path, tiny_tokenizer: Any, tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from tunewise.objectives.base import Reference
    from tunewise.objectives.dpo import DPO

    _quiet()
    model = _policy(tiny_dir)
    trainer = DPOTrainer(model=model, args=_args(DPOConfig, tmp_path, beta=0.2), train_dataset=Dataset.from_list(PAIRS),
                         processing_class=tiny_tokenizer)
    _move_adapter(model)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    expected = trainer.compute_loss(trainer.model, batch)

    ids = batch["input_ids"]
    ours = DPO()
    ours.beta = 0.2
    loss, trained, logs = ours.loss(model, {"input_ids": ids, "attention_mask": batch["attention_mask"],
                                            "labels": ids.masked_fill(batch["completion_mask"] == 0, -100)},
                                    reference=Reference(model))
    assert abs(float(expected) - float(loss)) < 1e-5 and float(loss) != pytest.approx(0.6931, abs=1e-3)
    assert trained == int(batch["completion_mask"][:, 1:].sum())
    assert logs["rewards/margins"] == pytest.approx(logs["rewards/chosen"] - logs["rewards/rejected"], abs=1e-6)
    loss.backward()  # the loss trains the adapter
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A.default" in n)


@pytest.mark.parametrize("loss_on", ["last_turn", "all"])
def test_orpo_loss_equals_trl(tiny_dir: Path, tiny_tokenizer: Any, tmp_path: Path, loss_on: str) -> None:
    """TRL's ORPO takes its NLL over the whole chosen conversation: equal to ours with training.loss_on: all; with
    the answer only (our default) the odds-ratio term is TRL's and the NLL covers the chosen answer."""
    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    from trl.experimental.orpo.orpo_trainer import log1mexp as trl_log1mexp

    from tunewise.lm.loss import sequence_logps
    from tunewise.objectives.orpo import ORPO, log1mexp

    _quiet()
    model = _policy(tiny_dir)
    trainer = ORPOTrainer(model=model, args=_args(ORPOConfig, tmp_path, beta=0.25, max_length=128),
                          train_dataset=Dataset.from_list(PAIRS), processing_class=tiny_tokenizer)
    _move_adapter(model)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    expected, _ = trainer.get_batch_loss_metrics(trainer.model, batch)

    joined = trainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=trainer.padding_value)
    ids, mask = joined["concatenated_input_ids"], joined["concatenated_attention_mask"]
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": joined["concatenated_labels"]}
    n = len(PAIRS)
    whole = ids.masked_fill(mask == 0, -100)
    whole[n:] = -100
    ours = ORPO()
    ours.beta = 0.25
    loss, _, logs = ours.loss(model, {**inputs, "nll_labels": whole})
    assert abs(float(expected) - float(loss)) < 1e-5

    answer_only, _, _ = ours.loss(model, inputs)
    (logps, counts), = sequence_logps(model, inputs)
    nll = -logps[:n].sum() / counts[:n].sum()
    assert float(answer_only) - float(loss) == pytest.approx(float(nll) - logs["nll_loss"], abs=1e-5)
    x = torch.linspace(-20, -1e-4, 200)
    assert torch.allclose(log1mexp(x), trl_log1mexp(x))


def test_kto_loss_equals_trl(tiny_dir: Path, tiny_tokenizer: Any, tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from tunewise.objectives.base import Reference
    from tunewise.objectives.kto import KTO

    _quiet()
    rows = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in PAIRS for side in ("chosen", "rejected")]
    model = _policy(tiny_dir)
    trainer = KTOTrainer(model=model, args=_args(KTOConfig, tmp_path, beta=0.3, desirable_weight=1.0,
                                                 undesirable_weight=1.5),
                         train_dataset=Dataset.from_list(rows), processing_class=tiny_tokenizer)
    _move_adapter(model)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    expected = trainer.compute_loss(trainer.model, batch)

    ids, kl_ids = batch["input_ids"], batch["KL_input_ids"]
    inputs = {"input_ids": ids, "attention_mask": batch["attention_mask"],
              "labels": ids.masked_fill(batch["completion_mask"] == 0, -100),
              "desirable": torch.as_tensor(batch["label"], dtype=torch.bool),
              "kl_input_ids": kl_ids, "kl_attention_mask": batch["KL_attention_mask"],
              "kl_labels": kl_ids.masked_fill(batch["KL_completion_mask"] == 0, -100)}
    ours = KTO()
    ours.beta, ours.desirable_weight, ours.undesirable_weight = 0.3, 1.0, 1.5
    loss, _, logs = ours.loss(model, inputs, reference=Reference(model))
    assert abs(float(expected) - float(loss)) < 1e-5
    assert logs["kl"] >= 0


def test_kl_rows_pair_each_prompt_with_the_previous_answer() -> None:
    """The KL estimate's mismatched rows: prompt i with the answer of row i - 1, as TRL's collator builds them."""
    from tunewise.objectives.kto import UnpairedCollator

    features = [{"input_ids": [1, 2, 10, 11], "labels": [-100, -100, 10, 11], "prompt_length": 2, "desirable": True},
                {"input_ids": [3, 20], "labels": [-100, 20], "prompt_length": 1, "desirable": False}]
    batch = UnpairedCollator(pad_token_id=0)(features)
    assert batch["kl_input_ids"].tolist() == [[1, 2, 20], [3, 10, 11]]
    assert batch["kl_labels"].tolist() == [[-100, -100, 20], [-100, 10, 11]]
    assert batch["desirable"].tolist() == [True, False]


def test_the_reference_of_an_adapter_is_the_base_without_a_copy(tiny_dir: Path) -> None:
    """LoRA's reference is the policy with the adapter disabled (no second model in memory); full fine-tuning keeps
    a frozen copy taken before training."""
    from tunewise.lm.loading import load_model
    from tunewise.objectives.base import Reference

    model = _policy(tiny_dir)
    _move_adapter(model)
    reference = Reference(model)
    assert reference.copy is None
    ids = torch.tensor([[1, 2, 3, 4]])
    base = load_model(str(tiny_dir))
    with reference.model(model) as ref:
        assert torch.allclose(ref(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-6)
    assert not torch.allclose(model(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-3)

    full = Reference(base)
    assert full.copy is not None and not any(p.requires_grad for p in full.copy.parameters())
    with torch.no_grad():
        next(base.parameters()).add_(1.0)  # training moves the policy; the reference stays
    with full.model(base) as ref:
        assert ref is full.copy and not torch.equal(next(ref.parameters()), next(base.parameters()))
