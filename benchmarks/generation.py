"""Benchmark: batched greedy generation (tunewise's ``generate``) vs one example at a time, same model and test set.

    python benchmarks/generation.py [--model smollm2-135m|tiny|PATH] [--data test.jsonl | --shapes short,long] [--n 48]
                                    [--batch-size 16] [--max-new-tokens 16] [--threads 1]

Prints prompts/s for each way (order A B B A, means) and the ratio (target: batched >= 4x), per shape: ``short`` the
bundled topics (shared system prompt), ``long`` 200-400-token passages (benchmarks/bench_rows.py); the tiny model uses
the toy reversal task. Both ways must give the same answers (greedy): the script checks and reports it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _conversations(data: str | None, n: int, model: str, shape: str) -> list:
    """Prompts without their answers: --data, or the benchmark shapes (benchmarks/bench_rows.py: ``short`` = the
    bundled topics, shuffled, shared system prompt; ``long`` = 200-400-token passages), or the toy reversal task."""
    from tunewise.example import Example
    from tunewise.evaluate.standalone import read_examples

    if data:
        return [e.prompt_messages for e in read_examples(data, n)]
    if model == "tiny":
        from tests.conftest import reversal_rows

        return [Example.from_record(r).prompt_messages for r in reversal_rows(n, seed=11)]
    from bench_rows import shape_rows
    from tunewise.lm.loading import load_tokenizer

    rows, _ = shape_rows(shape, load_tokenizer(model), n, 0)
    return [r["messages"][:-1] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default=None)
    parser.add_argument("--shapes", default="short,long", help="benchmarks/bench_rows.py shapes (without --data)")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="load the model in bf16 (what evaluation uses on a CPU with bf16 units)")
    args = parser.parse_args()

    import os
    import statistics

    import torch

    torch.set_num_threads(args.threads)
    from tunewise.lm.generate import generate
    from tunewise.lm.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    for shape in ([None] if args.data else args.shapes.split(",")):
        conversations = _conversations(args.data, args.n, args.model, shape)
        generate(model, tokenizer, conversations[:2], max_new_tokens=2, batch_size=2)  # warm-up
        timings: dict[str, list[float]] = {"batched": [], "single": []}
        answers = {}
        for way in ("batched", "single", "single", "batched"):  # A B B A
            started = time.perf_counter()
            if way == "batched":
                out = generate(model, tokenizer, conversations, max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size)
            else:
                out = [generate(model, tokenizer, [c], max_new_tokens=args.max_new_tokens, batch_size=1)[0]
                       for c in conversations]
            timings[way].append(time.perf_counter() - started)
            answers[way] = out
        batched_s, single_s = statistics.fmean(timings["batched"]), statistics.fmean(timings["single"])
        same = sum(a == b for a, b in zip(answers["batched"], answers["single"]))
        n = len(conversations)
        lengths = [len(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False))
                   for c in conversations]
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"model {args.model}, {shape or args.data}: {n} prompts of {min(lengths)}-{max(lengths)} tokens, "
              f"max_new_tokens {args.max_new_tokens}, {args.threads} thread(s), load {load}")
        print(f"  batched (batch {args.batch_size}): {n / batched_s:8.2f} prompts/s  ({timings['batched']} s)")
        print(f"  one at a time:      {n / single_s:8.2f} prompts/s  ({timings['single']} s)")
        print(f"  speed-up: {single_s / batched_s:.2f}x (target >= 4x); identical answers: {same}/{n}", flush=True)


if __name__ == "__main__":
    main()
