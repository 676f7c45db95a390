"""Memory and precision choices of a training run: activation checkpointing chosen from the estimate and the memory
available (faked here: no real out-of-memory), glibc's freed blocks returned to the OS, and bf16 autocast on CPUs
with bf16 matmul units (the detection forced on and off)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_training_runs import prepared_run
from tunewise.decide import estimate as estimate_module
from tunewise.decide.estimate import checkpointing_choice
from tunewise.lm import device as device_module
from tunewise.lm.device import resolve_precision


def _fake_memory(monkeypatch: pytest.MonkeyPatch, available_mb: int) -> None:
    real = estimate_module.available_memory

    def fake(device: str) -> dict[str, Any]:
        return {**real(device), "available_mb": available_mb}

    monkeypatch.setattr(estimate_module, "available_memory", fake)


class _SeenArgs:
    """A TrainerCallback remembering whether the Trainer ran with activation checkpointing."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        seen = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
                seen.args_on = bool(getattr(args, "activation_checkpointing", getattr(args, "gradient_checkpointing", False)))
                seen.model_on = bool(getattr(model, "is_gradient_checkpointing", False))

        self.args_on = self.model_on = None
        self.callback = _Callback()


@pytest.mark.parametrize("available_mb,expected", [(1, True), (10**7, False)], ids=["does-not-fit", "fits"])
def test_checkpointing_is_chosen_from_the_estimate_and_the_memory_available(
        tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, available_mb: int, expected: bool) -> None:
    from tunewise import api

    monkeypatch.delenv("TUNEWISE_MALLOC_TUNING", raising=False)
    config = prepared_run(tiny_dir, tmp_path, "auto", max_steps=2, eval_steps=None, save_steps=100)
    assert config.training.gradient_checkpointing is None  # the default: automatic
    _fake_memory(monkeypatch, available_mb)
    choice = checkpointing_choice(config, config.run_dir)
    assert choice is not None and choice["on"] is expected and choice["return_freed_memory"] is expected
    assert choice["available_mb"] == available_mb and choice["peak_mb_with_checkpointing"] < choice["peak_mb"]
    seen = _SeenArgs()
    monkeypatch.setattr("tunewise.train.run.build_trainer", _spy(seen))
    summary = api.train(config)  # the choice is made by the caller (api, CLI, pipeline) and recorded by train_run
    assert seen.args_on is expected and seen.model_on is expected  # what the Trainer and the model actually ran
    recorded = json.loads((Path(config.run_dir) / "train_summary.json").read_text())
    assert recorded["gradient_checkpointing"] == summary["gradient_checkpointing"]
    assert recorded["gradient_checkpointing"]["on"] is expected
    assert recorded["gradient_checkpointing"]["source"] == "automatic"
    assert recorded["returned_freed_memory"] is expected
    assert ("exceeds" if expected else "fits") in recorded["gradient_checkpointing"]["reason"]


def _spy(seen: _SeenArgs) -> Any:
    from tunewise.train import run as run_module

    real = run_module.build_trainer

    def build(*args: Any, callbacks: Any = (), **kwargs: Any) -> Any:
        return real(*args, callbacks=[*callbacks, seen.callback], **kwargs)

    return build


def test_the_cheapest_way_to_fit_is_chosen(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunewise.train.run import resolve_checkpointing

    config = prepared_run(tiny_dir, tmp_path, "explicit", gradient_checkpointing=False)
    assert checkpointing_choice(config, config.run_dir) is None  # set by the user: nothing to decide
    resolved, recorded = resolve_checkpointing(config, None)
    assert resolved.training.gradient_checkpointing is False and recorded["source"] == "config"
    auto = config.model_copy(update={"training": config.training.model_copy(update={"gradient_checkpointing": None})})
    monkeypatch.setattr(estimate_module, "estimate_run", lambda *a, **k: pytest.fail("estimated again"))
    memory = {"peak_mb_without_checkpointing": 9000, "peak_mb_with_checkpointing": 5000,
              "peak_mb_returning_freed_memory": 6000, "peak_mb_with_checkpointing_returning_freed_memory": 3000}

    def choose(available: int) -> tuple[bool, bool]:
        choice = checkpointing_choice(auto, config.run_dir, memory, available)
        return choice["on"], choice["return_freed_memory"]

    assert choose(12000) == (False, False)  # fits as it is
    assert choose(7000) == (False, True)  # returning freed memory is enough (cheaper than recomputing)
    assert choose(5000) == (True, True)  # both
    glibc_keeps = {k: v for k, v in memory.items() if "returning" not in k}  # no allocator choice (CUDA, forced)
    assert checkpointing_choice(auto, config.run_dir, glibc_keeps, 7000)["on"] is True
    resolved, recorded = resolve_checkpointing(auto, None)  # train_run called without a choice: off, and it says so
    assert resolved.training.gradient_checkpointing is False and "no memory estimate" in recorded["reason"]


def test_the_glibc_threshold_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from tunewise.train.allocator import return_freed_memory_to_os, tuning_setting

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own glibc setting wins
    assert tuning_setting() is False and return_freed_memory_to_os() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("TUNEWISE_MALLOC_TUNING", "0")
    assert tuning_setting() is False and return_freed_memory_to_os() is False
    if platform.libc_ver()[0] == "glibc":
        monkeypatch.setenv("TUNEWISE_MALLOC_TUNING", "1")
        assert tuning_setting() is True
        monkeypatch.delenv("TUNEWISE_MALLOC_TUNING")
        assert tuning_setting() is None  # automatic: the memory estimate decides
        assert return_freed_memory_to_os() is True


# -- bf16 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags,expected", [("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_bf16 amx_tile", True),
                                            ("fpu avx2 avx512f", False)], ids=["avx512_bf16", "amx", "neither"])
