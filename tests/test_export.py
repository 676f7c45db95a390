"""Export: the merged model reproduces the adapter (else nothing is saved), quantized exports are smaller, load from
safetensors only, and report their quality; answer perplexity is the training loss's exponent."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import reversal_rows
from tunewise.example import Example

def train_tiny_run(tiny_dir: Path, root: Path, steps: int = 60, lr: float = 3e-3, method: str = "lora") -> tuple[Any, Path]:
    """A LoRA (or ``method``) run on the toy reversal task, trained once per test session (cached under ``root``)."""
    from tunewise import pipeline
    from tunewise.config import config_from_dict

    data = root / "reverse.jsonl"
    config = config_from_dict({
        "name": f"reverse-{method}", "output_dir": str(root / "runs"), "model": str(tiny_dir), "method": method,
        "data": {"path": str(data)},
        "training": {"max_steps": steps, "learning_rate": lr, "logging_steps": 20, "save_steps": 1000,
                     "per_device_train_batch_size": 8},
        "eval": {"max_examples": 24, "max_new_tokens": 16, "metrics": ["exact_match", "token_f1"]},
    })
    run_dir = Path(config.run_dir)
    if not (run_dir / "model" / "adapter_config.json").is_file():
        from tunewise.train.run import train_run

        root.mkdir(parents=True, exist_ok=True)
        if not data.is_file():
            data.write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(400, seed=11)), encoding="utf-8")
        run = pipeline.init_run(config)
        pipeline.prepare_stage(config, run)
        train_run(config, run.root)
    return config, run_dir


@pytest.fixture(scope="module")
def lora_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    return train_tiny_run(tiny_dir, tmp_path_factory.getbasetemp() / "ship-run")


@pytest.fixture(scope="module")
def merged(lora_run: tuple[Any, Path]) -> dict[str, Any]:
    from tunewise.export.merge import merge_run

    config, run_dir = lora_run
    return merge_run(config, run_dir, sample=12)


def test_perplexity_is_exp_of_the_model_loss(tiny_dir: Path, tiny_tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM

    from tunewise.evaluate.perplexity import answer_nll, perplexity
    from tunewise.lm.chat import encode_examples

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir)).eval()
    examples = [Example.from_record(r) for r in reversal_rows(6, seed=3)]
    total, n = 0.0, 0
    for enc in encode_examples(examples, tiny_tokenizer):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels]))
        k = enc.n_trained  # every trained token is predicted from the one before it
        total, n = total + out.loss.item() * k, n + k
    ours_total, ours_n = answer_nll(model, tiny_tokenizer, examples, batch_size=4)  # padded batches
    assert ours_n == n
    assert ours_total == pytest.approx(total, rel=1e-4)
    assert perplexity(model, tiny_tokenizer, examples, 1) == pytest.approx(math.exp(total / n), rel=1e-4)


def test_merge_is_verified_and_loads_as_a_plain_model(lora_run: tuple[Any, Path], merged: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM

    config, run_dir = lora_run
    assert merged["verified"] and merged["peft_type"] == "LORA"
    assert merged["max_abs_logit_diff"] < 1e-3
    assert merged["greedy_identical"] == merged["greedy_compared"] == 12
    folder = run_dir / "export" / "merged"
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()
    assert (folder / "tokenizer.json").is_file() and (folder / "generation_config.json").is_file()
    assert json.loads((run_dir / "export" / "merge.json").read_text())["verified"] is True

    # not vacuous: the merged weights differ from the base's (the adapter learned something)
    merged_model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    base = AutoModelForCausalLM.from_pretrained(config.model, use_safetensors=True)
    name = next(n for n, _ in merged_model.named_parameters() if n.endswith("q_proj.weight"))
    delta = (dict(merged_model.named_parameters())[name] - dict(base.named_parameters())[name]).abs().max().item()
    assert delta > 1e-4


@pytest.mark.parametrize("method,peft_type", [("dora", "LORA"), ("ia3", "IA3")])
def test_dora_and_ia3_merge_into_the_same_model(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                                               method: str, peft_type: str) -> None:
    from transformers import AutoModelForCausalLM

    from tunewise.export.merge import merge_run

    config, run_dir = train_tiny_run(tiny_dir, tmp_path_factory.getbasetemp() / "ship-run", steps=20, lr=1e-2,
                                     method=method)
    report = merge_run(config, run_dir, sample=8)
    assert report["verified"] and report["peft_type"] == peft_type
    assert report["max_abs_logit_diff"] < 1e-3 and report["greedy_identical"] == report["greedy_compared"] == 8
    merged_model = AutoModelForCausalLM.from_pretrained(str(run_dir / "export" / "merged"), use_safetensors=True)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    changed = [n for n, p in merged_model.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert changed, "the merge folded nothing into the base"


def test_merge_that_changes_answers_is_refused(lora_run: tuple[Any, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from peft.tuners.lora import LoraModel

    from tunewise.export.merge import MergeVerificationError, merge_run

    config, run_dir = lora_run
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("export", "checkpoints"))
    original = LoraModel.merge_and_unload

    def broken_merge(self: Any, *args: Any, **kwargs: Any) -> Any:
        model = original(self, *args, **kwargs)
        with torch.no_grad():
            model.model.layers[0].self_attn.q_proj.weight.add_(0.05)  # a merge bug: slightly wrong weights
        return model

    monkeypatch.setattr(LoraModel, "merge_and_unload", broken_merge)
    with pytest.raises(MergeVerificationError, match="does not reproduce the adapter"):
        merge_run(config, copy, sample=4)
    assert not (copy / "export" / "merged").exists()
    report = json.loads((copy / "export" / "merge.json").read_text())
    assert report["verified"] is False and report["max_abs_logit_diff"] > report["atol"]


def test_merge_of_a_full_model_says_what_to_do(tmp_path: Path, tiny_dir: Path) -> None:
    from tunewise.config import config_from_dict
    from tunewise.export.merge import merge_run

    shutil.copytree(tiny_dir, tmp_path / "run" / "model")
    config = config_from_dict({"model": str(tiny_dir), "method": "full"})
    with pytest.raises(ValueError, match="full fine-tuned model.*--quantize"):
        merge_run(config, tmp_path / "run")


def test_quantized_exports_are_smaller_and_measured(lora_run: tuple[Any, Path], merged: dict[str, Any]) -> None:
    from tunewise.export.common import load_exported
    from tunewise.export.quantize import quantize_run

    config, run_dir = lora_run
    report = quantize_run(config, run_dir, ["int8", "bnb-8bit", "bnb-4bit"], max_examples=16)
    assert report["n"] == 16
    before = report["before"]
    assert set(before["metrics"]) == {"exact_match", "token_f1"} and before["perplexity"] > 1
    sizes = {}
    for scheme in ("int8", "bnb-8bit", "bnb-4bit"):
        entry = report["schemes"][scheme]
        folder = Path(entry["output"])
        assert (folder / "model.safetensors").is_file()
        assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt")), "no pickle in an export"
        assert "quantization_config" in json.loads((folder / "config.json").read_text())
        sizes[scheme] = entry["size_bytes"]["weights"]
        assert entry["weights_ratio"] < 0.75
        after = entry["after"]
        assert math.isfinite(after["perplexity"]) and after["perplexity"] < 2 * before["perplexity"]
        assert entry["change"]["perplexity"] == pytest.approx(after["perplexity"] - before["perplexity"])
    assert sizes["bnb-4bit"] < sizes["bnb-8bit"]
    saved = json.loads((run_dir / "export" / "quantize.json").read_text())
    assert set(saved["schemes"]) >= {"int8", "bnb-8bit", "bnb-4bit"}

    model = load_exported(run_dir / "export" / "int8")  # back from safetensors, still quantized
    assert type(model.model.layers[0].mlp.up_proj.weight).__name__ != "Parameter"


def test_a_pickle_checkpoint_is_refused(tmp_path: Path, tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tunewise.export.common import load_exported

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle checkpoint
    with pytest.raises(OSError):
        load_exported(tmp_path)
