"""Exact duplicates (a hash of the messages) and near-duplicates (MinHash signatures + LSH banding), in every script.

Near-duplicate detection is the MinHash/LSH method as in datasketch, written here with numpy because datasketch
hashes one row at a time in Python and indexes one band at a time (~0.7 ms a row on a 2-core machine; this is ~10x
faster, which the 100k-row budget needs). Signatures are verified by their estimated Jaccard similarity, so rows that
merely share an LSH bucket are never dropped.

What is compared (:func:`shingle_tokens`): text is cut into tokens that each carry about one unit of meaning: a word
where words are separated by spaces, a character in Chinese, Japanese and Korean (Han, kana and Hangul carry a
morpheme or syllable each), and overlapping character trigrams in text written without spaces in an alphabet (Thai,
Lao, Khmer, Myanmar, or any run of letters longer than :data:`LONG_RUN`). A shingle starts at every token: three words
from a word (the word trigrams tunewise always used, so text without CJK compares as before), two characters from a
CJK character (character bigrams, the usual unit of Chinese text search), two character trigrams (a character 4-gram)
in unspaced alphabets; mixed text is one stream, so a shingle can span "Python写一". Before that, full-width and
half-width forms are folded (:func:`fold_width`) and case is ignored.

Measured with exact + near dedup at threshold 0.8 on hand-written rows with known near-duplicates
(tests/test_dedup_scripts.py), recall / precision: Chinese 0.90 / 1.00, Japanese 1.00 / 1.00, mixed Chinese-English
0.90 / 1.00, English 0.45 / 1.00; before (a run of Chinese characters one word, no width folding) recall was 0.25,
0.25, 0.15 and 0.20. CJK character trigrams lost recall on short rows (Chinese 0.65); word bigrams raised English
recall to 0.75 but made letter-spelled rows near-duplicates ("q u e" and "q u e u e" have the same bigram set).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np

from tunewise.example import Example

NUM_PERM = 128
WORD_SHINGLE = 3  # words per shingle
CHAR_SHINGLE = 2  # CJK characters (or character trigrams of unspaced text) per shingle
LONG_RUN = 20  # a run of letters longer than this is text without spaces: compared by character trigrams

# Scripts whose characters are tokens: Han (with radicals, 々〆〇), kana, Bopomofo and Hangul (syllables and jamo),
# half-width forms included.
_CJK = (
    "\u1100-\u11ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3038-\u303b\u3040-\u30ff\u3100-\u318f\u31a0-\u31bf"
    "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff66-\uffdc"
    "\U0001b000-\U0001b16f\U00020000-\U0003134f"
)
# Alphabets written without spaces between words (marks included): Thai, Lao, Myanmar, Khmer.
_UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff"
_RUN = re.compile(rf"[{_CJK}]+|[{_UNSPACED}]+|[^\W{_CJK}{_UNSPACED}]+")  # runs of one kind: CJK, unspaced, word
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_UNSPACED_CHAR = re.compile(rf"[{_UNSPACED}]")
_WORD = re.compile(r"\w+")  # the word runs of ASCII text, faster


def _width_table() -> dict[int, str]:
    # Full-width ASCII, half-width kana/Hangul/symbols and the ideographic space: each as NFKC folds it. Only these
    # (the characters whose compatibility mapping is <wide> or <narrow>), not all of NFKC, which would also make
    # "x²" and "x2", "①" and "1", "ﬁ" and "fi" the same text.
    table = {}
    for code in [0x3000, *range(0xFF00, 0xFFF0)]:
        char = chr(code)
        if unicodedata.decomposition(char).startswith(("<wide>", "<narrow>")):
            table[code] = unicodedata.normalize("NFKC", char)
    table[0xFFE3] = "\u00af"  # FULLWIDTH MACRON: NFKC gives space + combining macron
    # What NFKC leaves apart: the punctuation a Chinese or Japanese input method writes in full-width mode for the
    # ASCII key typed in half-width mode (。 for ., 、 for the backslash key but used as a comma, “” for ", 《》 for <>,
    # 【】 for []), the wave dash that Shift-JIS converters write for the full-width tilde, and the minus sign for
    # the full-width hyphen-minus; … is NFKC's "...".
    table.update({ord(k): v for k, v in {
        "。": ".", "、": ",", "“": '"', "”": '"', "‘": "'", "’": "'", "《": "<", "》": ">", "〈": "<", "〉": ">",
        "【": "[", "】": "]", "〜": "~", "\u2212": "-", "…": "...",
    }.items()})  # fmt: skip
    return table


_WIDTH = _width_table()


def fold_width(text: str) -> str:
    """``text`` with full-width and half-width forms folded (ＡＢＣ１ -> ABC1, ｶﾞ -> ガ, 你好。 -> 你好.,
    ideographic space -> space), then composed (NFC), so one sentence typed in either input-method mode compares equal."""
    if text.isascii():  # no width forms in ASCII
        return text
    text = text.translate(_WIDTH)
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def content_key(example: Example) -> bytes:
    """A digest of what is trained on (roles, contents, tool calls, weights), with full-width and half-width forms
    folded (:func:`fold_width`): identical examples share it. A preference pair's key covers the prompt and both
    answers; a KTO example's covers its desirable mark."""
    parts: list[object] = [_message_key(m) for m in example.messages]
    if example.rejected is not None:
        parts.append(["rejected", [_message_key(m) for m in example.rejected]])
    if example.desirable is not None:
        parts.append(["desirable", example.desirable])
    return hashlib.blake2b(json.dumps(parts, ensure_ascii=False, default=str).encode("utf-8"), digest_size=16).digest()