def test_cpu_precision_is_bf16_where_the_cpu_has_bf16_units(monkeypatch: pytest.MonkeyPatch, flags: str,
                                                             expected: bool) -> None:
    """Automatic: bf16 autocast on a CPU with bf16 units (measured 1.92x on long rows, same eval loss), fp32 on one
    without (emulated, no faster) and for a quantized base; training.bf16 and TUNEWISE_CPU_BF16 decide over it."""
    from tunewise.config import config_from_dict
    from tunewise.lm.device import precision_for

    monkeypatch.delenv("TUNEWISE_CPU_BF16", raising=False)
    monkeypatch.setattr(device_module, "_cpuinfo_flags", lambda: set(flags.split()))
    monkeypatch.setattr(device_module, "pick_device", lambda: "cpu")
    assert device_module.cpu_has_bf16() is expected
    chosen = resolve_precision(device="cpu")
    assert (chosen.bf16, chosen.fp16) == (expected, False)
    assert chosen.dtype == (torch.bfloat16 if expected else torch.float32)
    assert ("bf16 matmul units" in device_module.describe_device("cpu")) is expected
    assert not resolve_precision(device="cpu", quantized=True).bf16, "a quantized base keeps fp32 compute"
    assert precision_for(config_from_dict({})).bf16 is expected
    assert not precision_for(config_from_dict({"method": "qlora", "quantization": {"bits": 4}})).bf16
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    resolve_precision(bf16=False, device="cpu")
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ, "fp32 leaves oneDNN as it is"
    resolve_precision(bf16=True, device="cpu")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == device_module.ONEDNN_CACHE_CAPACITY  # bf16 caps its cache
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    resolve_precision(bf16=True, device="cpu")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512", "a capacity the user set wins"
    assert resolve_precision(bf16=False, device="cpu").dtype == torch.float32  # training.bf16: false wins
    assert resolve_precision(bf16=True, device="cpu").bf16  # and true works on any CPU (emulated where no units)
    for forced, want in (("1", True), ("0", False)):  # every run, through the environment (the suite pins 0)
        monkeypatch.setenv("TUNEWISE_CPU_BF16", forced)
        assert resolve_precision(device="cpu").bf16 is want
        assert resolve_precision(device="cpu", quantized=True).bf16 is want


def test_a_training_step_under_cpu_bf16_autocast_stays_close_to_fp32(tiny_dir: Path) -> None:
    """The loss and the LoRA gradients of one step of the tiny model under CPU bf16 autocast, against fp32: bf16
    keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2% per operation), so after a few layers the loss is
    within 2% and the gradients point the same way (cosine > 0.98)."""
    from tests.conftest import reversal_rows
    from tunewise.config import config_from_dict
    from tunewise.example import Example
    from tunewise.lm.adapters import get_method
    from tunewise.lm.chat import encode_examples
    from tunewise.lm.collate import PadCollator
    from tunewise.lm.loading import load_base, load_tokenizer
    from tunewise.lm.loss import sparse_causal_lm_loss

    config = config_from_dict({"model": str(tiny_dir), "method": "lora", "lora": {"r": 8, "dropout": 0.0}})
    tokenizer = load_tokenizer(str(tiny_dir))
    encoded = encode_examples([Example.from_record(r) for r in reversal_rows(8, seed=1)], tokenizer)
    batch = PadCollator(tokenizer.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded])
    results = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        # as load_for_training does for LoRA: the frozen base in the training dtype, adapters trained under autocast
        model = get_method("lora").prepare(load_base(config, dtype=dtype, device="cpu"), config)
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss, _ = sparse_causal_lm_loss(model, batch)
        loss.backward()
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad])
        results[name] = (loss.item(), grads)
    (fp32_loss, fp32_grad), (bf16_loss, bf16_grad) = results["fp32"], results["bf16"]
    assert abs(bf16_loss - fp32_loss) / fp32_loss < 0.02, (bf16_loss, fp32_loss)
    assert torch.nn.functional.cosine_similarity(bf16_grad, fp32_grad, dim=0) > 0.98


