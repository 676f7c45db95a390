"""Benchmark: constrained label scoring with the prompt computed once per row (4-D mask) vs one padded row per
label, same model, same examples; both must give the same log-likelihoods. With ``--shots K`` every prompt starts with
the same K question/answer turns (the few-shot baseline), and a third way is timed: the shared row without the batch's
common prefix computed once as a KV cache.

    python benchmarks/label_scoring.py [--model tiny|smollm2-135m|PATH] [--labels 21] [--n 32] [--prompt-words 60]
    python benchmarks/label_scoring.py --model smollm2-135m --labels 4 --shots 4 --prompt-words 200

Prints examples/s of each way and the ratios. The shared row feeds the prompt once instead of once per label, so the
gain grows with the number of labels and the prompt's length; the batch cache feeds the shots once per batch.
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
    parser.add_argument("--shots", type=int, default=0, help="question/answer turns every prompt starts with")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tunewise.evaluate.labels import score_labels
    from tunewise.lm.loading import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    words = "the weather today is what kind of day would you say it has been so far".split()
    labels = [f"topic {chr(97 + i % 26)}{i}" for i in range(args.labels)]
    def question(i: int) -> str:
        return " ".join(words[(i + k) % len(words)] for k in range(args.prompt_words))

    shots = [turn for s in range(args.shots) for turn in ({"role": "user", "content": question(1000 + s)},
                                                           {"role": "assistant", "content": labels[s % len(labels)]})]
    convs = [[{"role": "system", "content": "Name the topic."}, *shots, {"role": "user", "content": question(i)}]
             for i in range(args.n)]  # fmt: skip
    ways = {"shared prompt row, batch prefix cached": dict(shared=True),
            "shared prompt row, no batch cache": dict(shared=True, share_prefix=False),
            "one row per label": dict(shared=False)}
    if not args.shots:
        del ways["shared prompt row, no batch cache"]
    times, results = {}, {}
    for name, way in ways.items():
        score_labels(model, tokenizer, convs[:2], labels, batch_size=args.batch_size, **way)  # warm up
        started = time.perf_counter()
        results[name] = score_labels(model, tokenizer, convs, labels, batch_size=args.batch_size, **way)
        times[name] = time.perf_counter() - started
    fastest = next(iter(ways))
    print(f"{args.model}: {args.n} examples x {args.labels} labels, prompts of ~{args.prompt_words} words after "
          f"{args.shots} shots")
    for name in ways:
        worst = max(abs(a.logprobs[k] - b.logprobs[k]) for a, b in zip(results[name], results[fastest]) for k in labels)
        print(f"  {name:<40}: {args.n / times[name]:8.2f} examples/s, {times[name] / times[fastest]:5.2f}x the time of "
              f"the first (largest log-likelihood difference {worst:.2e})")


if __name__ == "__main__":
    main()
