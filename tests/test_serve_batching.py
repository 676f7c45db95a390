"""Dynamic batching in the server: concurrent greedy requests share a generate call and get the answers they get one
at a time (streamed or not, different prompt lengths and budgets, a stop string); sampled requests run alone."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
import torch

from tunewise.serve.batching import batcher_for

PROMPTS = [("reverse: c a t", 12), ("hello", 5), ("what is the weather like in the hills today? " * 6, 16),
           ("reverse: d o g s", 9), ("tell me a story", 16), ("good morning to you", 3), ("a", 16), ("reverse: b e e", 7)]


@pytest.fixture(scope="module")
def served(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tunewise.serve.app import Server, create_app
    from tunewise.serve.server import BackgroundServer
    from tunewise.serve.variants import load_variants

    variants = load_variants([tiny_dir])
    server = Server(variants, tmp_path_factory.mktemp("serve-logs"), max_tokens=32, batch_wait_s=0.05)
    with BackgroundServer(create_app(server)) as background:
        client = openai.OpenAI(base_url=background.url, api_key="unused", max_retries=0, timeout=120)
        yield {"client": client, "variant": next(iter(variants.values()))}


def ask(client: openai.OpenAI, model: str, content: str, max_tokens: int, *, stream: bool = False, **kw: Any) -> tuple:
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": content}]
    if stream:
        chunks = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, stream=True, **kw)
        parts, reason = [], None
        for chunk in chunks:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
                reason = chunk.choices[0].finish_reason or reason
        return "".join(parts), reason
    response = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, **kw)
    return response.choices[0].message.content, response.choices[0].finish_reason


def concurrently(calls: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def work(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_answers_equal_sequential(served: dict[str, Any]) -> None:
    client, variant = served["client"], served["variant"]
    batcher = batcher_for(variant)
    sequential = [ask(client, variant.name, p, n) for p, n in PROMPTS]
    assert max(batcher.batch_sizes) == 1  # one at a time: nothing to batch with
    before = len(batcher.batch_sizes)
    together = concurrently([lambda p=p, n=n, i=i: ask(client, variant.name, p, n, stream=i % 2 == 1)
                             for i, (p, n) in enumerate(PROMPTS)])
    assert together == sequential
    assert max(batcher.batch_sizes[before:]) > 1, batcher.batch_sizes
    assert any(reason == "length" for _, reason in sequential)  # budgets of different rows ended different rows


def test_stop_strings_and_sampling_with_batching(served: dict[str, Any]) -> None:
    client, variant = served["client"], served["variant"]
    text, _ = ask(client, variant.name, "tell me a story", 16)
    stop = text.split()[1] if len(text.split()) > 1 else text[-1:]
    alone = ask(client, variant.name, "tell me a story", 16, stop=[stop])
    batcher = batcher_for(variant)
    before = len(batcher.batch_sizes)
    results = concurrently([lambda: ask(client, variant.name, "tell me a story", 16, stop=[stop], stream=True),
                            lambda: ask(client, variant.name, "tell me a story", 16, stop=[stop]),
                            lambda: ask(client, variant.name, "hello", 8, temperature=1.0, seed=3),
                            lambda: ask(client, variant.name, "hello", 8, temperature=1.0, seed=3)])
    assert results[0] == results[1] == alone
    assert stop not in alone[0] and alone[1] == "stop"
    assert results[2] == results[3]  # seeded sampling runs alone, so its draws don't depend on other requests
    assert sum(batcher.batch_sizes[before:]) == 2  # only the greedy ones went through the batcher


def test_the_command_line_sets_the_batching(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tunewise serve --max-batch N --batch-wait-ms W` reach the server; the defaults are the batcher's own; a value
    out of range is a one-line error (exit 2)."""
    from typer.testing import CliRunner

    from tunewise.cli import app
    from tunewise.serve import batching, server

    started: list[Any] = []
    monkeypatch.setattr(server, "serve_forever", lambda asgi, host, port: started.append(asgi.state.server))
    done = CliRunner().invoke(app, ["serve", str(tiny_dir), "--max-batch", "3", "--batch-wait-ms", "5"])
    assert done.exit_code == 0, done.output
    assert (started[-1].max_batch, started[-1].batch_wait_s) == (3, 0.005)
    done = CliRunner().invoke(app, ["serve", str(tiny_dir)])
    assert (started[-1].max_batch, started[-1].batch_wait_s) == (batching.MAX_BATCH, batching.WAIT_S)
    dtypes = lambda: {p.dtype for v in started[-1].variants.values() for p in v.model.parameters()}  # noqa: E731
    assert dtypes() == {torch.float32}, "fp32 by default: batched greedy answers equal one request at a time"
    done = CliRunner().invoke(app, ["serve", str(tiny_dir), "--bf16"])
    assert done.exit_code == 0, done.output
    assert dtypes() == {torch.bfloat16}
    bad = CliRunner().invoke(app, ["serve", str(tiny_dir), "--max-batch", "0"])
    assert bad.exit_code == 2 and "--max-batch must be at least 1" in bad.output
