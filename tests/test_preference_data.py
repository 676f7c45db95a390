"""Preference data (DPO / ORPO pairs, KTO marked answers) through ``tunewise data prepare`` and the library: every
shape loads, every reject reason is reported with its line, a pair never lands in two splits, token limits apply to
both sides, and a config whose objective cannot train on its data fails at prepare time, naming both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.cli_processes import Zygote
from tests.data_fixtures import write_jsonl
from tunewise.config import DataConfig, SplitConfig
from tunewise.data.dedup import content_key
from tunewise.data.formats import detect_shape, normalize
from tunewise.data.prepare import load_split, prepare_data
from tunewise.errors import DataError
from tunewise.lm.chat import encode_example

SPLITS = ("train", "val", "test")
WORDS = "red green blue cyan north south east west alpha beta gamma delta".split()


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def good_pairs(n: int) -> list[dict[str, Any]]:
    """``n`` valid pairs, cycling through every shape: text, text with system, TRL conversational, chat-style."""
    rows = []
    for i in range(n):
        q, good, bad = f"question {i} {WORDS[i % 12]}?", f"right {i} {WORDS[(i + 3) % 12]}", f"wrong {i} {WORDS[(i + 5) % 12]}"
        rows.append([
            {"prompt": q, "chosen": good, "rejected": bad},
            {"prompt": q, "chosen": good, "rejected": bad, "system": "Answer briefly."},
            {"prompt": [user(q)], "chosen": [bot(good)], "rejected": [bot(bad)]},
            {"chosen": [user("hi"), bot("hello"), user(q), bot(good)], "rejected": [user("hi"), bot("hello"), user(q), bot(bad)]},
        ][i % 4])
    return rows


BAD_PAIRS = [  # (row, reason)
    ({"prompt": "same?", "chosen": "yes", "rejected": " yes "}, "identical_pair"),
    ({"prompt": "empty?", "chosen": "", "rejected": "no"}, "empty_field"),
    ({"prompt": "empty list?", "chosen": [bot("a")], "rejected": []}, "empty_field"),
    ({"prompt": "only one side?", "chosen": "yes"}, "missing_field"),
    ({"chosen": "text without a prompt", "rejected": "other"}, "missing_field"),
    ({"chosen": [user("A?"), bot("B")], "rejected": [user("C?"), bot("D")]}, "mismatched_prompts"),
    ({"prompt": "two turns?", "chosen": [bot("a"), bot("b")], "rejected": [bot("c")]}, "invalid_roles"),
]


def write_config(tmp_path: Path, data: Path, objective: str, **data_extra: Any) -> Path:
    config = {"name": f"pref-{objective}", "output_dir": str(tmp_path / "runs"), "model": "tiny", "objective": objective,
              "method": "lora", "data": {"path": str(data), "split": {"train": 0.6, "val": 0.2, "test": 0.2}, **data_extra}}
    path = tmp_path / f"{objective}.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    """``tunewise`` commands as processes forked from one pre-imported Python (tests/cli_processes.py)."""
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(zygote: Zygote, *args: str, cwd: Path) -> Ran:
    command = zygote.run(*args, cwd=cwd)
    return Ran(command.code if command.code is not None else -1, command.stdout, command.stderr)


def rejects_by_line(data_dir: Path) -> dict[int, str]:
    rows = [json.loads(line) for line in (data_dir / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return {r["line"]: r["reason"] for r in rows}


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory: pytest.TempPathFactory, zygote: Zygote) -> dict[str, Any]:
    """``tunewise data prepare`` on a file with every pair shape, every bad pair and a duplicate (objective dpo)."""
    tmp = tmp_path_factory.mktemp("dpo")
    good = good_pairs(40)
    rows = good + [row for row, _ in BAD_PAIRS] + [good[0], {**good[1], "rejected": "a different wrong answer"}]
    data = write_jsonl(tmp / "pairs.jsonl", rows)
    result = cli(zygote, "data", "prepare", str(write_config(tmp, data, "dpo")), "--no-progress", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return {"run": tmp / "runs" / "pref-dpo", "rows": rows, "stdout": result.stdout, "n_good": len(good)}


def test_every_pair_shape_loads_through_the_cli(dpo_run: dict[str, Any]) -> None:
    data = dpo_run["run"] / "data"
    report = json.loads((data / "data_report.json").read_text(encoding="utf-8"))
    kept = [ex for split in SPLITS for ex in load_split(data, split)]
    assert report["counts"]["pairs"] == len(kept) == dpo_run["n_good"] + 1  # the pair with another rejected answer too
    assert "undesirable" not in report["counts"] and report["shapes"] == {str(data.parent.parent.parent / "pairs.jsonl"): "preference"}
    assert "preference pairs: 41" in dpo_run["stdout"]
    by_line = {ex.meta["line"]: ex for ex in kept}
    text, system, conversational, chat_style = (by_line[i] for i in (1, 2, 3, 4))
    assert text.messages == [user("question 0 red?"), bot("right 0 cyan")] and text.rejected == [bot("wrong 0 south")]
    assert system.messages[0] == {"role": "system", "content": "Answer briefly."}
    assert conversational.messages == [user("question 2 blue?"), bot("right 2 south")]
    assert chat_style.messages == [user("hi"), bot("hello"), user("question 3 cyan?"), bot("right 3 east")]
    assert chat_style.rejected == [bot("wrong 3 alpha")]
    assert chat_style.rejected_example().messages[:-1] == chat_style.messages[:-1]


def test_every_reject_reason_has_its_line(dpo_run: dict[str, Any]) -> None:
    by_line = rejects_by_line(dpo_run["run"] / "data")
    first_bad = dpo_run["n_good"] + 1
    for k, (_, reason) in enumerate(BAD_PAIRS):
        assert by_line[first_bad + k] == reason, (first_bad + k, by_line)
    assert by_line[first_bad + len(BAD_PAIRS)] == "duplicate"  # the exact duplicate of line 1
    assert first_bad + len(BAD_PAIRS) + 1 not in by_line  # same prompt and chosen, another rejected: a new pair


def test_no_pair_in_two_splits(dpo_run: dict[str, Any]) -> None:
    data = dpo_run["run"] / "data"
    keys = {split: {content_key(ex) for ex in load_split(data, split)} for split in SPLITS}
    assert all(keys[s] for s in SPLITS)
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])


def test_preview_of_the_run_shows_both_sides(dpo_run: dict[str, Any], zygote: Zygote) -> None:
    result = cli(zygote, "data", "preview", str(dpo_run["run"]), "-n", "2", cwd=dpo_run["run"])
    assert result.returncode == 0, result.stderr
    first = load_split(dpo_run["run"] / "data", "train")[0]
    assert result.stdout.count("chosen:") == 2 and result.stdout.count("rejected:") == 2
    assert first.reference in result.stdout and first.rejected[0]["content"] in result.stdout


def test_kto_rows_load_with_their_marks_and_a_stratified_split(tmp_path: Path, zygote: Zygote) -> None:
    rows = [{"prompt": f"say {w} {i}", "completion": f"{w} {i}", "label": [True, False, "true", "FALSE", 1, 0][i % 6]}
            for i, w in enumerate(WORDS * 3)]
    rows.append({"prompt": "conversational", "completion": [bot("fine")], "label": True})
    rows.append({"prompt": "not a mark", "completion": "x", "label": "maybe"})
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    result = cli(zygote, "data", "prepare", str(write_config(tmp_path, data, "kto")), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "pref-kto" / "data"
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert (report["counts"]["desirable"], report["counts"]["undesirable"]) == (19, 18)
    assert report["task"]["label_field"] == "desirable"
    for split in SPLITS:  # the split keeps the desirable / undesirable ratio
        labels = report["labels"][split]
        assert set(labels) == {"True", "False"} and abs(labels["True"] - labels["False"]) <= 1, labels
    kept = {ex.meta["line"]: ex for split in SPLITS for ex in load_split(out, split)}
    assert [kept[i].desirable for i in range(1, 7)] == [True, False, True, False, True, False]
    assert kept[37].messages == [user("conversational"), bot("fine")]
    assert rejects_by_line(out) == {38: "wrong_type"}
    preview = cli(zygote, "data", "preview", str(out.parent), "-n", "2", cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert "desirable answer" in preview.stdout and "undesirable answer" in preview.stdout


def test_objective_that_cannot_train_on_the_data_fails_at_prepare(tmp_path: Path, tiny_tokenizer: Any, zygote: Zygote) -> None:
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(10)])
    result = cli(zygote, "data", "prepare", str(write_config(tmp_path, sft, "dpo")), "--no-progress", cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "objective dpo" in line and "preference" in line and "completion" in line and "objective: sft" in line
    pairs = write_jsonl(tmp_path / "pairs.jsonl", good_pairs(8))
    with pytest.raises(DataError, match="objective sft trains on conversations.*read as preference.*objective: dpo or orpo"):
        prepare_data(DataConfig(path=str(pairs)), tiny_tokenizer, tmp_path / "out", progress=False, workers=1, objective="sft")
    with pytest.raises(DataError, match="objective kto trains on answers marked desirable"):
        prepare_data(DataConfig(path=str(pairs)), tiny_tokenizer, tmp_path / "out", progress=False, workers=1, objective="kto")
    report = prepare_data(DataConfig(path=str(pairs)), tiny_tokenizer, tmp_path / "out", progress=False, workers=1, objective="orpo")
    assert report.counts["pairs"] == 8


def test_a_pair_is_too_long_when_either_side_is_and_truncate_cuts_the_shared_prompt(tmp_path: Path, tiny_tokenizer: Any) -> None:
    long_prompt = "tell me " + " ".join(WORDS * 6)
    rows = [{"prompt": f"short {i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(6)]
    rows.append({"prompt": "long rejected", "chosen": "ok", "rejected": " ".join(WORDS * 8)})
    rows.append({"prompt": long_prompt, "chosen": "short", "rejected": "no, a longer answer"})
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    shortest = normalize({**rows[7], "prompt": "tell me"}, "preference").rejected_example()
    limit = len(encode_example(shortest, tiny_tokenizer)) + 8  # the long prompt must be cut, the long answer can't be
    split = SplitConfig(train=1.0, val=0.0, test=0.0)
    prepare_data(DataConfig(path=str(data), max_tokens=limit, split=split), tiny_tokenizer, tmp_path / "drop", progress=False, workers=1)
    rejects = [json.loads(line) for line in (tmp_path / "drop" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["line"]: r["reason"] for r in rejects} == {7: "too_long", 8: "too_long"}
    assert rejects[0]["message"].startswith("rejected side: ")

    report = prepare_data(DataConfig(path=str(data), max_tokens=limit, split=split, overlength="truncate"), tiny_tokenizer,
                          tmp_path / "cut", progress=False, workers=1)
    assert report.counts["truncated_prompt"] == 1 and rejects_by_line(tmp_path / "cut") == {7: "too_long"}
    cut = next(ex for ex in load_split(tmp_path / "cut", "train") if ex.meta["line"] == 8)
    assert cut.reference == "short" and cut.rejected == [bot(rows[7]["rejected"])]  # answers untouched
    prompt = cut.messages[0]["content"]
    assert long_prompt.startswith(prompt) and len(prompt) < len(long_prompt)
    assert cut.rejected_example().messages[0]["content"] == prompt  # the same cut on both sides
    for side in (cut, cut.rejected_example()):
        assert len(encode_example(side, tiny_tokenizer, loss_on="last_turn")) <= limit


def test_columns_map_preference_fields(tmp_path: Path, tiny_tokenizer: Any) -> None:
    rows = [{"question": f"q {i} {w}", "good": f"good {w}", "bad": f"bad {w}"} for i, w in enumerate(WORDS)]
    data = write_jsonl(tmp_path / "mapped.csv.jsonl", rows)
    config = DataConfig(path=str(data), format="preference", columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    report = prepare_data(config, tiny_tokenizer, tmp_path / "out", progress=False, workers=1, objective="dpo")
    assert report.counts["pairs"] == len(WORDS)
    ex = load_split(tmp_path / "out", "train")[0]
    assert ex.messages[0]["content"].startswith("q ") and ex.rejected[0]["content"].startswith("bad ")


def test_detection_keeps_completion_and_classification_shapes() -> None:
    assert detect_shape({"prompt": "p", "completion": "c", "label": True}).format == "unpaired"
    assert detect_shape({"prompt": "p", "completion": "c", "label": "false"}).format == "unpaired"
    for label in ("positive", 0, 1, None):  # not a mark: a completion row whose label is kept in meta
        assert detect_shape({"prompt": "p", "completion": "c", "label": label}).format == "completion"
    assert detect_shape({"text": "t", "label": True}).classification
    assert detect_shape({"input": "i", "output": "o"}).format == "completion"
    assert detect_shape({"prompt": "p", "chosen": "a", "rejected": "b"}).format == "preference"
    assert detect_shape({"chosen": [], "rejected": []}).format == "preference"
    assert normalize({"prompt": "p", "completion": "c", "label": "1"}, "unpaired").desirable is True  # explicit format
    assert normalize({"prompt": "p", "completion": "c", "label": 0}, "unpaired").desirable is False
    assert normalize({"prompt": "p", "completion": "c", "label": "positive"}, "completion").meta == {"label": "positive"}
