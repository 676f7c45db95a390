"""Row shapes for the training benchmark, built offline and deterministically.

* ``short``: the bundled topic task (examples/topics/topics.jsonl): one short user message, a one-word label, and the
  same system prompt on every row.
* ``long``: 200-400-token rows of real English text: "continue this passage" where the passage and its continuation
  are consecutive words of the Python standard library's own documentation (``inspect.getdoc`` of a fixed list of
  stdlib modules, their classes and functions: installed with every Python, identical for one Python version).
* ``mixed``: the same source, total lengths drawn log-uniformly from 30 to 1,000 tokens (the chat template with
  its system prompt alone is ~24).

Rows are shuffled with a fixed data seed, then split into train and held-out eval rows (the same distribution).
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC_MODULES = ("argparse", "asyncio", "collections", "concurrent.futures", "contextlib", "csv", "dataclasses", "datetime",
               "decimal", "email.message", "enum", "fractions", "functools", "gzip", "hashlib", "heapq", "http.client",
               "inspect", "io", "itertools", "json", "logging", "mailbox", "multiprocessing", "os", "pathlib", "pickle",
               "queue", "random", "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile",
               "tempfile", "textwrap", "threading", "time", "typing", "unittest", "urllib.parse", "uuid", "zipfile")
SYSTEM = "Continue the passage from the Python documentation."


def doc_words() -> list[str]:
    """The words of the stdlib documentation, in a fixed order (modules, then their public members by name)."""
    words: list[str] = []
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        docs = [inspect.getdoc(module) or ""]
        for member_name in sorted(dir(module)):
            if member_name.startswith("_"):
                continue
            member = getattr(module, member_name, None)
            if (inspect.isclass(member) or inspect.isfunction(member)) and getattr(member, "__module__", "") == name:
                docs.append(inspect.getdoc(member) or "")
        for doc in docs:
            text = re.sub(r"\s+", " ", doc).strip()
            if len(text) > 80:  # one-line docstrings are mostly signatures
                words.extend(text.split(" "))
    return words


def _row(passage: list[str], continuation: list[str]) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": " ".join(passage)},
                         {"role": "assistant", "content": " ".join(continuation)}]}


def text_rows(tokenizer, n: int, low: int, high: int, *, log_uniform: bool, seed: int = 0) -> list[dict]:
    """``n`` rows whose rendered length (chat template, tokens) lies in [low, high]; the answer is ~1/4 of the row."""
    words = doc_words()
    rng = random.Random(seed)
    rows: list[dict] = []
    tries = 0
    while len(rows) < n:
        tries += 1
        if tries > 50 * n:
            raise RuntimeError(f"could not build {n} rows of {low}-{high} tokens")
        target = math.exp(rng.uniform(math.log(low), math.log(high))) if log_uniform else rng.uniform(low, high)
        n_words = max(3, int((target - 24) * 0.72))  # the template with its system prompt is ~24 tokens; ~1.4 tokens a word
        start = rng.randrange(0, len(words) - n_words - 1)
        answer = max(2, n_words // 4)
        row = _row(words[start : start + n_words - answer], words[start + n_words - answer : start + n_words])
        length = len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False))
        if low <= length <= high:
            rows.append(row)
    return rows


def topic_rows() -> list[dict]:
    path = ROOT / "examples" / "topics" / "topics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shape_rows(shape: str, tokenizer, n_train: int, n_eval: int, *, data_seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out eval rows) of ``shape``, shuffled with ``data_seed`` before the split."""
    n = n_train + n_eval
    if shape == "short":
        rows = topic_rows()
    elif shape == "long":
        rows = text_rows(tokenizer, n, 200, 400, log_uniform=False, seed=1)
    elif shape == "mixed":
        rows = text_rows(tokenizer, n, 30, 1000, log_uniform=True, seed=2)  # 30: template + system prompt + a few words
    else:
        raise ValueError(f"unknown shape {shape!r}: short, long or mixed")
    random.Random(data_seed).shuffle(rows)
    if len(rows) < n:
        raise ValueError(f"{shape}: {len(rows)} rows, {n} asked for")
    return rows[:n_train], rows[n_train:n]