def _message_key(m: dict) -> tuple:
    return (m.get("role"), fold_width(str(m.get("content") or "")).strip(), m.get("tool_calls"), m.get("weight", 1))


def example_text(example: Example) -> str:
    """The text near-duplicate detection compares: the contents of every message except the system prompt (a long
    shared system prompt would make unrelated short examples look alike), and a pair's rejected answer."""
    messages = [*example.messages, *(example.rejected or [])]
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") != "system")


def _char_trigrams(run: str) -> list[str]:
    return [run[i : i + 3] for i in range(len(run) - 2)] or [run]


def _tokens(text: str) -> tuple[list[str], list[bool] | None]:
    """(tokens, for each whether it is a character token: a CJK character or a character trigram; None when none is)."""
    if text.isascii():  # nothing to fold, no CJK: the plain word pattern finds the same runs, faster
        runs = _WORD.findall(text.lower())
        if not runs or max(map(len, runs)) <= LONG_RUN:
            return runs, None
    else:
        runs = _RUN.findall(fold_width(text).lower())
    tokens: list[str] = []
    chars: list[bool] = []
    for run in runs:
        if _CJK_CHAR.match(run):
            tokens.extend(run)  # one token per character
            chars.extend([True] * len(run))
        elif len(run) > LONG_RUN or _UNSPACED_CHAR.match(run):
            grams = _char_trigrams(run)
            tokens.extend(grams)
            chars.extend([True] * len(grams))
        else:
            tokens.append(run)
            chars.append(False)
    return tokens, (chars if any(chars) else None)


def shingle_tokens(text: str) -> list[str]:
    """The tokens shingles are made of (see the module docstring): words, CJK characters, and overlapping character
    trigrams of text without spaces, after width folding and lower-casing; punctuation and spaces are dropped."""
    return _tokens(text)[0]


class _WordHashes(dict):  # type: ignore[type-arg]
    """word -> 64-bit hash (blake2b, so the same in every process and run), memoised."""

    def __missing__(self, word: str) -> int:
        h = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
        if len(self) < 1_000_000:
            self[word] = h
        return h


_WORDS = _WordHashes()


def _combine(hashes: np.ndarray, size: int) -> np.ndarray:
    """Hashes of the ``size``-grams of a sequence of token hashes."""
    n = len(hashes) - size + 1
    h = np.zeros(max(n, 0), dtype=np.uint64)
    for j in range(size):  # polynomial combination of the token hashes (wraps mod 2**64, as intended)
        h = h * np.uint64(0x100000001B3) + hashes[j : j + n]
    return h


