"""Benchmark: constrained label scoring with the prompt computed once per row (4-D mask) vs one padded row per
label, same model, same examples; both must give the same log-likelihoods.

    python benchmarks/label_scoring.py [--model tiny|smollm2-135m|PATH] [--labels 21] [--n 32] [--prompt-words 60]

Prints examples/s of each way and the ratio. The shared row feeds the prompt once instead of once per label, so the
gain grows with the number of labels and the prompt's length.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--labels", type=int, default=21)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--prompt-words", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tunewise.evaluate.labels import score_labels
    from tunewise.lm.loading import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    words = "the weather today is what kind of day would you say it has been so far".split()
    labels = [f"topic {chr(97 + i % 26)}{i}" for i in range(args.labels)]
    convs = [[{"role": "system", "content": "Name the topic."},
              {"role": "user", "content": " ".join(words[(i + k) % len(words)] for k in range(args.prompt_words))}]
             for i in range(args.n)]  # fmt: skip
    times, results = {}, {}
    for shared in (True, False):
        score_labels(model, tokenizer, convs[:2], labels, shared=shared, batch_size=args.batch_size)  # warm up
        started = time.perf_counter()
        results[shared] = score_labels(model, tokenizer, convs, labels, shared=shared, batch_size=args.batch_size)
        times[shared] = time.perf_counter() - started
    worst = max(abs(a.logprobs[k] - b.logprobs[k]) for a, b in zip(results[True], results[False]) for k in labels)
    print(f"{args.model}: {args.n} examples x {args.labels} labels, prompts of ~{args.prompt_words} words")
    print(f"  shared prompt row : {args.n / times[True]:8.2f} examples/s")
    print(f"  one row per label : {args.n / times[False]:8.2f} examples/s")
    print(f"  ratio             : {times[False] / times[True]:8.2f}x   (largest log-likelihood difference {worst:.2e})")


if __name__ == "__main__":
    main()
