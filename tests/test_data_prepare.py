"""prepare_data: nothing lost silently, every rejection reason by line, token limits, splits, overlap, reports."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.data_fixtures import chat, write_jsonl
from tunewise.config import DataConfig, SplitConfig
from tunewise.data import prepare as prep
from tunewise.errors import DataError
from tunewise.example import Example
from tunewise.data.prepare import load_split, prepare_data
from tunewise.lm.chat import encode_example

VOCAB = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon "
         "phi chi psi omega red green blue cyan magenta yellow black white north south east west").split()  # fmt: skip


def valid_rows(n: int, seed: int = 0, labels: tuple[str, ...] = ("a", "b")) -> list[dict]:
    rng = random.Random(seed)
    return [chat(f"q{i} " + " ".join(rng.choices(VOCAB, k=12)), f"ans{i} " + " ".join(rng.choices(VOCAB, k=10)),
                 label=labels[i % len(labels)]) for i in range(n)]  # fmt: skip


def read_rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def kept_lines(out: Path) -> set[int]:
    return {ex.meta["line"] for split in ("train", "val", "test") for ex in load_split(out, split)}


def test_mixed_file_loses_no_valid_row_and_reports_every_bad_one(tmp_path, data_tokenizer):
    good = valid_rows(30)
    long_words = " ".join(random.Random(1).choices(VOCAB, k=40))
    near_src = chat("near source " + long_words, "the answer " + long_words)
    near_copy = chat("near source " + long_words.replace(long_words.split()[5], "zzz", 1), "the answer " + long_words)
    short = chat("hi", "ok")
    bad = {  # reason -> row
        "invalid_json": '{"messages": [',
        "not_object": "[1, 2]",
        "invalid_utf8": b'{"messages": "\xff\xfe"}',
        "missing_field": {"conversation": []},
        "empty_field": chat("question", "   "),
        "wrong_type": {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "x"}]},
        "invalid_roles": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "dangling"}]},
        "control_chars": chat("bell \x07 here", "answer"),
        "too_short": short,
        "too_long": chat("long " + "word " * 400, "answer"),
        "no_trained_tokens": {"messages": [{"role": "user", "content": "q zero"}, {"role": "assistant", "content": "not trained", "weight": 0}]},
        "duplicate": good[3],
        "near_duplicate": near_copy,
    }
    rows: list = []
    expected: dict[int, str] = {}
    for i, row in enumerate([near_src] + good):
        rows.append(row)
        if i < len(bad):
            reason, bad_row = list(bad.items())[i]
            rows.append(bad_row)
            expected[len(rows)] = reason
    rows.append({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]})  # unknown role
    expected[len(rows)] = "invalid_roles"
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    good_lines = {i + 1 for i, r in enumerate(rows) if i + 1 not in expected}

    short_len = len(encode_example(Example(short["messages"]), data_tokenizer))
    config = DataConfig(path=str(path), min_tokens=short_len + 1, max_tokens=800, near_dedup_threshold=0.8, seed=1,
                        clean_control_chars=False)
    out = tmp_path / "out"
    report = prepare_data(config, data_tokenizer, out, progress=False)

    assert kept_lines(out) == good_lines  # no valid row lost
    rejects = read_rejects(out)
    assert {r["line"]: r["reason"] for r in rejects} == expected  # every bad row, by line and reason
    assert all(r["source"] == str(path) and r["message"] for r in rejects)
    assert report.counts["read"] == len(rows)
    assert report.counts["kept"] == len(good_lines)
    assert report.counts["rejected"] == {reason: list(expected.values()).count(reason) for reason in set(expected.values())}
    dup = next(r for r in rejects if r["reason"] == "duplicate")
    assert dup["duplicate_of"]["line"] == rows.index(good[3]) + 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp file


def test_report_contents(tmp_path, data_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", valid_rows(40))
    report = prepare_data(DataConfig(path=str(path), stratify_by="label"), data_tokenizer, tmp_path / "out", progress=False)
    saved = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    train = saved["tokens"]["train"]
    assert set(train) >= {"prompt", "answer", "total", "trained_share"}
    assert {"p50", "p90", "p99", "max"} <= set(train["total"]) and train["total"]["histogram"]["counts"]
    assert 0 < train["trained_share"] < 1 and train["answer"]["max"] <= train["total"]["max"]
    assert sum(saved["labels"]["train"].values()) == saved["counts"]["train"]
    assert [s["stage"] for s in saved["stages"]][0] == "read"
    assert saved["formats"] == {str(path): "chat"}


def test_truncate_cuts_the_user_message_and_keeps_system_and_answer(tmp_path, data_tokenizer):
    good = valid_rows(5)
    limit = max(len(encode_example(Example(r["messages"]), data_tokenizer)) for r in good) + 5
    long_answer = chat("short question", "answer " + "word " * limit)  # only the answer could be cut: rejected
    long_prompt = chat("question " + "word " * limit, "short answer")  # the user's message is cut
    long_prompt["messages"].insert(0, {"role": "system", "content": "You answer briefly."})
    path = write_jsonl(tmp_path / "t.jsonl", [long_answer, long_prompt] + good)
    config = DataConfig(path=str(path), max_tokens=limit, overlength="truncate", split=SplitConfig(train=1, val=0, test=0))
    report = prepare_data(config, data_tokenizer, tmp_path / "out", progress=False)
    assert report.counts["truncated"] == 1 and report.counts["truncated_prompt"] == 1
    cut = [ex for ex in load_split(tmp_path / "out", "train") if ex.meta.get("truncated")]
    assert len(cut) == 1 and cut[0].meta["line"] == 2
    system, user, answer = cut[0].messages
    assert system["content"] == "You answer briefly." and answer["content"] == "short answer"
    assert user["content"].startswith("question word") and len(user["content"]) < len(long_prompt["messages"][1]["content"])
    assert limit - 3 <= len(encode_example(cut[0], data_tokenizer)) <= limit  # what is written fits, and is not cut more than needed
    assert [r["reason"] for r in read_rejects(tmp_path / "out")] == ["too_long"]

    # truncate_end: the rendered example is cut at max_tokens (the long answer keeps its start; the long prompt loses its answer)
    end = prepare_data(config.model_copy(update={"overlength": "truncate_end"}), data_tokenizer, tmp_path / "end", progress=False)
    cut = [ex for ex in load_split(tmp_path / "end", "train") if ex.meta.get("truncated")]
    assert len(cut) == 1 and cut[0].meta["line"] == 1 and end.counts["truncated_prompt"] == 0
    assert end.tokens["train"]["total"]["max"] == limit
    assert [r["reason"] for r in read_rejects(tmp_path / "end")] == ["too_long"]


def splits_of(out: Path) -> dict[str, list[int]]:
    return {s: [ex.meta["line"] for ex in load_split(out, s)] for s in ("train", "val", "test")}


def test_split_reproducible_and_stratified(tmp_path, data_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", valid_rows(100, labels=("a", "a", "a", "b")))  # 75 a / 25 b
    cfg = DataConfig(path=str(path), stratify_by="label", split=SplitConfig(train=0.6, val=0.2, test=0.2), seed=3)
    r1 = prepare_data(cfg, data_tokenizer, tmp_path / "o1", progress=False)
    prepare_data(cfg, data_tokenizer, tmp_path / "o2", progress=False)
    assert splits_of(tmp_path / "o1") == splits_of(tmp_path / "o2")
    prepare_data(cfg.model_copy(update={"seed": 4}), data_tokenizer, tmp_path / "o3", progress=False)
    assert splits_of(tmp_path / "o1") != splits_of(tmp_path / "o3")
    assert r1.labels["test"] == {"a": 15, "b": 5} and r1.labels["val"] == {"a": 15, "b": 5}
    assert r1.labels["train"] == {"a": 45, "b": 15}


def test_split_by_counts(tmp_path, data_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", valid_rows(30))
    cfg = DataConfig(path=str(path), split=SplitConfig(train=20, val=4, test=3))
    r = prepare_data(cfg, data_tokenizer, tmp_path / "out", progress=False)
    assert (r.counts["train"], r.counts["val"], r.counts["test"], r.counts["unused"]) == (20, 4, 3, 3)


def test_given_test_file_and_overlap_removal(tmp_path, data_tokenizer):
    rows = valid_rows(40)
    words = " ".join(random.Random(2).choices(VOCAB, k=40))
    near_train = chat("explain " + words, "because " + words)
    near_test = chat("explain " + words.replace(words.split()[7], "qqq", 1), "because " + words)
    main = write_jsonl(tmp_path / "main.jsonl", rows + [near_train])
    test = write_jsonl(tmp_path / "test.jsonl", [rows[0], rows[1], near_test, chat("fresh test question", "fresh answer")])
    cfg = DataConfig(path=str(main), test_path=str(test), split=SplitConfig(train=0.9, val=0.1, test=0.0))
    r = prepare_data(cfg, data_tokenizer, tmp_path / "out", progress=False)
    assert r.counts["test"] == 4
    leaked = r.overlap["train_test"]["exact"] + r.overlap["val_test"]["exact"]
    near = r.overlap["train_test"]["near"] + r.overlap["val_test"]["near"]
    assert (leaked, near) == (2, 1)
    test_keys = {json.dumps(ex.messages) for ex in load_split(tmp_path / "out", "test")}
    for split in ("train", "val"):
        assert not test_keys & {json.dumps(ex.messages) for ex in load_split(tmp_path / "out", split)}
    assert r.counts["rejected"] == {"split_overlap": 3}

    kept = prepare_data(cfg.model_copy(update={"remove_overlap": False}), data_tokenizer, tmp_path / "o2", progress=False)
    assert kept.counts["train"] + kept.counts["val"] == 41 and kept.overlap["train_test"]["removed"] == 0


def test_user_errors(tmp_path, data_tokenizer):
    with pytest.raises(DataError, match="not found"):
        prepare_data(DataConfig(path=str(tmp_path / "missing.jsonl")), data_tokenizer, tmp_path / "o", progress=False)
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json", {"messages": []}])
    with pytest.raises(DataError, match="no valid row") as err:
        prepare_data(DataConfig(path=str(bad)), data_tokenizer, tmp_path / "o", progress=False)
    assert "\n" not in str(err.value) and len(read_rejects(tmp_path / "o")) == 2
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(DataError, match="cannot tell the format"):
        prepare_data(DataConfig(path=str(odd)), data_tokenizer, tmp_path / "o", progress=False)
    with pytest.raises(DataError, match="unknown data format"):
        prepare_data(DataConfig.model_construct(**{**DataConfig().model_dump(), "path": str(bad), "format": "xml"}), data_tokenizer, tmp_path / "o", progress=False)
    with pytest.raises(DataError, match="data prepare"):
        load_split(tmp_path / "nowhere", "train")


def test_formats_through_prepare(tmp_path, data_tokenizer):
    write_jsonl(tmp_path / "a.jsonl", [{"instruction": "say one", "output": "one"}, {"instruction": "say two", "input": "x", "output": "two"}])
    write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "hey"}, {"from": "gpt", "value": "hello"}]}])
    write_jsonl(tmp_path / "c.jsonl", [{"prompt": "2+2", "completion": "4"}])
    write_jsonl(tmp_path / "t.jsonl", [{"text": "plain text for pretraining"}])
    cfg = DataConfig(path=str(tmp_path / "*.jsonl"), split=SplitConfig(train=1, val=0, test=0))
    r = prepare_data(cfg, data_tokenizer, tmp_path / "out", progress=False)
    assert sorted(Path(k).name + ":" + v for k, v in r.formats.items()) == ["a.jsonl:alpaca", "c.jsonl:completion", "s.jsonl:sharegpt", "t.jsonl:text"]
    assert r.counts["kept"] == 5 and not r.counts["rejected"]
    text = [ex for ex in load_split(tmp_path / "out", "train") if ex.messages[0]["role"] == "text"]
    assert len(text) == 1


def test_parallel_workers_give_the_same_result(tmp_path, data_tokenizer, monkeypatch):
    monkeypatch.setattr(prep, "BATCH", 40)  # several batches from a small file, so the worker pool starts
    rows = valid_rows(200)
    rows[50] = rows[10]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(path=str(path), near_dedup_threshold=0.9, stratify_by="label")
    serial = prepare_data(cfg, data_tokenizer, tmp_path / "s", progress=False, workers=1)
    parallel = prepare_data(cfg, data_tokenizer, tmp_path / "p", progress=False, workers=2)
    assert splits_of(tmp_path / "s") == splits_of(tmp_path / "p")
    assert serial.tokens == parallel.tokens and serial.counts == parallel.counts


def test_shuffle_augmentation_only_in_train(tmp_path, data_tokenizer):
    rows = [chat(f"list {i} colours", "1. red\n2. green\n3. blue", label="x") for i in range(20)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    r = prepare_data(DataConfig(path=str(path), augment_shuffle=2), data_tokenizer, tmp_path / "out", progress=False)
    assert r.counts["augmented"]["shuffle"] == 2 * 16 and r.counts["kept"] == 20
    train = load_split(tmp_path / "out", "train")
    aug = [ex for ex in train if ex.meta.get("augmented") == "shuffle"]
    assert len(aug) == 32 and all(ex.reference != "1. red\n2. green\n3. blue" for ex in aug)
    assert all(sorted(ex.reference.split("\n")) == sorted(ex.reference.split("\n")) for ex in aug)
    for split in ("val", "test"):
        assert not [ex for ex in load_split(tmp_path / "out", split) if ex.meta.get("augmented")]