def test_no_step_computes_the_vocabulary_at_every_position(tiny_tokenizer: Any, tmp_path: Path) -> None:
    """Training steps and the Trainer's evaluation (prediction_step) both project to the vocabulary only at positions
    that predict a trained token: the head never sees batch x length rows."""
    from tests.test_train_loss import examples, random_model
    from tunewise.config import config_from_dict
    from tunewise.lm.chat import encode_examples
    from tunewise.lm.collate import PadCollator
    from tunewise.train.run import to_dataset, training_arguments
    from tunewise.train.trainer import TunewiseTrainer

    config = config_from_dict({"method": "full", "training": {"max_steps": 2, "per_device_train_batch_size": 4,
                                                              "per_device_eval_batch_size": 4, "logging_steps": 1,
                                                              "learning_rate": 1e-4,
                                                              "save_steps": 100}})
    model = random_model(tiny_tokenizer)
    encoded = encode_examples(examples(), tiny_tokenizer)
    collator = PadCollator(tiny_tokenizer.pad_token_id)
    rows: list[tuple[bool, int, int]] = []  # (training, head output dims, head rows)

    def remember(module: Any, args: tuple, output: torch.Tensor) -> None:
        rows.append((model.training, output.dim(), output.shape[0]))

    model.lm_head.register_forward_hook(remember)
    args = training_arguments(config, tmp_path, has_eval=True, precision=resolve_precision(device="cpu"))
    trainer = TunewiseTrainer(model=model, args=args, train_dataset=to_dataset(encoded),
                              eval_dataset=to_dataset(encoded), data_collator=collator)
    trainer.train()  # 2 steps of 4: one pass over the 8 examples
    trainer.evaluate()
    trained = sum(e.n_trained for e in encoded)  # each trained token is predicted from the position before it
    assert all(dims == 2 for _, dims, _ in rows), rows  # (positions, vocabulary): never batch x length x vocabulary
    assert sum(n for training, _, n in rows if training) == trained
    # the in-training evaluation at the end of the epoch, then evaluate(): prediction_step, sparse as well
    assert sum(n for training, _, n in rows if not training) == 2 * trained


def test_the_estimate_counts_onednn_s_cache_under_cpu_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU bf16 autocast keeps ~700 MiB of oneDNN primitives (measured); the estimate adds it only there."""
    from tunewise.config import config_from_dict
    from tunewise.decide.estimate import CPU_BF16_KERNEL_CACHE, Memory, cpu_kernel_cache_bytes

    config = config_from_dict({})
    monkeypatch.setenv("TUNEWISE_CPU_BF16", "1")
    assert cpu_kernel_cache_bytes(config, "cpu") == CPU_BF16_KERNEL_CACHE
    assert cpu_kernel_cache_bytes(config, "cuda") == 0
    monkeypatch.setenv("TUNEWISE_CPU_BF16", "0")
    assert cpu_kernel_cache_bytes(config, "cpu") == 0
    parts = dict(runtime=1, weights=2, gradients=3, optimizer=4, optimizer_step_temp=5, activations=6,
                 activations_checkpointed=1, logits=7, factor=2.0)
    assert Memory(**parts, kernel_cache=100).peak() - Memory(**parts).peak() == 100


def test_evaluation_is_fp32_on_a_cpu_whatever_training_uses() -> None:
    """CPU evaluation stays fp32 (batch-invariant answers; bf16 label ranking measured 2-4x slower); a GPU evaluates in
    its training precision."""
    from tunewise.lm.device import Precision, evaluation_dtype

    assert evaluation_dtype(Precision(device="cpu", bf16=True, fp16=False)) == torch.float32
    assert evaluation_dtype(Precision(device="cpu", bf16=False, fp16=False)) == torch.float32
    assert evaluation_dtype(Precision(device="cuda", bf16=True, fp16=False)) == torch.bfloat16
    assert evaluation_dtype(Precision(device="cuda", bf16=False, fp16=True)) == torch.float16
