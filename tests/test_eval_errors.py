"""Error analysis, the lenient label score and comparisons of prediction files (hand-checked, no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunewise.evaluate.compare import compare_files, compare_predictions
from tunewise.evaluate.errors import analyze_errors, error_kind, write_errors
from tunewise.metrics import compute_metrics, detect_labels, first_label, label_found_scores, per_example_scores
from tunewise.rundir import atomic_write_json, atomic_write_jsonl


def _records(preds: list[str], refs: list[str], stopped: list[bool] | None = None, names: tuple[str, ...] = ("exact_match",)) -> list[dict[str, Any]]:
    scores = per_example_scores(preds, refs, list(names))
    return [
        {"index": i, "input": "x" * (i + 1), "reference": r, "prediction": p, "stopped": True if stopped is None else stopped[i],
         "scores": {n: scores[n][i] for n in names}}
        for i, (p, r) in enumerate(zip(preds, refs))
    ]


def test_label_found_takes_the_first_known_label_in_the_output() -> None:
    labels = ["spam", "ham"]
    assert first_label("This message is spam, not ham.", labels) == "spam"
    assert first_label("Ham. Definitely not spam", labels) == "ham"  # case-insensitive, earliest wins
    assert first_label("hamster", labels) is None  # whole words only
    assert first_label("it is not-spam", ["spam", "not-spam"]) == "not-spam"  # same start: the longer label
    preds = ["This message is spam.", "ham", "hamster", "SPAM!", ""]
    refs = ["spam", "ham", "ham", "ham", "spam"]
    assert label_found_scores(preds, refs) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert label_found_scores(["It's ham"], ["ham"], labels=["spam", "ham"]) == [1.0]
    assert compute_metrics(preds, refs, ["label_found"]) == {"label_found": pytest.approx(0.4)}


def test_detect_labels_only_for_few_short_recurring_references() -> None:
    assert detect_labels(["pos", "neg", "pos", "neg "]) == ["neg", "pos"]
    assert detect_labels(["a b c", "d e f", "g h i"]) is None  # every reference distinct: not labels
    assert detect_labels(["same"] * 5) is None  # one class is not a classification task
    assert detect_labels(["a very long answer with many words"] * 2 + ["short"] * 2) is None


def test_error_kinds_are_grouped_by_hand_checked_rules() -> None:
    refs = ["pos", "neg", "pos", "neg", "pos", "neg"]
    preds = ["pos", "pos", "", "It is negative and", "Positive!", "neg"]
    stopped = [True, True, True, False, True, True]
    records = _records(preds, refs, stopped, names=("exact_match", "label_found"))
    result = analyze_errors(records, worst_n=3)
    assert result["main_metric"] == "exact_match"
    assert result["errors"] == 4
    assert result["counts_by_kind"] == {"empty_output": 1, "never_stopped": 1, "wrong_label": 1, "not_a_label": 1}
    assert [e["index"] for e in result["examples_by_kind"]["wrong_label"]] == [1]
    assert [e["index"] for e in result["worst"]["exact_match"]] == [1, 2, 3]  # lowest scores first, ties in order
    assert result["by_label"] == {
        "neg": {"n": 3, "errors": 2, "kinds": {"wrong_label": 1, "never_stopped": 1}},
        "pos": {"n": 3, "errors": 2, "kinds": {"empty_output": 1, "not_a_label": 1}},
    }
    report = result["classification"]
    assert report["labels"] == ["neg", "pos"]
    # rows: reference neg, pos; columns: neg, pos, (other)
    assert report["confusion_matrix"]["matrix"] == [[1, 1, 1], [0, 1, 2]]
    assert report["per_class"]["pos"]["precision"] == 0.5


def test_format_errors_and_length_buckets() -> None:
    preds = ['{"a": 1}', "{oops", '{"a": 2}', "not json at all"]
    refs = ['{"a": 1}', '{"a": 1}', '{"a": 1}', '{"a": 1}']
    records = _records(preds, refs, names=("exact_match", "json_valid"))
    assert error_kind(records[1], labels=None, metric="exact_match") == "format_error"
    assert error_kind(records[2], labels=None, metric="exact_match") == "wrong_answer"
    assert error_kind(records[0], labels=None, metric="exact_match") is None
    result = analyze_errors(records, length_buckets=2)
    assert "classification" not in result  # every reference the same: not a label task
    buckets = result["by_input_length"]["buckets"]
    assert [(b["min_length"], b["max_length"], b["n"]) for b in buckets] == [(1, 2, 2), (3, 4, 2)]
    assert buckets[0]["metrics"] == {"exact_match": 0.5, "json_valid": 0.5}
    assert buckets[1]["metrics"] == {"exact_match": 0.0, "json_valid": 0.5}


def test_write_errors_writes_json_and_confusion_plot(tmp_path: Path) -> None:
    records = _records(["a", "b", "a", "c"], ["a", "a", "b", "b"])
    write_errors(records, "tuned", tmp_path / "eval", tmp_path / "plots")
    data = json.loads((tmp_path / "eval" / "errors_tuned.json").read_text())
    assert data["model"] == "tuned" and data["counts_by_kind"] == {"wrong_label": 2, "not_a_label": 1}
    assert (tmp_path / "plots" / "confusion_tuned.png").read_bytes()[:4] == b"\x89PNG"


def test_perplexity_is_compared_lower_is_better_without_interval() -> None:
    recs = _records(["a", "b"], ["a", "a"])
    result = compare_predictions({"base": recs, "tuned": recs}, {"base": {"exact_match": 0.5, "perplexity": 9.0},
                                 "tuned": {"exact_match": 0.5, "perplexity": 3.0}}, baseline="base", n_resamples=200)
    entry = result["metrics"]["perplexity"]
    assert entry["higher_is_better"] is False
    assert entry["delta"] == -6.0 and "ci" not in entry
    assert result["main_metric"] == "exact_match"


def test_compare_files_over_folders_and_files(tmp_path: Path) -> None:
    refs = ["a", "b", "c", "d"]
    for folder, preds in (("one", ["a", "x", "x", "x"]), ("two", ["a", "b", "c", "x"])):
        recs = _records(preds, refs, names=("exact_match", "token_f1"))
        atomic_write_jsonl(tmp_path / folder / "predictions_m.jsonl", recs)
    atomic_write_json(tmp_path / "one" / "metrics_m.json", {"metrics": {"exact_match": 0.25, "token_f1": 0.25, "perplexity": 5.0}})
    result = compare_files([tmp_path / "one", tmp_path / "two" / "predictions_m.jsonl"], seed=1)
    assert result["models"] == ["one/m", "two/m"]  # the same model name twice: each named by its folder
    assert result["metrics"]["exact_match"]["values"] == {"one/m": 0.25, "two/m": 0.75}  # the second recomputed
    assert result["metrics"]["exact_match"]["win_tie_loss"] == {"win": 2, "tie": 2, "loss": 0}
    assert (tmp_path / "one" / "comparison.json").is_file()
    with pytest.raises(FileNotFoundError, match="at least two"):
        compare_files([tmp_path / "one"])
    atomic_write_jsonl(tmp_path / "three" / "predictions_z.jsonl", _records(["a"], ["a"]))
    with pytest.raises(ValueError, match="same examples"):
        compare_files([tmp_path / "one", tmp_path / "three"])


def test_comparing_two_runs_keeps_the_first_runs_own_comparison(tmp_path: Path) -> None:
    """`tunewise compare A/eval/predictions_tuned.jsonl B/eval/predictions_tuned.jsonl` (in a subprocess, as a user
    runs it) writes beside A's predictions but not over A's eval/comparison.json, which A's report and model card read."""
    import subprocess
    import sys

    refs = ["a", "b", "c", "d"]
    for run, preds in (("A", ["a", "x", "x", "x"]), ("B", ["a", "b", "c", "x"])):
        (tmp_path / run).mkdir()
        (tmp_path / run / "config.yaml").write_text("model: tiny\n", encoding="utf-8")
        atomic_write_jsonl(tmp_path / run / "eval" / "predictions_tuned.jsonl", _records(preds, refs))
    own = tmp_path / "A" / "eval" / "comparison.json"
    atomic_write_json(own, {"models": ["base", "tuned"]})
    done = subprocess.run([sys.executable, "-m", "tunewise", "compare", str(tmp_path / "A" / "eval" / "predictions_tuned.jsonl"),
                           str(tmp_path / "B" / "eval" / "predictions_tuned.jsonl")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(own.read_text())["models"] == ["base", "tuned"], "the run's own comparison was overwritten"
    written = tmp_path / "A" / "eval" / "comparison_A-tuned_vs_B-tuned.json"
    assert json.loads(written.read_text())["models"] == ["A/tuned", "B/tuned"]  # each named by its run
    assert written.name in done.stdout.replace("\n", "")
