"""Serving: dynamic batching (``tunewise serve``'s default) vs one request at a time, same model and prompts.

Each configuration runs its server in its own process (``Server(max_batch=...)`` behind uvicorn on localhost); the
clients are threads here, sending chat completions (greedy, ``max_tokens`` each) from the bundled topics:

* single: one client, requests one after another on the server with batching off: latency of a lone request and
  the one-at-a-time throughput;
* concurrent: ``--clients`` clients, each sending its requests back to back, on the server with batching on
  (and, for reference, with batching off).

Printed: requests/s, median and p95 latency, the batch sizes the server ran, and the targets' ratios: throughput of
concurrent-with-batching / one-at-a-time (target >= 3x) and p95 concurrent / median single (target <= 2x). Every
answer of the concurrent runs is checked against the single run's answer to the same prompt. Order A B B A.

    OMP_NUM_THREADS=1 python benchmarks/serve_batching.py [--model smollm2-135m] [--clients 8] [--requests 4] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve_child(model: str, max_batch: int, wait_ms: float, bf16: bool = False) -> None:
    """Run a server and print its URL; exit when stdin closes. Prints the batch sizes it ran at the end."""
    import tempfile

    from tunewise.lm.loading import resolve_model
    from tunewise.serve.app import Server, create_app
    from tunewise.serve.batching import batcher_for
    from tunewise.serve.server import BackgroundServer
    from tunewise.serve.variants import load_variants

    import torch

    variants = load_variants([resolve_model(model)], dtype=torch.bfloat16 if bf16 else torch.float32)
    server = Server(variants, tempfile.mkdtemp(), max_tokens=256, max_batch=max_batch, batch_wait_s=wait_ms / 1000)
    with BackgroundServer(create_app(server)) as background:
        name = next(iter(variants))
        print(json.dumps({"url": background.url, "model": name}), flush=True)
        sys.stdin.read()
        print(json.dumps({"batch_sizes": batcher_for(variants[name]).batch_sizes}), flush=True)


def prompts(n: int) -> list[list[dict]]:
    import random

    rows = [json.loads(l) for l in (ROOT / "examples/topics/topics.jsonl").read_text().splitlines() if l.strip()]
    random.Random(0).shuffle(rows)
    return [r["messages"][:-1] for r in rows[:n]]


def drive(url: str, model: str, work: list[list[list[dict]]], max_tokens: int) -> tuple[list[tuple[float, str, int]], float]:
    """Each inner list is one client's requests, sent back to back; returns ((latency, answer, index), ...), wall."""
    import httpx

    results: list[tuple[float, str, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(work))

    def client(requests: list[list[dict]], offset: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            barrier.wait()
            for k, messages in enumerate(requests):
                started = time.perf_counter()
                r = http.post("/chat/completions", json={"model": model, "messages": messages, "max_tokens": max_tokens})
                r.raise_for_status()
                latency = time.perf_counter() - started
                with lock:
                    results.append((latency, r.json()["choices"][0]["message"]["content"], offset + k))

    threads = [threading.Thread(target=client, args=(reqs, i * len(reqs))) for i, reqs in enumerate(work)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def measure(args: argparse.Namespace, max_batch: int, clients: int, convs: list) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, __file__, "--serve-child", "--model", args.model, "--max-batch",
                              str(max_batch), "--wait-ms", str(args.wait_ms)] + (["--bf16"] if args.bf16 else []), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    info = json.loads(child.stdout.readline())
    url = info["url"] + ("" if info["url"].endswith("/v1") else "/v1")
    per_client = len(convs) // clients
    work = [convs[i * per_client:(i + 1) * per_client] for i in range(clients)]
    drive(url, info["model"], [w[:1] for w in work], 4)  # warm-up: one short round of this configuration's load
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results, wall = drive(url, info["model"], work, args.max_tokens)
    child.stdin.close()
    sizes = json.loads(child.stdout.readline())["batch_sizes"]
    child.wait()
    latencies = sorted(r[0] for r in results)
    return {"max_batch": max_batch, "clients": clients, "requests": len(results), "wall_s": wall,
            "requests_per_s": len(results) / wall, "median_s": statistics.median(latencies),
            "p95_s": latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))],
            "answers": {r[2]: r[1] for r in results}, "batch_sizes": sizes, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--wait-ms", type=float, default=20.0)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "serve_batching.json"))
    parser.add_argument("--bf16", action="store_true", help="serve in bf16 (tunewise serve --bf16)")
    parser.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-batch", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        serve_child(args.model, args.max_batch, args.wait_ms, bf16=args.bf16)
        return
    convs = prompts(args.clients * args.requests)
    runs = {}
    # A B B A: one at a time, batched, batched (lock only, for reference), one at a time
    for key, max_batch, clients in (("single", 1, 1), ("batched", args.max_batch, args.clients),
                                    ("unbatched_concurrent", 1, args.clients), ("single_2", 1, 1)):
        runs[key] = measure(args, max_batch, clients, convs)
        r = runs[key]
        print(f"{key:>21}: {r['requests_per_s']:.3f} req/s, median {r['median_s']:.2f} s, p95 {r['p95_s']:.2f} s, "
              f"batches {statistics.fmean(r['batch_sizes']) if r['batch_sizes'] else 1:.1f} rows (load {r['load']})",
              flush=True)
    single_rps = statistics.fmean([runs["single"]["requests_per_s"], runs["single_2"]["requests_per_s"]])
    single_median = statistics.fmean([runs["single"]["median_s"], runs["single_2"]["median_s"]])
    b = runs["batched"]
    same = sum(b["answers"][i] == runs["single"]["answers"][i] for i in b["answers"])
    ratios = {"throughput": b["requests_per_s"] / single_rps, "p95_over_single": b["p95_s"] / single_median,
              "identical_answers": f"{same}/{len(b['answers'])}"}
    print(f"{args.clients} clients, batching on: {ratios['throughput']:.2f}x the one-at-a-time throughput (target >= 3x); "
          f"p95 {ratios['p95_over_single']:.2f}x a lone request's median latency (target <= 2x); identical answers "
          f"{ratios['identical_answers']}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": {k: {kk: vv for kk, vv in v.items() if kk != "answers"}
                                                             for k, v in runs.items()}, "ratios": ratios}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
