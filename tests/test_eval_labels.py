"""Constrained scoring: each label's log-likelihood after the prompt, one row per example with the prompt computed
once (4-D mask), the same numbers as scoring every label in its own row and as a plain forward pass; the few-shot
baseline and the constrained headline through `tunewise run` on a classification task."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunewise.example import Example
from tunewise.evaluate.labels import constrained_scores, reference_nll, score_labels
from tunewise.lm.chat import IGNORE_INDEX, encode_examples

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["sunny", "rain", "snow storm"]  # different token lengths; "snow storm" is two words


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path):
    from tunewise.lm.loading import load_model, load_tokenizer

    return load_model(str(tiny_dir)), load_tokenizer(str(tiny_dir))


def conversations(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "Name the weather."}, {"role": "user", "content": "what is it like " * (i + 1)}]
            for i in range(n)]  # fmt: skip


def direct(model, tokenizer, conversation, label) -> float:
    """The label's log-likelihood from a plain forward pass over the whole example (answer + end of turn)."""
    enc = encode_examples([Example(messages=[*conversation, {"role": "assistant", "content": label}])], tokenizer, loss_on="last_turn")[0]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([enc.input_ids])).logits[0].float(), -1)
    return sum(float(logprobs[j - 1, t]) for j, t in enumerate(enc.labels) if t != IGNORE_INDEX)


def test_shared_prompt_rows_equal_one_row_per_label_and_a_plain_forward(tiny):
    model, tokenizer = tiny
    convs = conversations(5)  # prompts of different lengths in one batch: padded rows
    shared = score_labels(model, tokenizer, convs, LABELS, shared=True, batch_size=4)
    plain = score_labels(model, tokenizer, convs, LABELS, shared=False, batch_size=4)
    auto = score_labels(model, tokenizer, convs, LABELS)
    for a, b, c, conv in zip(shared, plain, auto, convs):
        for label in LABELS:
            assert a.logprobs[label] == pytest.approx(b.logprobs[label], abs=1e-4)
            assert c.logprobs[label] == pytest.approx(b.logprobs[label], abs=1e-4)
            assert a.logprobs[label] == pytest.approx(direct(model, tokenizer, conv, label), abs=1e-4)
        assert a.tokens["snow storm"] > a.tokens["rain"] >= 2  # the label's tokens and the end of turn
        assert a.best == max(LABELS, key=lambda k: a.logprobs[k])


def test_a_batch_shared_prompt_is_computed_once_as_a_cache(tiny, monkeypatch):
    """Few-shot prompts (the same shots before every test row): the tokens the batch shares go through the model once
    per batch as a KV cache, and every label's log-likelihood is still that of a plain forward pass."""
    import tunewise.evaluate.labels as labels_module

    model, tokenizer = tiny
    shots = [{"role": "user", "content": "a warm bright day " * 5}, {"role": "assistant", "content": "sunny"},
             {"role": "user", "content": "wet and grey " * 4}, {"role": "assistant", "content": "rain"}]
    convs = [[c[0], *shots, c[1]] for c in conversations(5)]
    cached: list[int] = []
    real = labels_module.prefix_cache
    monkeypatch.setattr(labels_module, "prefix_cache", lambda m, prefix, n: cached.append(len(prefix)) or real(m, prefix, n))
    auto = score_labels(model, tokenizer, convs, LABELS, batch_size=2)
    head = tokenizer(tokenizer.apply_chat_template(convs[0][:-1], tokenize=False), add_special_tokens=False)["input_ids"]
    assert len(cached) == 2 and min(cached) >= len(head) > 30  # the system prompt and both shots, once per batch of 2
    for scored, conv in zip(auto, convs):
        for label in LABELS:
            assert scored.logprobs[label] == pytest.approx(direct(model, tokenizer, conv, label), abs=1e-4)


def test_constrained_accuracy_and_reference_nll(tiny):
    model, tokenizer = tiny
    scores = score_labels(model, tokenizer, conversations(3), LABELS)
    refs = [scores[0].best, "nope" if scores[1].best != "nope" else "rain", scores[2].best]
    assert constrained_scores(scores, refs) == [1.0, 0.0, 1.0]
    assert reference_nll(scores, refs) is None  # a reference that is not a label: no perplexity from the scores
    nll, tokens = reference_nll(scores, [s.best for s in scores])
    assert nll == pytest.approx(-sum(s.logprobs[s.best] for s in scores)) and tokens == sum(s.tokens[s.best] for s in scores)
    with pytest.raises(ValueError, match="at least two labels"):
        score_labels(model, tokenizer, conversations(1), ["only"])


def test_run_on_a_classification_task_reports_fair_baselines(tmp_path, tiny_dir):
    rows = [{"input": f"message number {i} " + ("win a prize now" if i % 2 else "see you at lunch"), "output": ["ham", "spam"][i % 2]}
            for i in range(60)]  # fmt: skip
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "name": "cls", "output_dir": str(tmp_path / "runs"), "model": str(tiny_dir),
        "data": {"path": str(data), "system_prompt": "Spam or ham?", "split": {"train": 0.7, "val": 0.1, "test": 0.2}},
        "training": {"max_steps": 3}, "eval": {"max_new_tokens": 3, "few_shot": 2}, "decide": {"calibrate": False},
    }))
    done = subprocess.run([sys.executable, "-m", "tunewise", "run", str(config)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "format: completion (input -> output)" in out and "estimate: training ~" in out
    assert "training took" in out and "(estimated" in out
    assert "evaluating: base few-shot: ranking labels: 12/12 done" in out  # progress lines when stdout is not a terminal
    run = tmp_path / "runs" / "cls"
    comparison = json.loads((run / "eval" / "comparison.json").read_text())
    assert comparison["models"] == ["base", "base_few_shot", "tuned"] and comparison["headline"] == "tuned"
    assert comparison["main_metric"] == "constrained_accuracy"
    entry = comparison["metrics"]["constrained_accuracy"]
    assert set(entry["deltas"]) == {"base_few_shot", "tuned"} and entry["delta"] == entry["deltas"]["tuned"]["delta"]
    assert all(lo <= entry["values"][m] <= hi for m, (lo, hi) in entry["intervals"].items())
    few = json.loads((run / "eval" / "metrics_base_few_shot.json").read_text())
    assert len(few["shots"]) == 2 and {s["reference"] for s in few["shots"]} == {"ham", "spam"}  # one shot per label
    assert few["instruction"].endswith("ham, spam.")
    base = json.loads((run / "eval" / "metrics_base.json").read_text())
    assert base["perplexity_source"].startswith("label scores") and "perplexity_s" not in base["timings_s"]
    html = (run / "report.html").read_text()
    assert "Was fine-tuning worth it?" in html and "base model, constrained" in html and "fine-tuned, constrained" in html
