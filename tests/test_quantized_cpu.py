"""4-bit and 8-bit bases on the CPU whatever its flags: bitsandbytes' packed avx512_bf16 kernel is forced on and off
(no test relies on this machine's CPU), quantized training is verified before it runs, library warnings of
incorrect results become guard warnings, and a broken kernel stops the run with a message that says what to do."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from tests.conftest import reversal_rows
from tunewise import pipeline
from tunewise.config import config_from_dict
from tunewise.lm.bnb_cpu import is_packed, linear4bit_modules, pack_for_cpu
from tunewise.monitor.guards import TrainingStopped
from tunewise.rundir import read_jsonl
from tunewise.train.verify_quantized import QuantizedTrainingError

AUTOGRAD_WARNING = ("bitsandbytes::gemv_4bit: an autograd kernel was not registered to the Autograd key(s) but we are "
                    "trying to backprop through it. This may lead to silently incorrect behavior.")


@pytest.fixture(params=[False, True], ids=["packed-kernel-off", "packed-kernel-on"])
def avx512_bf16(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """bitsandbytes believes the CPU has (or lacks) avx512_bf16, whatever this machine's CPU says: every Linear4bit
    built in the test reads it (``support_avx512bf16_for_cpu``), and so does ``tunewise doctor``."""
    import bitsandbytes.functional
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: request.param)
    monkeypatch.setattr(bitsandbytes.functional, "has_avx512bf16", lambda: request.param)
    return request.param


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("qlora_data") / "reverse.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(240, seed=5)), encoding="utf-8")
    return path


def qlora_run(tmp: Path, tiny_dir: Path, data_file: Path, name: str, bits: int = 4, steps: int = 24) -> Any:
    config = config_from_dict({
        "name": name, "output_dir": str(tmp / "runs"), "model": str(tiny_dir), "method": "qlora",
        "quantization": {"bits": bits}, "data": {"path": str(data_file), "split": {"train": 0.8, "val": 0.1, "test": 0.1}},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {"max_steps": steps, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "warmup_steps": 0,
                     "logging_steps": 1, "save_steps": 1000, "eval_steps": 1000, "group_by_length": False},
        "eval": {"max_examples": 8, "max_new_tokens": 8, "metrics": ["exact_match"]},
        "monitor": {"plots": False, "live": "off"},
    })
    run = pipeline.init_run(config)
    pipeline.prepare_stage(config, run)
    return config, run


def train_losses(run: Any) -> list[float]:
    return [r["loss"] for r in read_jsonl(run.metrics) if r["kind"] == "train"]


def test_4bit_qlora_trains_and_evaluates_with_the_packed_cpu_kernel_on_and_off(
        avx512_bf16: bool, tiny_dir: Path, data_file: Path, tmp_path: Path) -> None:
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tunewise.evaluate.run import evaluate_run
    from tunewise.train.run import train_run

    # what bitsandbytes alone would do: every layer on the packed path, and the tiny model's 96-wide layers crash
    raw = AutoModelForCausalLM.from_pretrained(tiny_dir, quantization_config=BitsAndBytesConfig(load_in_4bit=True),
                                               device_map={"": "cpu"})
    assert all(m.support_avx512bf16_for_cpu == avx512_bf16 for m in raw.modules() if isinstance(m, Linear4bit))
    if avx512_bf16:
        with pytest.raises(RuntimeError, match="is invalid for input of size"), torch.no_grad():
            raw.eval()(input_ids=torch.tensor([[1, 2, 3]]))

    config, run = qlora_run(tmp_path, tiny_dir, data_file, "qlora-4bit")
    summary = train_run(config, run.root)
    check = summary["quantized_check"]
    assert check["ok"] and check["cosine"] > 0.9999 and "4-bit nf4" in check["path"] and check["packed_layers"] == 0
    losses = train_losses(run)
    assert len(losses) == 24 and sum(losses[-4:]) / 4 < 0.75 * losses[0], f"4-bit QLoRA did not learn: {losses}"
    result = evaluate_run(config, run.root, "tuned")  # eval mode, no grad: where bitsandbytes would repack
    assert result["n"] == 8


def test_the_gradient_check_sees_the_packed_kernel_and_moves_layers_off_it(
        tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tunewise.lm.adapters import get_method
    from tunewise.lm.loading import load_for_training
    from tunewise.train.verify_quantized import check_quantized_gradients, verify_quantized_training

    config = config_from_dict({"model": str(tiny_dir), "method": "qlora", "lora": {"dropout": 0.05}})
    model, _, _ = load_for_training(config, get_method("qlora"))
    batch = {"input_ids": torch.tensor([[5, 60, 70, 80, 90, 100, 7]]),
             "labels": torch.tensor([[-100, -100, -100, 80, 90, 100, 7]])}
    assert check_quantized_gradients(model, batch).ok
    # what an eval pass does on an avx512_bf16 CPU to every layer whose shape the packed kernel takes (down_proj here)
    assert pack_for_cpu(model) == 4
    broken = check_quantized_gradients(model, batch)
    assert not broken.ok and broken.cosine < 0.9 and broken.packed_layers == 4
    with caplog.at_level(logging.WARNING):
        fixed = verify_quantized_training(model, batch)  # the automatic fallback: unpack, check again
    assert fixed.ok and fixed.packed_layers == 0
    assert not any(is_packed(m) for _, m in linear4bit_modules(model))
    assert "moved them to the unpacked path" in caplog.text


def _no_input_gradient(model: torch.nn.Module) -> None:
    """A kernel with a right forward and no backward (bitsandbytes' packed gemv_4bit on a real avx512_bf16 CPU)."""
    for _, module in linear4bit_modules(model):
        forward = type(module).forward
        module.forward = lambda x, module=module, forward=forward: forward(module, x.detach())


def test_a_wrong_quantized_kernel_stops_the_run_before_training(
        tiny_dir: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunewise.record import read_record
    from tunewise.lm import loading
    from tunewise.train import run as train_module

    load = loading.load_base

    def broken_base(*args: Any, **kwargs: Any) -> Any:
        model = load(*args, **kwargs)
        _no_input_gradient(model)
        return model

    monkeypatch.setattr(loading, "load_base", broken_base)
    config, run = qlora_run(tmp_path, tiny_dir, data_file, "broken")
    with pytest.raises(QuantizedTrainingError) as error:
        train_module.train_run(config, run.root)
    message = str(error.value)
    assert "quantized training check failed" in message and "cosine" in message
    assert "bitsandbytes" in message and "4-bit nf4" in message  # which library path
    assert "method: lora" in message and "quantization.bits: 8" in message  # what to do
    assert read_record(run.root)["status"] == "failed"
    assert not run.metrics.exists() or not train_losses(run), "nothing was trained"


class Fault(TrainerCallback):
    """At the end of step ``step``: warn as torch does for a kernel without backward, and (``pack``) repack the 4-bit
    layers as an eval pass on an avx512_bf16 CPU would, or (``cut``) drop their input gradients."""

    def __init__(self, step: int, fault: str) -> None:
        self.step, self.fault = step, fault

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step == self.step:
            if self.fault == "pack":
                pack_for_cpu(model)
            elif self.fault == "cut":
                _no_input_gradient(model)
            warnings.warn(AUTOGRAD_WARNING, UserWarning)


@pytest.mark.parametrize("fault", ["warn", "pack", "cut"])
def test_library_warnings_of_incorrect_results_become_guard_warnings(
        fault: str, tiny_dir: Path, data_file: Path, tmp_path: Path) -> None:
    from tunewise.train.run import train_run

    config, run = qlora_run(tmp_path, tiny_dir, data_file, f"warned-{fault}", steps=6)
    if fault == "cut":  # the re-check fails: the run stops, the last step's weights are not saved
        with pytest.raises(TrainingStopped, match="quantized training check failed"):
            train_run(config, run.root, callbacks=[Fault(3, fault)])
        records = read_jsonl(run.metrics)
        assert [(r["event"], r["step"]) for r in records if r["kind"] == "error"] == [("incorrect_gradients", 3)]
        assert max(r["step"] for r in records if r["kind"] == "train") < 3  # stopped before logging its step
        return
    summary = train_run(config, run.root, callbacks=[Fault(3, fault)])
    assert summary["steps"] == 6
    warned = [r for r in read_jsonl(run.metrics) if r["kind"] == "warning" and r["event"] == "library_warning"]
    assert len(warned) == 1 and warned[0]["step"] == 3
    assert "silently incorrect" in warned[0]["message"] and "still correct" in warned[0]["message"]
    saved = json.loads(run.summary.read_text(encoding="utf-8"))
    assert any(w["event"] == "library_warning" for w in saved["warnings"])  # what the report shows


def test_advise_never_recommends_qlora_that_fails_the_check_here(
        tiny_dir: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_advise import _decide, _estimates
    from tunewise.decide.footprint import method_config
    from tunewise.lm import loading
    from tunewise.train.verify_quantized import check_on_this_machine

    config, run = qlora_run(tmp_path, tiny_dir, data_file, "advise-check")
    passed = check_on_this_machine(method_config(config, "qlora"), run.root)
    assert passed["ok"] and "message" not in passed
    load = loading.load_base
    monkeypatch.setattr(loading, "load_base", lambda *a, **k: (_no_input_gradient(m := load(*a, **k)), m)[1])
    failed = check_on_this_machine(method_config(config, "qlora"), run.root)
    assert not failed["ok"] and "quantized training check failed" in failed["message"]

    only_qlora_fits = _estimates(30000, 13000, 4000)
    assert _decide(estimates=only_qlora_fits, qlora_check=passed)[0] == "qlora"
    decision, _, _, not_chosen, rules, _ = _decide(estimates=only_qlora_fits, qlora_check=failed)
    assert decision == "prompting" and "trains wrongly on this machine" in not_chosen["qlora"]
    assert not {r.id: r for r in rules}["qlora_trains_correctly"].fired
