"""Text similarity in every script: exact-duplicate keys fold full-width/half-width forms, near-duplicate shingles
are CJK characters, words, or character trigrams of unspaced text. Recall and precision of the whole dedup (exact +
near, as `tunewise data prepare` runs it) on hand-written rows with known near-duplicates are in the test ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.multilingual_rows import CORPORA, alpaca, sample, suffix_rows, variants
from tunewise.config import DataConfig
from tunewise.data import dedup
from tunewise.data.dedup import content_key, fold_width, shingle_hashes, shingle_tokens
from tunewise.example import Example
from tunewise.data.prepare import prepare_data

ROOT = Path(__file__).resolve().parents[1]


def _chat(user: str, answer: str = "好") -> Example:
    return Example([{"role": "user", "content": user}, {"role": "assistant", "content": answer}])


# --------------------------------------------------------------------------------------------------------------------
# width folding and exact keys


@pytest.mark.parametrize(
    "a, b",
    [
        ("ＡＢＣ１２３！", "ABC123!"),  # full-width ASCII
        ("ｶﾞｲﾄﾞﾌﾞｯｸ", "ガイドブック"),  # half-width katakana with voiced marks: composed
        ("你好，世界。", "你好,世界."),  # a Chinese IME in full- and half-width punctuation mode
        ("“引号”与《书名》【注】", '"引号"与<书名>[注]'),
        ("今日は晴れ〜", "今日は晴れ～"),  # wave dash vs full-width tilde (Shift-JIS converters)
        ("東京\u3000大阪", "東京 大阪"),  # ideographic space
        ("ﾊﾝｸﾞﾙ ￦ ￥", "ハングル ₩ ¥"),
    ],
)
def test_width_forms_fold_to_one_exact_key(a, b):
    assert fold_width(a) == fold_width(b)
    assert content_key(_chat(a)) == content_key(_chat(b))


@pytest.mark.parametrize("a, b", [("x²", "x2"), ("①", "1"), ("ﬁle", "file"), ("你好", "您好"), ("ABC", "abc")])
def test_other_compatibility_forms_and_case_stay_distinct(a, b):
    # full NFKC would merge the first three: different texts, so they keep different keys
    assert content_key(_chat(a)) != content_key(_chat(b))


# --------------------------------------------------------------------------------------------------------------------
# tokens and shingles


def test_tokens_per_script():
    assert shingle_tokens("用Python写一个函数，计算平均值。") == ["用", "python", "写", "一", "个", "函", "数", "计", "算", "平", "均", "值"]
    assert shingle_tokens("日本の首都はどこですか") == list("日本の首都はどこですか")
    assert shingle_tokens("안녕하세요 학생") == list("안녕하세요학생")
    assert shingle_tokens("The quick brown fox.") == ["the", "quick", "brown", "fox"]
    assert shingle_tokens("ＴＨＥ　ｑｕｉｃｋ") == ["the", "quick"]
    thai = shingle_tokens("สวัสดีครับ")  # Thai: no spaces, combining marks: overlapping character trigrams
    assert thai[:3] == ["สวั", "วัส", "ัสด"] and len(thai) == len("สวัสดีครับ") - 2
    long_run = "a" * 5 + "bcdefghijklmnopqrstuvwxyz"  # 30 letters without a space
    assert shingle_tokens(long_run + " end") == [long_run[i : i + 3] for i in range(28)] + ["end"]
    assert shingle_tokens("") == [] and shingle_tokens("，。！") == []


@pytest.mark.parametrize("text", ["The quick brown fox.", "snake_case and CamelCase 3.14", "x" * 25 + " y", "", "!!!"])
def test_ascii_fast_path_gives_the_general_tokens(text):
    # a trailing full-width comma (dropped as punctuation) sends the same text through the non-ASCII path
    assert shingle_tokens(text) == shingle_tokens(text + "，")


def test_one_changed_character_changes_two_shingles():
    a, b = "今天的天气非常好我们一起去公园散步吧", "今天的天气非常好我们一起去公园跑步吧"
    sa, sb = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    assert len(sa) == len(a) - 1 and sa - sb == {*shingle_hashes("园散步").tolist()}  # 园散 and 散步 only


def _old_word_trigrams(text: str) -> set[int]:
    """The shingles before CJK support: trigrams of \\w+ runs (hashes combined as dedup does)."""
    import re

    hashes = np.array([dedup._WORDS[w] for w in re.findall(r"\w+", text.lower())], dtype=np.uint64)
    return set(dedup._combine(hashes, min(3, len(hashes))).tolist())


@pytest.mark.parametrize("text", ["The quick brown fox jumps over the lazy dog.", "Two words", "snake_case x" + "y" * 5])
def test_text_without_cjk_has_the_old_word_trigrams(text):
    assert set(shingle_hashes(text).tolist()) == _old_word_trigrams(text)


def test_letters_spelled_out_are_not_near_duplicates():
    # word bigrams give "q u e" and "q u e u e" the same set; word trigrams keep them below the default 0.8
    a, b = "reverse: q u e\ne u q", "reverse: q u e u e\ne u e u q"

    def jaccard(size: int) -> float:
        sa, sb = set(shingle_hashes(a, size).tolist()), set(shingle_hashes(b, size).tolist())
        return len(sa & sb) / len(sa | sb)

    assert jaccard(2) == 1.0 and jaccard(3) == 5 / 7


def test_mixed_text_shingles_span_scripts():
    # 用 python 写 一 个: a character bigram at 用, a word trigram at python, bigrams at 写 and 一
    expected = {"用python", "python写一", "写一", "一个"}
    got = set(shingle_hashes("用Python写一个").tolist())
    hash_of = {"".join(t): int(dedup._combine(np.array([dedup._WORDS[x] for x in t], dtype=np.uint64), len(t))[0])
               for t in (("用", "python"), ("python", "写", "一"), ("写", "一"), ("一", "个"))}  # fmt: skip
    assert got == {hash_of[k] for k in expected}


def test_shingles_do_not_depend_on_the_memo(monkeypatch):
    text = "机器学习让计算机从数据中学习规律 and learn patterns"
    first = shingle_hashes(text)
    monkeypatch.setattr(dedup, "_WORDS", dedup._WordHashes())  # a fresh process's empty memo
    assert (shingle_hashes(text) == first).all()


# --------------------------------------------------------------------------------------------------------------------
# recall and precision on known near-duplicates (the ids state what each corpus measures)

MEASURED = {  # corpus: (recall, precision) at data.near_dedup_threshold 0.8
    "zh": (0.90, 1.00),
    "ja": (1.00, 1.00),
    "mixed": (0.90, 1.00),
    "en": (0.45, 1.00),
}


def _dedup_quality(name: str, tmp_path: Path, tokenizer, threshold: float = 0.8) -> tuple[float, float, int]:
    rows = variants(name)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(alpaca(r), ensure_ascii=False) + "\n" for _, r in rows), encoding="utf-8")
    cfg = DataConfig(path=str(path), near_dedup_threshold=threshold, max_tokens=4096, overlap_threshold=None)
    prepare_data(cfg, tokenizer, tmp_path / name, progress=False, workers=1)
    group = {i + 1: g for i, (g, _) in enumerate(rows)}  # file line -> group
    true_dups = sum(1 for i, (g, _) in enumerate(rows) if any(h == g for h, _ in rows[:i]))
    correct = wrong = 0
    for line in (tmp_path / name / "rejects.jsonl").read_text(encoding="utf-8").splitlines():
        reject = json.loads(line)
        assert reject["reason"] in ("duplicate", "near_duplicate"), reject
        if group[reject["duplicate_of"]["line"]] == group[reject["line"]]:
            correct += 1
        else:
            wrong += 1
    return correct / true_dups, correct / max(correct + wrong, 1), true_dups


@pytest.mark.parametrize(
    "name", [pytest.param(n, id=f"{n}-recall{r:.2f}-precision{p:.2f}") for n, (r, p) in MEASURED.items()]
)
def test_near_duplicates_found_in_every_script(name, tmp_path, data_tokenizer):
    recall, precision, true_dups = _dedup_quality(name, tmp_path, data_tokenizer)
    assert true_dups == 2 * len(CORPORA[name])
    assert (round(recall, 2), round(precision, 2)) == MEASURED[name]


def test_unigram_shingles_would_lose_precision(tmp_path, data_tokenizer, monkeypatch):
    """The precision figures can fail: the hard negatives (a shared template, a short different content) are flagged
    when shingles are single tokens and the threshold is low."""
    monkeypatch.setattr(dedup.shingle_hashes, "__defaults__", (1, 1))
    assert _dedup_quality("ja", tmp_path, data_tokenizer, threshold=0.5)[1] < 0.9


# --------------------------------------------------------------------------------------------------------------------
# the case: 6 instructions x (the row + 7 copies with a counter suffix)


def _write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(alpaca(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_suffix_copies_are_near_duplicates_from_the_command_line(tmp_path):
    zh, en = suffix_rows(sample("zh"), spaced=False), suffix_rows(sample("en"), spaced=True)
    assert len(zh) == len(en) == 48
    data = _write_rows(tmp_path / "rows.jsonl", zh + en)
    config = tmp_path / "config.yaml"
    config.write_text(f"name: dedup\noutput_dir: {tmp_path / 'runs'}\nmodel: tiny\ndata:\n  path: {data}\n  format: alpaca\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tunewise", "data", "prepare", str(config), "data.near_dedup_threshold=0.8", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "runs" / "dedup" / "data"
    report = json.loads((folder / "data_report.json").read_text(encoding="utf-8"))
    assert {s["stage"]: s["rows"] for s in report["stages"]}["near-unique"] == 6 + 8  # before: 48 + 8
    rejects = [json.loads(line) for line in (folder / "rejects.jsonl").open(encoding="utf-8")]
    assert {r["reason"] for r in rejects} == {"near_duplicate"}
    first_of = {line: (line - 1) // 8 * 8 + 1 for line in range(1, 97)}  # each copy's original is its group's first row
    chinese = [r for r in rejects if r["line"] <= 48]
    assert len(chinese) == 42 and all(first_of[r["duplicate_of"]["line"]] == first_of[r["line"]] for r in chinese)


def test_split_overlap_check_sees_chinese_copies(tmp_path, data_tokenizer):
    """The default overlap check (threshold 0.8, near dedup off) removes train rows that copy a test row."""
    data = _write_rows(tmp_path / "rows.jsonl", suffix_rows(sample("zh"), spaced=False))
    cfg = DataConfig(path=str(data), split={"train": 0.5, "val": 0.1, "test": 0.4}, max_tokens=4096)
    report = prepare_data(cfg, data_tokenizer, tmp_path / "out", progress=False, workers=1)
    assert report.overlap["train_test"]["near"] > 0  # before: 0
    instruction = {s: {json.loads(line)["messages"][0]["content"].split("\n")[0] for line in (tmp_path / "out" / f"{s}.jsonl").open(encoding="utf-8")} for s in ("train", "test")}
    assert not instruction["train"] & instruction["test"]  # no test row's near-copy is left in train
