"""The advisor: task inference, the listed rules, measured prompting baselines, advice.json, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunewise.errors import DataError
from typer.testing import CliRunner

from tunewise.config import config_from_dict
from tunewise.example import Example
from tunewise.decide.advise import TaskInfo, decide, infer_task

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ROOT / "examples" / "topics" / "topics.jsonl"


def _chat(user: str, answer: str) -> Example:
    return Example(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}])


def test_task_is_inferred_from_the_answers() -> None:
    labels = [_chat(f"message {i}", ["spam", "ham", "other"][i % 3]) for i in range(30)]
    assert infer_task(labels).task == "classification"
    assert infer_task(labels).labels == ["ham", "other", "spam"]
    json_rows = [_chat(f"Alice is {i}", json.dumps({"name": "Alice", "age": i})) for i in range(20)]
    info = infer_task(json_rows)
    assert info.task == "extraction" and info.json_answers
    code = [_chat(f"write f{i}", f"def f{i}(x):\n    return x + {i}") for i in range(20)]
    assert infer_task(code).task == "code"
    long_text = " ".join(f"word{j}" for j in range(120))
    summaries = [_chat(f"{long_text} item{i}", " ".join(long_text.split()[:20])) for i in range(20)]
    assert infer_task(summaries).task == "summarisation"
    prose = [_chat(f"tell me about {i}", f"a story number {i} with many different words {i * 7}") for i in range(20)]
    assert infer_task(prose).task == "generation"


def _estimates(full: float, lora: float, qlora: float, minutes: float = 10.0) -> dict[str, Any]:
    def one(peak: float) -> dict[str, Any]:
        return {"memory": {"peak_mb": peak, "peak_mb_without_checkpointing": peak, "peak_mb_with_checkpointing": peak * 0.6},
                "cost": {"device_hours": minutes / 60}, "time": {"total_s": minutes * 60, "source": "calibration"}}

    return {"full": one(full), "lora": one(lora), "qlora": one(qlora)}


def _baselines(zero: float, few: float) -> dict[str, Any]:
    return {"n": 40, "variants": {"zero_shot": {"metrics": {"exact_match": zero}},
                                  "few_shot": {"metrics": {"exact_match": few}}}}


def _decide(**overrides: Any) -> Any:
    args: dict[str, Any] = dict(
        task=TaskInfo("classification", "given", labels=["a", "b"]), strict_format=True, examples=600,
        metric="exact_match", baselines=_baselines(0.1, 0.3), estimates=_estimates(3000, 1500, 1400),
        available_mb=8000,
    )
    args.update(overrides)
    return decide(**args)


def test_every_rule_is_listed_fired_or_not() -> None:
    decision, ckpt, reasons, not_chosen, rules, _ = _decide()
    assert decision == "lora" and not ckpt
    by_id = {r.id: r for r in rules}
    assert set(by_id) >= {"prompting_reaches_target", "enough_data", "strict_format_gap", "full_fits_memory",
                          "lora_fits_memory", "qlora_fits_memory", "full_needs_large_data",
                          "qlora_only_when_lora_does_not_fit"}
    assert not by_id["prompting_reaches_target"].fired and by_id["enough_data"].fired
    assert by_id["strict_format_gap"].fired and not by_id["full_needs_large_data"].fired
    assert all(r.evidence for r in rules)
    assert set(not_chosen) == {"full", "qlora", "prompting"}, "every option not taken says why"


def test_decisions_follow_the_measurements() -> None:
    assert _decide(baselines=_baselines(0.2, 0.95))[0] == "prompting"
    assert _decide(examples=40)[0] == "prompting"  # too little data
    assert _decide(estimates=_estimates(30000, 13000, 4000))[0] == "qlora"  # only QLoRA fits 8 GB
    decision, ckpt, *_ = _decide(estimates=_estimates(30000, 12000, 11000))  # LoRA fits with checkpointing
    assert decision == "lora" and ckpt
    assert _decide(examples=20000, estimates=_estimates(5000, 1500, 1400))[0] == "full"
    decision, _, reasons, not_chosen, *_ = _decide(budget_hours=0.05)  # 10 min estimated, 3 min allowed
    assert decision == "prompting" and "over budget" in not_chosen["lora"]


@pytest.fixture(scope="module")
def topics_config(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return config_from_dict({
        "name": "advise", "output_dir": str(tmp_path_factory.mktemp("runs")), "model": str(tiny_dir), "method": "lora",
        "data": {"path": str(TOPICS), "format": "chat", "max_examples": 240, "stratify_by": "label",
                 "split": {"train": 0.8, "val": 0.1, "test": 0.1}},
        "training": {"per_device_train_batch_size": 8, "epochs": 1},
        "eval": {"max_new_tokens": 6, "batch_size": 32},
        "monitor": {"live": "off", "plots": False},
    })


def test_prompting_baseline_is_measured_from_real_generations(tiny_dir: Path, tiny_tokenizer: Any) -> None:
    from tunewise.decide.baseline import choose_sample, few_shot, measure_prompting
    from tunewise.lm.loading import load_model
    from tunewise.lm.chat import render_prompt

    rows = [json.loads(line) for line in TOPICS.read_text(encoding="utf-8").splitlines()[:200]]
    examples = [Example.from_record(r) for r in rows]
    sample = choose_sample(examples[:150], examples[150:160], size=12, shots=3, seed=0, labels=["ai", "botprofile"])
    assert sample.from_val == 10 and sample.from_train == 2 and len(sample.shots) == 3
    assert not {id(s) for s in sample.shots} & {id(r) for r in sample.rows}
    prompt = render_prompt(few_shot(sample.rows[0], sample.shots, "Answer with one label.").prompt_messages, tiny_tokenizer)
    assert all(s.reference in prompt for s in sample.shots) and "Answer with one label." in prompt
    model = load_model(str(tiny_dir))
    result = measure_prompting(model, tiny_tokenizer, sample, ["exact_match", "token_f1"], text="Answer with one label.",
                               max_new_tokens=6, batch_size=16)
    for variant in ("zero_shot", "few_shot"):
        assert result[variant]["n"] == 12
        assert 0.0 <= result[variant]["metrics"]["exact_match"] <= 1.0
        assert "label_found" in result[variant]["metrics"]
        assert any(e["prediction"] for e in result[variant]["examples"]), "answers come from real generation"


def test_advise_writes_advice_json(topics_config: Any) -> None:
    from tunewise.decide.advise import advise_run
    from tunewise.pipeline import prepare_stage
    from tunewise.runs import init_run

    run = init_run(topics_config)
    with pytest.raises(DataError, match="tunewise data prepare"):
        advise_run(topics_config, run.root, calibrate=False)
    prepare_stage(topics_config, run)
    advice = advise_run(topics_config, run.root, sample_size=8, shots=2, calibrate=False)
    saved = json.loads((run.root / "advice.json").read_text())
    assert saved["decision"] == advice.decision and saved["decision"] in ("prompting", "full", "lora", "qlora")
    assert saved["inputs"]["task"] == "classification" and saved["inputs"]["strict_format"] is True
    assert saved["baselines"]["n"] == 8 and set(saved["baselines"]["variants"]) == {"zero_shot", "few_shot"}
    assert isinstance(saved["baselines"]["variants"]["few_shot"]["metrics"]["exact_match"], float)
    assert {r["id"] for r in saved["rules"]} >= {"prompting_reaches_target", "enough_data", "lora_fits_memory"}
    assert set(saved["estimates"]["methods"]) == {"full", "lora", "qlora"}


def test_cli_estimate_and_advise(topics_config: Any) -> None:
    from tunewise.cli import app
    from tunewise.runs import init_run

    runner = CliRunner()
    run = init_run(topics_config)
    config_file = run.root / "config.yaml"
    result = runner.invoke(app, ["estimate", str(config_file), "--no-calibrate", "--methods", "lora,full",
                                 "--price-per-hour", "1.5"])
    assert result.exit_code == 0, result.output
    assert "method" in result.output and "lora" in result.output and "full" in result.output and "device" in result.output
    assert (run.root / "estimate.json").is_file()
    # the config's decide: section gives advise its inputs; an option on the command line wins over it
    result = runner.invoke(app, ["advise", str(config_file), "decide.sample=9", "decide.shots=2", "decide.calibrate=false",
                                 "decide.task=generation", "decide.target=0.5", "--sample", "6"])
    assert result.exit_code == 0, result.output
    assert "decision:" in result.output and "rules" in result.output and "not fired" in result.output
    saved = json.loads((run.root / "advice.json").read_text())
    assert saved["baselines"]["n"] == 6 and saved["baselines"]["shots"] == 2
    assert (saved["inputs"]["task"], saved["inputs"]["task_source"], saved["inputs"]["target"]) == ("generation", "given", 0.5)
    result = runner.invoke(app, ["estimate", str(config_file), "decide.methods=[lora]", "decide.calibrate=false"])
    assert result.exit_code == 0, result.output
    assert list(json.loads((run.root / "estimate.json").read_text())["methods"]) == ["lora"]
    result = runner.invoke(app, ["advise", str(config_file), "--task", "poetry"])
    assert result.exit_code == 2 and "unknown task" in result.output
    result = runner.invoke(app, ["estimate", str(config_file), "--methods", "magic"])
    assert result.exit_code == 2 and "magic" in result.output
