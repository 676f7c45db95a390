"""Build the bundled preference example from offline sources: the letter-reversal task on words of the chatterbot
corpus (the words the tiny model's pretraining spells out; it never saw a reversal).

Each prompt asks to reverse a word given letter by letter; the chosen answer reverses it, the rejected one repeats the
word as given, the mistake an untuned model makes. So success is checkable without a judge: exact match on the
reversed word, and whether a model ranks the reversed answer above the repeated one.

Writes (deterministic, seed 13): sft.jsonl (prompt -> chosen, for the SFT stage), pairs.jsonl (prompt, chosen,
rejected, for DPO) over the same 480 training words, and test_pairs.jsonl (120 held-out words).
    python examples/preference/build.py [--out examples/preference]

On-policy pairs (what run.sh trains DPO on): the SFT model answers the training prompts (`tunewise eval`), and
each wrong answer becomes the rejected side of a pair whose chosen side is the right one: DPO then pushes down the
mistakes the SFT model actually makes, not one it already avoids.
    python examples/preference/build.py --rejected-from PREDICTIONS.jsonl --pairs-out FILE
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


def on_policy(predictions: Path, out: Path) -> None:
    """Pairs from a model's answers to the training prompts: every wrong answer is rejected against the right one."""
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = [{"prompt": r["input"], "chosen": r["reference"], "rejected": r["prediction"].strip()}
             for r in rows if r["prediction"].strip() and r["prediction"].strip() != r["reference"].strip()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    print(f"{len(pairs)} on-policy pairs (of {len(rows)} answers; the rest were right or empty) -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--rejected-from", type=Path, help="predictions_<model>.jsonl of `tunewise eval` on sft.jsonl")
    parser.add_argument("--pairs-out", type=Path, help="with --rejected-from: where the on-policy pairs go")
    args = parser.parse_args()
    if args.rejected_from:
        on_policy(args.rejected_from, args.pairs_out or args.out / "pairs_on_policy.jsonl")
        return
    chosen = words(seed=13)[:600]
    train, test = chosen[:480], chosen[480:]
    write = lambda name, rows: (args.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # noqa: E731
    write("sft.jsonl", [{"prompt": p["prompt"], "completion": p["chosen"]} for p in map(pair, train)])
    write("pairs.jsonl", [pair(w) for w in train])
    write("test_pairs.jsonl", [pair(w) for w in test])
    print(f"wrote {len(train)} training words (sft.jsonl, pairs.jsonl) and {len(test)} held-out pairs to {args.out}")


if __name__ == "__main__":
    main()