def shingle_hashes(text: str, word_size: int = WORD_SHINGLE, char_size: int = CHAR_SHINGLE) -> np.ndarray:
    """64-bit hashes of the shingles of ``text`` (:func:`shingle_tokens`): at each token, it and the next tokens,
    ``word_size`` of them from a word, ``char_size`` from a character token; one shingle of every token when the
    text is too short for any."""
    tokens, chars = _tokens(text)
    if not tokens:
        return np.zeros(1, dtype=np.uint64)
    hashes = np.fromiter(map(_WORDS.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
    n = len(hashes)
    if chars is None or word_size == char_size:
        return _combine(hashes, min(word_size if chars is None else char_size, n))
    is_char = np.array(chars)
    start = np.arange(n)
    parts = []
    for size, mask in ((word_size, ~is_char), (char_size, is_char)):
        at = start[mask & (start <= n - size)]
        if len(at):
            parts.append(_combine(hashes, size)[at])
    return np.concatenate(parts) if parts else _combine(hashes, n)


@functools.lru_cache(maxsize=4)
def _permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**62, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
    b = rng.integers(0, 2**62, size=num_perm, dtype=np.uint64)
    return a, b


def signatures(texts: Sequence[str], num_perm: int = NUM_PERM, *, chunk: int = 4096) -> list[np.ndarray]:
    """MinHash signatures (uint32 arrays of ``num_perm``): the minimum over shingles of ``num_perm`` multiply-shift
    universal hashes, computed for a whole batch of shingles at once."""
    a, b = _permutations(num_perm)
    per_text = [shingle_hashes(t) for t in texts]
    out: list[np.ndarray] = []
    i = 0
    while i < len(per_text):
        j, total = i, 0
        while j < len(per_text) and (total == 0 or total + len(per_text[j]) <= chunk):
            total += len(per_text[j])
            j += 1
        flat = np.concatenate(per_text[i:j])
        offsets = np.cumsum([0] + [len(x) for x in per_text[i : j - 1]])
        permuted = (flat[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)
        out.extend(np.minimum.reduceat(permuted, offsets, axis=0).astype(np.uint32))
        i = j
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity estimated from two signatures."""
    return float(np.count_nonzero(a == b)) / len(a)


@functools.lru_cache(maxsize=16)
def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows per band) minimising the false-positive and false-negative areas of the LSH S-curve around
    ``threshold`` (datasketch's MinHashLSH choice), weighting misses 4x: candidates are verified, so a false
    positive costs only a comparison while a false negative keeps a near-duplicate."""
    best: tuple[float, int, int] | None = None
    lo, hi = np.linspace(0, threshold, 200), np.linspace(threshold, 1, 200)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - lo**rows) ** bands, lo)
            fn = np.trapezoid((1 - hi**rows) ** bands, hi)
            err = 0.2 * fp + 0.8 * fn
            if best is None or err < best[0]:
                best = (err, bands, rows)
    assert best is not None
    return best[1], best[2]


class NearDuplicateIndex:
    """LSH buckets of signatures. :meth:`find` returns ``(key, similarity)`` of the most similar indexed signature
    at or above the threshold (None when there is none); :meth:`add` indexes a signature under ``key``."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM) -> None:
        self.threshold = threshold
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self._buckets: list[dict[bytes, list[Hashable]]] = [defaultdict(list) for _ in range(self.bands)]
        self._sigs: dict[Hashable, np.ndarray] = {}

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        data = sig[: self.bands * self.rows].tobytes()
        step = self.rows * 4
        return [data[i * step : (i + 1) * step] for i in range(self.bands)]

    def find(self, sig: np.ndarray) -> tuple[Hashable, float] | None:
        candidates: set[Hashable] = set()
        for bucket, key in zip(self._buckets, self._band_keys(sig)):
            found = bucket.get(key)
            if found:
                candidates.update(found)
        best = None
        for key in candidates:
            sim = jaccard(sig, self._sigs[key])
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (key, sim)
        return best

    def add(self, key: Hashable, sig: np.ndarray) -> None:
        for bucket, band in zip(self._buckets, self._band_keys(sig)):
            bucket[band].append(key)
        self._sigs[key] = sig

    def __len__(self) -> int:
        return len(self._sigs)
