"""Benchmark: batched greedy generation (tunewise's ``generate``) vs one example at a time, same model and test set.

    python benchmarks/generation.py [--model tiny|smollm2-135m|PATH] [--data test.jsonl] [--n 64] [--batch-size 16]
                                    [--max-new-tokens 16] [--threads 1]

Prints examples/s for each way and the ratio (target: batched >= 4x). Without --data, the test set is the toy
letter-reversal task the tests use. Both ways must give the same answers (greedy): the script checks and reports it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _examples(data: str | None, n: int) -> list:
    from tunewise.example import Example
    from tunewise.evaluate.standalone import read_examples

    if data:
        return read_examples(data, n)
    from tests.conftest import reversal_rows

    return [Example.from_record(r) for r in reversal_rows(n, seed=11)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--data", default=None)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tunewise.lm.generate import generate
    from tunewise.lm.loading import load_model, load_tokenizer

    examples = _examples(args.data, args.n)
    conversations = [e.prompt_messages for e in examples]
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    generate(model, tokenizer, conversations[:2], max_new_tokens=2, batch_size=2)  # warm-up

    started = time.perf_counter()
    batched = generate(model, tokenizer, conversations, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    single = [generate(model, tokenizer, [c], max_new_tokens=args.max_new_tokens, batch_size=1)[0] for c in conversations]
    single_s = time.perf_counter() - started

    same = sum(a["text"] == b["text"] for a, b in zip(batched, single))
    n = len(conversations)
    print(f"model {args.model}: {n} examples, max_new_tokens {args.max_new_tokens}, {args.threads} thread(s)")
    print(f"batched (batch {args.batch_size}): {n / batched_s:8.2f} examples/s  ({batched_s:.2f} s)")
    print(f"one at a time:        {n / single_s:8.2f} examples/s  ({single_s:.2f} s)")
    print(f"speed-up: {single_s / batched_s:.2f}x (target >= 4x); identical answers: {same}/{n}")


if __name__ == "__main__":
    main()
