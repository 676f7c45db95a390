"""Preference objectives trained from the command line on the tiny model (each command its own process): DPO with
LoRA learns to rank the reversed word above the word as given, logs its rewards, resumes after a kill exactly like the
uninterrupted run, and its evaluation scores held-out pairs for base and tuned; ORPO and KTO train and log theirs."""

from __future__ import annotations

import hashlib
import random
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.cli_processes import Zygote, stop_at_open
from tests.conftest import reversal_rows
from tests.test_crash_safety import effective
from tunewise.config import config_from_dict
from tunewise.example import Example
from tunewise.monitor.metrics import read_metrics
from tunewise.rundir import RunDir, atomic_write_jsonl
from tunewise.runs import init_run


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def pairs(n: int, seed: int) -> list[Example]:
    """The reversal task as pairs: chosen = the letters reversed, rejected = the letters as given."""
    out = []
    for row in reversal_rows(n, seed=seed):
        user, answer = row["messages"]
        given = " ".join(reversed(answer["content"].split(" ")))
        if given != answer["content"]:  # a palindrome is no pair
            out.append(Example(messages=[user, answer], rejected=[{"role": "assistant", "content": given}]))
    return out


def make_run(root: Path, tiny_dir: Path, name: str, objective: str, **training: Any) -> RunDir:
    """A run whose RUN/data holds preference examples (written as `tunewise data prepare` writes them)."""
    config = config_from_dict({
        "name": name, "output_dir": str(root), "model": str(tiny_dir), "method": "lora", "objective": objective,
        "data": {"max_tokens": 64}, "lora": {"r": 8, "alpha": 16, "dropout": 0.1},  # dropout: RNG restored on resume
        "monitor": {"live": "plain", "plots": True},
        "eval": {"max_new_tokens": 12, "few_shot": 0, "batch_size": 16},
        "training": {"max_steps": 12, "per_device_train_batch_size": 4, "learning_rate": 5e-3, "warmup_steps": 0,
                     "logging_steps": 1, "eval_steps": 4, "save_steps": 4, **training},
    })
    run = init_run(config)
    examples = pairs(140, seed=11)
    if objective == "kto":  # each pair as two marked answers
        marked = [Example(messages=e.messages, desirable=True) for e in examples[:60]]
        marked += [Example(messages=e.prompt_messages + e.rejected, desirable=False) for e in examples[60:120]]
        random.Random(0).shuffle(marked)
        train, val = marked[:100], marked[100:]
    else:
        train, val = examples[:100], examples[100:116]
    run.data.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(run.split("train"), [e.to_record() for e in train])
    atomic_write_jsonl(run.split("val"), [e.to_record() for e in val])
    atomic_write_jsonl(run.split("test"), [e.to_record() for e in examples[116:]])
    return run


def ok(command: Any) -> Any:
    assert command.code == 0, command.stderr[-4000:]
    return command


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dpo_learns_logs_resumes_exactly_and_is_evaluated_on_pairs(zygote: Zygote, tiny_dir: Path,
                                                                     tmp_path: Path) -> None:
    whole = make_run(tmp_path, tiny_dir, "whole", "dpo")
    ok(zygote.run("train", str(whole.root)))
    records = [r for r in read_metrics(whole.metrics) if r["kind"] in ("train", "eval")]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert all({"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(r) for r in train)
    assert evals[-1]["eval_rewards/margins"] > evals[0]["eval_rewards/margins"] > 0
    assert evals[-1]["eval_rewards/accuracies"] >= 0.9
    assert train[0]["loss"] == pytest.approx(0.6931, abs=0.02), "policy == reference at the start: log 2"
    assert whole.read_json(whole.train_summary)["objective"] == "dpo"
    assert (whole.plots / "rewards.png").is_file() and (whole.plots / "reward_accuracy.png").is_file()

    killed = make_run(tmp_path, tiny_dir, "killed", "dpo")
    session = zygote.start("train", str(killed.root), setup=stop_at_open("metrics.jsonl", after_step=6))
    session.wait_stopped()
    session.kill()
    assert session.wait() == -signal.SIGKILL  # gone (and reaped) before the resume looks at its lock
    ok(zygote.run("train", str(killed.root), "--resume"))
    assert effective(killed.root) == effective(whole.root), "a resumed DPO run is the uninterrupted run"
    assert sha256(killed.model / "adapter_model.safetensors") == sha256(whole.model / "adapter_model.safetensors")

    for model in ("base", "tuned"):
        ok(zygote.run("eval", str(whole.root), "--model", model))
    base, tuned = (whole.read_json(whole.eval_metrics(m)) for m in ("base", "tuned"))
    assert tuned["metrics"]["preference_accuracy"] > base["metrics"]["preference_accuracy"] + 0.3
    ok(zygote.run("compare", str(whole.root)))
    comparison = whole.read_json(whole.comparison)
    assert comparison["main_metric"] == "preference_accuracy"
    assert comparison["metrics"]["preference_accuracy"]["deltas"]["tuned"]["ci"][0] > 0


@pytest.mark.parametrize("objective, logged", [("orpo", {"nll_loss", "log_odds_ratio", "rewards/accuracies"}),
                                               ("kto", {"kl", "rewards/chosen", "rewards/rejected"})])
def test_orpo_and_kto_train_from_the_command_line(zygote: Zygote, tiny_dir: Path, tmp_path: Path, objective: str,
                                                  logged: set[str]) -> None:
    run = make_run(tmp_path, tiny_dir, objective, objective, max_steps=8)
    ok(zygote.run("train", str(run.root)))
    records = [r for r in read_metrics(run.metrics) if r["kind"] == "train"]
    assert len(records) == 8 and all(logged <= set(r) for r in records)
    evals = [r for r in read_metrics(run.metrics) if r["kind"] == "eval"]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert (run.model / "adapter_model.safetensors").is_file()
