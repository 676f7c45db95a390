"""Common data shapes load without configuration, and when they do not, the error says what would load them.

Shapes: {input, output}, {prompt, completion}, {question, answer}, {text, label} (classification), {instruction,
output}, chat messages, sharegpt conversations. Labels are first-class: a classification split is stratified by its
answers; stratify_by on a field that does not exist after loading is an error; control characters are cleaned."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data_fixtures import write_jsonl
from tunewise.config import DataConfig, SplitConfig
from tunewise.errors import DataError
from tunewise.data.formats import detect_shape
from tunewise.data.prepare import load_split, prepare_data

ROOT = Path(__file__).resolve().parents[1]

SHAPES = [
    ({"input": "2+2", "output": "4"}, "completion (input -> output)"),
    ({"prompt": "2+2", "completion": "4"}, "completion (prompt -> completion)"),
    ({"question": "2+2?", "answer": "4"}, "completion (question -> answer)"),
    ({"text": "great film", "label": "pos"}, "completion (text -> label), classification"),
    ({"instruction": "add", "input": "2 2", "output": "4"}, "alpaca (instruction -> output)"),
    ({"messages": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}]}, "chat"),
    ({"conversations": [{"from": "human", "value": "2+2"}, {"from": "gpt", "value": "4"}]}, "sharegpt"),
    ({"text": "plain text"}, "text"),
]


@pytest.mark.parametrize("record, described", SHAPES)
def test_every_common_shape_is_detected_and_described(record, described):
    shape = detect_shape(record)
    assert shape is not None and shape.describe() == described


def labelled(n: int, keys: tuple[str, str] = ("input", "output"), labels=("spam", "ham"), words: int = 6) -> list[dict]:
    vocab = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    return [{keys[0]: f"message {i} " + " ".join(vocab[(i * 7 + k) % len(vocab)] for k in range(words)),
             keys[1]: labels[i % len(labels)] if i % 5 else labels[0]} for i in range(n)]  # fmt: skip


def test_shapes_load_through_prepare_with_nothing_configured(tmp_path, data_tokenizer):
    (tmp_path / "in").mkdir()
    for i, (record, _) in enumerate(SHAPES[:-1]):
        write_jsonl(tmp_path / "in" / f"{i}.jsonl", [record])
    r = prepare_data(DataConfig(path=str(tmp_path / "in" / "*.jsonl"), split=SplitConfig(train=1, val=0, test=0), dedup=False),
                     data_tokenizer, tmp_path / "out", progress=False)  # fmt: skip
    assert r.counts["kept"] == 7 and not r.counts["rejected"]
    assert sorted(r.shapes.values()) == sorted(d for _, d in SHAPES[:-1])
    answers = {ex.reference for ex in load_split(tmp_path / "out", "train")}
    assert answers == {"4", "pos"}


def test_input_output_rows_are_a_classification_task_split_per_label(tmp_path, data_tokenizer):
    rows = labelled(100)  # 60 spam / 40 ham
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(path=str(path), split=SplitConfig(train=0.6, val=0.2, test=0.2))
    r = prepare_data(cfg, data_tokenizer, tmp_path / "out", progress=False)
    assert r.shapes == {str(path): "completion (input -> output)"}
    assert r.task == {"type": "classification", "labels": ["ham", "spam"], "label_field": "answer"}
    assert r.labels["test"] == {"spam": 12, "ham": 8} and r.labels["val"] == {"spam": 12, "ham": 8}
    # stratify_by naming the answer's column (consumed by the format) means the answer, not "(none)"
    r2 = prepare_data(cfg.model_copy(update={"stratify_by": "output"}), data_tokenizer, tmp_path / "o2", progress=False)
    assert r2.labels == r.labels and r2.task["label_field"] == "answer (output)"


def test_integer_labels_load_as_text(tmp_path, data_tokenizer):
    rows = [{"text": f"review number {i}", "label": i % 2} for i in range(20)]
    r = prepare_data(DataConfig(path=str(write_jsonl(tmp_path / "d.jsonl", rows))), data_tokenizer, tmp_path / "o", progress=False)
    assert r.task["labels"] == ["0", "1"] and not r.counts["rejected"]


def test_stratify_by_a_field_that_does_not_exist_is_an_error(tmp_path, data_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", labelled(20))
    with pytest.raises(DataError, match=r"data.stratify_by: no row has a field 'category'.*'answer'.*column output"):
        prepare_data(DataConfig(path=str(path), stratify_by="category"), data_tokenizer, tmp_path / "o", progress=False)


def test_all_rows_failing_names_the_columns_and_the_config_that_loads_them(tmp_path, data_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", labelled(20))
    with pytest.raises(DataError) as err:  # forced to alpaca: every row lacks 'instruction'
        prepare_data(DataConfig(path=str(path), format="alpaca"), data_tokenizer, tmp_path / "o", progress=False)
    message = str(err.value)
    assert "no valid row" in message and "missing_field 20" in message and "columns input, output" in message
    assert "data: {format: completion, columns: {prompt: input, completion: output}}" in message and "\n" not in message


def test_most_rows_failing_is_an_error_not_a_smaller_dataset(tmp_path, data_tokenizer):
    rows = [{"instruction": f"do {i}", "output": "done"} for i in range(3)] + labelled(12)
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"12 of 15 rows .* do not fit the format they were read as \(alpaca .*instruction.*input.*output"):
        prepare_data(DataConfig(path=str(path), format="alpaca"), data_tokenizer, tmp_path / "o", progress=False)


def test_unknown_shape_error_suggests_the_columns(tmp_path, data_tokenizer):
    rows = [{"sentence": f"a rather long sentence number {i} about films", "sentiment": ["pos", "neg"][i % 2]} for i in range(6)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"cannot tell the format.*data: \{format: completion, columns: \{prompt: sentence, completion: sentiment\}\}"):
        prepare_data(DataConfig(path=str(path)), data_tokenizer, tmp_path / "o", progress=False)
    # ... and the suggested lines load it
    cfg = DataConfig(path=str(path), format="completion", columns={"prompt": "sentence", "completion": "sentiment"})
    assert prepare_data(cfg, data_tokenizer, tmp_path / "o", progress=False).counts["kept"] == 6


def test_a_column_used_twice_is_an_error(tmp_path, data_tokenizer):
    rows = [{"input": f"text {i}", "output": "x"} for i in range(4)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"maps instruction to column 'input', which alpaca also reads as its input field"):
        prepare_data(DataConfig(path=str(path), columns={"instruction": "input"}), data_tokenizer, tmp_path / "o", progress=False)
    with pytest.raises(DataError, match="maps prompt and completion to the same column 'input'"):
        prepare_data(DataConfig(path=str(path), format="completion", columns={"prompt": "input", "completion": "input"}),
                     data_tokenizer, tmp_path / "o", progress=False)  # fmt: skip


def test_control_characters_are_cleaned_and_counted(tmp_path, data_tokenizer):
    rows = labelled(10)
    rows[1]["input"] += "\u0011 stray\u0080"
    rows[2]["input"] += "\ttab\nnewline"
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    r = prepare_data(DataConfig(path=str(path), split=SplitConfig(train=1, val=0, test=0)), data_tokenizer, tmp_path / "o", progress=False)
    assert r.counts["control_chars_cleaned"] == {"rows": 1, "chars": 2} and not r.counts["rejected"]
    texts = {ex.meta["line"]: ex.messages[0]["content"] for ex in load_split(tmp_path / "o", "train")}
    assert texts[2].endswith(" stray") and texts[3].endswith("\ttab\nnewline")
    off = prepare_data(DataConfig(path=str(path), clean_control_chars=False), data_tokenizer, tmp_path / "o2", progress=False)
    assert off.counts["rejected"] == {"control_chars": 1}


def test_cli_prints_how_the_data_was_read(tmp_path, data_tokenizer_dir):
    path = write_jsonl(tmp_path / "d.jsonl", labelled(30))
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"name": "shapes", "output_dir": str(tmp_path / "runs"), "model": str(data_tokenizer_dir),
                                  "data": {"path": str(path)}}))  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "tunewise", "data", "prepare", str(config), "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "format: completion (input -> output)" in done.stdout
    assert "task: classification, 2 labels (ham, spam); split stratified by answer" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "tunewise", "data", "prepare", str(config), "data.format=alpaca", "--no-progress"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "columns: {prompt: input, completion: output}" in bad.stderr
