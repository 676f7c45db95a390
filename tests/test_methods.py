"""Every training method on the tiny model: it learns the toy task, and its saved model reloads with standard APIs
(``PeftModel.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained``) and gives tunewise's evaluation answers."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import toy_config
from tunewise.config import ConfigError, config_from_dict

# method -> (config overrides, training overrides, metric that must improve, least gain over the base).
# Perplexity (lower is better) must fall by that fraction: 20 virtual tokens on a 4-layer model learn the task's
# distribution (test perplexity 34 -> 14) but not to reverse words, so prompt tuning's answers don't score yet.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str, float]] = {
    "dora": ({}, {"epochs": 1}, "token_f1", 0.2),
    # rsLoRA scales by alpha / sqrt(r): alpha 16 -> 4. At alpha 4 (scale 1) one epoch learned little and the gain hung
    # on the data order (+0.12 to +0.25 token F1 over six seeds, -0.02 with seed 42's order since the order of each
    # epoch is seeded; measured for issue 14); at 16 seed 42 gains +0.36
    "rslora": ({"method": "lora", "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "use_rslora": True}}, {"epochs": 1}, "token_f1", 0.2),
    "qlora-4bit": ({"method": "qlora", "quantization": {"bits": 4}}, {"epochs": 1}, "token_f1", 0.15),
    "qlora-8bit": ({"method": "qlora", "quantization": {"bits": 8}}, {"epochs": 1}, "token_f1", 0.15),
    "ia3": ({}, {"epochs": 1, "learning_rate": 0.03}, "token_f1", 0.08),
    "prompt": ({"prompt": {"num_virtual_tokens": 20, "init_text": "reverse the letters of the word"}},
               {"epochs": 2, "learning_rate": 0.1}, "perplexity", 0.4),
}


@pytest.fixture(scope="module")
def prepared(tiny_dir: Path, reversal_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The toy task's data prepared once, and the untuned base model's scores on it."""
    from tunewise.evaluate.run import evaluate_run
    from tunewise.pipeline import init_run, prepare_stage

    out = tmp_path_factory.mktemp("methods")
    config = toy_config(tiny_dir, reversal_file, out)
    run = init_run(config)
    prepare_stage(config, run)
    return {"out": out, "data": run.data, "base": evaluate_run(config, run.root, "base")}


def train_case(case: str, prepared: dict[str, Any], tiny_dir: Path, reversal_file: Path) -> tuple[Any, Path, dict, dict]:
    from tunewise.evaluate.run import evaluate_run
    from tunewise.runs import init_run
    from tunewise.train.run import train_run

    overrides, training, _, _ = CASES[case]
    raw = toy_config(tiny_dir, reversal_file, prepared["out"], **training).model_dump()
    raw.update({"name": case, "method": case, **overrides})
    if raw["method"] != "qlora":
        raw.pop("quantization", None)
    config = config_from_dict(raw)
    run = init_run(config)
    shutil.copytree(prepared["data"], run.data, dirs_exist_ok=True)
    summary = train_run(config, run.root)
    return config, run.root, summary, evaluate_run(config, run.root, "tuned")


def standard_greedy(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
    """Greedy answers one prompt at a time through plain ``model.generate`` (no tunewise code)."""
    answers = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def reload_standard(config: Any, run_dir: Path, tiny_dir: Path) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    model_dir = run_dir / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not (model_dir / "adapter_config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(model_dir), tokenizer
    kwargs: dict[str, Any] = {}
    if config.method == "qlora":
        import torch

        q = config.quantization
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True) if q.bits == 8 else BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
        )
        kwargs["device_map"] = {"": "cpu"}
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, **kwargs)
    # on a CPU with avx512_bf16, bitsandbytes' own eval-mode repacking crashes on the tiny model's 144-wide layers
    # (tunewise/lm/bnb_cpu.py): the one call a user of plain transformers + bitsandbytes needs there as well
    from tunewise.lm.bnb_cpu import keep_off_packed_cpu_kernel

    keep_off_packed_cpu_kernel(base)
    return PeftModel.from_pretrained(base, model_dir), tokenizer


@pytest.mark.parametrize("case", list(CASES))
def test_method_learns_and_reloads(case: str, prepared: dict[str, Any], tiny_dir: Path, reversal_file: Path) -> None:
    from tunewise.example import Example
    from tunewise.rundir import read_jsonl

    config, run_dir, summary, tuned = train_case(case, prepared, tiny_dir, reversal_file)
    metric, gain = CASES[case][2], CASES[case][3]
    base_score, tuned_score = prepared["base"]["metrics"][metric], tuned["metrics"][metric]
    if metric == "perplexity":
        assert tuned_score <= base_score * (1 - gain), f"{case}: perplexity {base_score:.2f} -> {tuned_score:.2f}"
    else:
        assert tuned_score >= base_score + gain, f"{case}: {metric} {base_score:.3f} -> {tuned_score:.3f}"
    assert summary["final_eval_loss"] < math.log(prepared["base"]["metrics"]["perplexity"]), "eval loss below the base's"
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]

    model, tokenizer = reload_standard(config, run_dir, tiny_dir)
    records = list(read_jsonl(run_dir / "eval" / "predictions_tuned.jsonl"))[:8]
    examples = [Example.from_record(r) for r in read_jsonl(run_dir / "data" / "test.jsonl")][:8]
    assert [e.prompt_messages[-1]["content"] for e in examples] == [r["input"] for r in records]
    answers = standard_greedy(model, tokenizer, [e.prompt_messages for e in examples], config.eval.max_new_tokens)
    assert answers == [r["prediction"] for r in records], f"{case}: standard reload answers differently"


def test_prefix_tuning_is_refused_with_the_reason_and_an_alternative() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"method": "prefix"})
    message = str(error.value)
    assert "generate()" in message and "ignores the learned prefix" in message and "method: prompt" in message


def test_quantization_belongs_to_qlora() -> None:
    assert config_from_dict({"method": "qlora"}).quantization.bits == 4
    with pytest.raises(ConfigError, match="method qlora only"):
        config_from_dict({"method": "lora", "quantization": {"bits": 8}})


def test_ia3_auto_targets_key_value_and_down_projections(tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tunewise.lm.adapters import resolve_ia3_modules

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert resolve_ia3_modules(model, config_from_dict({"method": "ia3"})) == (["down_proj", "k_proj", "v_proj"], ["down_proj"])
    bad = config_from_dict({"method": "ia3", "ia3": {"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}})
    with pytest.raises(ValueError, match="must also be in ia3.target_modules"):
        resolve_ia3_modules(model, bad)


def test_prompt_tuning_batches_never_mix_prompt_lengths() -> None:
    from tunewise.lm.generate import batches

    lengths = [3, 3, 4, 4, 4, 5]
    assert batches(list(range(6)), lengths, 2, same_length=True) == [[0, 1], [2, 3], [4], [5]]
    assert batches(list(range(6)), lengths, 4, same_length=False) == [[0, 1, 2, 3], [4, 5]]
