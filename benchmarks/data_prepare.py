"""Benchmark: prepare 100,000 generated chat rows (parse, validate, tokenize, statistics, exact + near dedup, split).

    python benchmarks/data_prepare.py [--rows 100000] [--model smollm2-135m] [--near 0.85]

The target is at most 60 s on a 2-core CPU machine. The rows are generated here (seeded): varied questions and
answers, with 2% exact duplicates, 2% near-duplicates (one word changed) and 0.5% broken rows mixed in.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a model data train learn token answer question label value time people year way day thing man world life hand "
    "part child eye woman place work week case point government company number group problem fact be have do say get "
    "make go know take see come think look want give use find tell ask work seem feel try leave call good new first last "
    "long great little own other old right big high different small large next early young important few public bad "
    "same able to of in for on with at by from up about into over after city river mountain paris france capital red "
    "green blue colour music book write read code python function error file system memory fast slow cheap price"
).split()
LABELS = ["billing", "technical", "account", "sales", "other"]


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi))).capitalize() + "."


def generate(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    made: list[dict] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            r = rng.random()
            if made and r < 0.02:
                row = rng.choice(made)
            elif made and r < 0.04:
                row = json.loads(json.dumps(rng.choice(made)))
                words = row["messages"][-1]["content"].split()
                words[rng.randrange(len(words))] = "changed"
                row["messages"][-1]["content"] = " ".join(words)
            elif r < 0.045:
                f.write('{"messages": [broken\n')
                continue
            else:
                row = {
                    "messages": [
                        {"role": "system", "content": "You are a helpful support assistant."},
                        {"role": "user", "content": sentence(rng, 10, 40)},
                        {"role": "assistant", "content": sentence(rng, 15, 60)},
                    ],
                    "label": rng.choice(LABELS),
                }
                if len(made) < 5000:
                    made.append(row)
            f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model", default="smollm2-135m", help="tokenizer to measure with")
    parser.add_argument("--near", type=float, default=0.85, help="near-duplicate Jaccard threshold")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tunewise.config import DataConfig
    from tunewise.data.prepare import prepare_data
    from tunewise.models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        generate(data, args.rows)
        size = data.stat().st_size
        config = DataConfig(path=str(data), stratify_by="label", near_dedup_threshold=args.near, max_tokens=2048)
        start = time.perf_counter()
        report = prepare_data(config, tokenizer, Path(tmp) / "out", progress=False)
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": args.rows, "file_mb": round(size / 2**20, 1), "model": args.model, "seconds": round(seconds, 2),
                      "rows_per_s": round(args.rows / seconds), "peak_rss_mb": round(peak_mb), "counts": report.counts,
                      "total_tokens_p50": report.tokens["train"]["total"]["p50"]}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
