"""Build the bundled preference example from offline sources: the letter-reversal task on words of the chatterbot
corpus (the words the tiny model's pretraining spells out; it never saw a reversal).

Each prompt asks to reverse a word given letter by letter; the chosen answer reverses it, the rejected one repeats the
word as given, the mistake an untuned model makes. So success is checkable without a judge: exact match on the
reversed word, and whether a model ranks the reversed answer above the repeated one.

Writes (deterministic, seed 13): sft.jsonl (prompt -> chosen, for the SFT stage), pairs.jsonl (prompt, chosen,
rejected, for DPO) over the same 480 training words, and test_pairs.jsonl (120 held-out words).
    python examples/preference/build.py [--out examples/preference]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from tunewise.models.tiny import chatterbot_conversations


def words(seed: int) -> list[str]:
    found = sorted({w for c in chatterbot_conversations() for t in c for w in re.findall(r"[a-z]+", t.lower())
                    if 3 <= len(w) <= 6 and w != w[::-1]})  # a palindrome has no wrong answer to prefer against
    random.Random(seed).shuffle(found)
    return found


def pair(word: str) -> dict[str, str]:
    return {"prompt": "reverse: " + " ".join(word), "chosen": " ".join(reversed(word)), "rejected": " ".join(word)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    chosen = words(seed=13)[:600]
    train, test = chosen[:480], chosen[480:]
    write = lambda name, rows: (args.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # noqa: E731
    write("sft.jsonl", [{"prompt": p["prompt"], "completion": p["chosen"]} for p in map(pair, train)])
    write("pairs.jsonl", [pair(w) for w in train])
    write("test_pairs.jsonl", [pair(w) for w in test])
    print(f"wrote {len(train)} training words (sft.jsonl, pairs.jsonl) and {len(test)} held-out pairs to {args.out}")


if __name__ == "__main__":
    main()
