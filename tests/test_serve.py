"""The OpenAI-compatible server, driven by the official ``openai`` client on localhost: base + a tuned adapter on one
loaded base, an A/B split, streaming, per-variant logs, and bad requests answered with OpenAI-style errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.conftest import reversal_rows
from tests.test_export import train_tiny_run
from tunewise.example import Example

USER = "reverse: c a t"


@pytest.fixture(scope="module")
def run_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tiny_dir, tmp_path_factory.getbasetemp() / "ship-run")[1]


@pytest.fixture(scope="module")
def served(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tunewise.serve.app import Server, create_app
    from tunewise.serve.server import BackgroundServer
    from tunewise.serve.split import TrafficSplit
    from tunewise.serve.variants import load_variants

    variants = load_variants([run_dir])
    log_dir = tmp_path_factory.mktemp("serve-logs")
    server = Server(variants, log_dir, split=TrafficSplit({"base": 1, run_dir.name: 1}), max_tokens=24)
    with BackgroundServer(create_app(server)) as background:
        client = openai.OpenAI(base_url=background.url, api_key="unused", max_retries=0, timeout=60)
        yield {"client": client, "url": background.url, "variants": variants, "logs": log_dir, "tuned": run_dir.name}


def chat(client: openai.OpenAI, model: str, content: str = USER, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kwargs)


def test_models_lists_the_variants_and_the_split(served: dict[str, Any]) -> None:
    ids = [m.id for m in served["client"].models.list()]
    assert ids == ["base", served["tuned"], "ab"]
    assert served["variants"]["base"].model is served["variants"][served["tuned"]].model  # one base in memory


def test_chat_answers_like_the_eval_stage(served: dict[str, Any]) -> None:
    from tunewise.lm.generate import generate

    client, tuned = served["client"], served["tuned"]
    for name in ("base", tuned):
        response = chat(client, name, max_tokens=16)
        variant = served["variants"][name]
        with variant.active() as model:
            expected = generate(model, variant.tokenizer, [[{"role": "user", "content": USER}]], max_new_tokens=16)[0]
        assert response.model == name
        assert response.choices[0].message.content.strip() == expected["text"]
        assert response.choices[0].finish_reason == ("stop" if expected["stopped"] else "length")
        assert response.usage.completion_tokens == expected["new_tokens"] + expected["stopped"]
    assert chat(client, "base", max_tokens=16).choices[0].message.content != chat(client, tuned, max_tokens=16).choices[0].message.content


def test_streaming_matches_the_whole_answer(served: dict[str, Any]) -> None:
    client, tuned = served["client"], served["tuned"]
    whole = chat(client, tuned, max_tokens=16).choices[0].message.content
    chunks = list(chat(client, tuned, max_tokens=16, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_completions_endpoint_plain_and_streamed(served: dict[str, Any]) -> None:
    client = served["client"]
    response = client.completions.create(model="base", prompt="a b c d", max_tokens=6)
    assert response.object == "text_completion" and response.usage.prompt_tokens > 0
    assert response.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="base", prompt="a b c d", max_tokens=6,
                                                                            stream=True))
    assert streamed == response.choices[0].text


def test_stop_strings_cut_the_answer(served: dict[str, Any]) -> None:
    client, tuned = served["client"], served["tuned"]
    full = chat(client, tuned, max_tokens=16).choices[0].message.content
    assert len(full) >= 3, full
    stop = full[2]
    cut = chat(client, tuned, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(client, tuned, max_tokens=16, stop=[stop],
                                                                        stream=True) if c.choices)
    assert streamed == cut.choices[0].message.content


def test_ab_split_assigns_users_stably_and_logs_every_request(served: dict[str, Any]) -> None:
    from tunewise.serve.abtest import summarize

    client, tuned, logs = served["client"], served["tuned"], served["logs"]
    rows = [Example.from_record(r) for r in reversal_rows(16, seed=5)]
    seen: dict[str, str] = {}
    for i, example in enumerate(rows):
        user = f"user-{i}"
        response = client.chat.completions.with_raw_response.create(
            model="ab", messages=example.prompt_messages, max_tokens=12, user=user,
            metadata={"reference": example.reference or ""},
        )
        seen[user] = response.parse().model
        assert response.headers["x-tunewise-variant"] == seen[user]
    assert set(seen.values()) == {"base", tuned}
    again = chat(client, "ab", user="user-3", max_tokens=4)
    assert again.model == seen["user-3"]

    records = {name: [json.loads(line) for line in (logs / f"{name}.jsonl").read_text().splitlines()]
               for name in ("base", tuned)}
    split_records = [r for rs in records.values() for r in rs if r["assignment"] == "user-hash"]
    assert len(split_records) == 17
    record = next(r for r in records[tuned] if r["assignment"] == "user-hash")
    assert {"id", "request", "response", "latency_s", "ttft_s", "prompt_tokens", "completion_tokens",
            "finish_reason", "metadata"} <= set(record)

    summary = summarize(logs, metric="exact_match")
    assert summary["control"] == "base"
    for name in ("base", tuned):
        v = summary["variants"][name]
        assert v["requests"] == len(records[name])
        assert v["latency_s"]["p95"] >= v["latency_s"]["p50"] > 0
        assert v["exact_match"]["n"] == sum(1 for u, m in seen.items() if m == name)
    assert summary["versus_control"][tuned]["latency_s"] is not None


def test_feedback_is_joined_to_its_variant(served: dict[str, Any]) -> None:
    from tunewise.serve.abtest import summarize

    client, url, tuned = served["client"], served["url"], served["tuned"]
    ids = [chat(client, tuned, max_tokens=4).id for _ in range(2)]
    for rid, score in zip(ids, (1.0, 0.0)):
        assert httpx.post(f"{url}/feedback", json={"id": rid, "score": score}).status_code == 200
    missing = httpx.post(f"{url}/feedback", json={"id": "chatcmpl-nope", "score": 1})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"
    assert summarize(served["logs"])["variants"][tuned]["feedback"]["n"] == 2


def test_bad_requests_get_openai_errors_and_the_server_keeps_going(served: dict[str, Any]) -> None:
    client, url, tuned = served["client"], served["url"], served["tuned"]
    with pytest.raises(openai.NotFoundError) as unknown:
        chat(client, "gpt-nothing")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_many:
        chat(client, tuned, max_tokens=10_000)
    assert too_many.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as too_long:
        chat(client, tuned, content="a " * 600, max_tokens=8)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        chat(client, tuned, n=2)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=tuned, messages=[])

    missing = httpx.post(f"{url}/chat/completions", json={"model": tuned})
    assert missing.status_code == 400
    assert missing.json()["error"] == {"message": "Missing required parameter: 'messages'.",
                                       "type": "invalid_request_error", "param": "messages",
                                       "code": "missing_required_parameter"}
    garbage = httpx.post(f"{url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_json"
    bad_role = httpx.post(f"{url}/chat/completions", json={"model": tuned, "messages": [{"role": "robot", "content": "x"}]})
    assert bad_role.status_code == 400 and bad_role.json()["error"]["param"] == "messages.0.role"
    assert httpx.get(f"{url}/nowhere").status_code == 404

    assert chat(client, tuned, max_tokens=4).choices[0].message.content is not None  # still serving
    errors = (served["logs"] / "errors.jsonl").read_text().splitlines()
    assert len(errors) >= 8


def test_only_loopback_addresses() -> None:
    from tunewise.serve.server import check_loopback

    assert check_loopback("127.0.0.1") == "127.0.0.1"
    assert check_loopback("::1") == "::1"
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            check_loopback(host)


# --- limits (issue 14): request size, numbers out of range, an empty body, trust_remote_code per run, no pickles ---


@pytest.fixture(scope="module")
def limited(served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The same variants behind a server that accepts bodies of at most 64 KiB."""
    from tunewise.serve.app import Server, create_app
    from tunewise.serve.server import BackgroundServer

    log_dir = tmp_path_factory.mktemp("limited-logs")
    with BackgroundServer(create_app(Server(served["variants"], log_dir, max_tokens=24, max_body_bytes=64 * 1024))) as bg:
        yield {"url": bg.url, "host": bg.host, "port": bg.port, "logs": log_dir, "tuned": served["tuned"]}


def _raw_post(host: str, port: int, head: bytes, body_part: bytes) -> tuple[int, dict[str, Any]]:
    """Send headers and only the start of a body, then read the answer: a server that waits for the whole body
    never answers (the socket times out)."""
    import socket

    with socket.create_connection((host, port), timeout=20) as sock:
        sock.sendall(head + body_part)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                [h for h in data.split(b"\r\n") if h.lower().startswith(b"content-length:")][0].split(b":")[1]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_a_body_over_the_limit_is_refused_before_it_is_read(limited: dict[str, Any]) -> None:
    # Content-Length says 20 MB; only 1 KB is sent: the 413 comes without the rest
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {20 * 2**20}\r\n\r\n").encode()
    status, body = _raw_post(limited["host"], limited["port"], head, b'{"model": "base", "messages": [' + b" " * 1000)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert "65,536 bytes" in body["error"]["message"] and "--max-body-mb" in body["error"]["message"]

    # no Content-Length (chunked): cut off once the bytes received pass the limit
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "base", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"a" * 4096
        yield b'"}]}'
    chunked = httpx.post(f"{limited['url']}/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"

    # under the limit: answered as usual
    ok = httpx.post(f"{limited['url']}/chat/completions", timeout=60,
                    json={"model": limited["tuned"], "messages": [{"role": "user", "content": USER}], "max_tokens": 4})
    assert ok.status_code == 200, ok.text
    errors = [json.loads(line) for line in (limited["logs"] / "errors.jsonl").read_text().splitlines()]
    assert [e["status"] for e in errors].count(413) == 2


def test_numbers_out_of_range_and_an_empty_body_get_400_naming_the_parameter(limited: dict[str, Any]) -> None:
    url, tuned = limited["url"], limited["tuned"]
    messages = [{"role": "user", "content": USER}]
    cases = [({"seed": 2**70}, "seed"), ({"seed": -(2**64)}, "seed"), ({"max_tokens": -5}, "max_tokens"),
             ({"max_completion_tokens": 0}, "max_completion_tokens"), ({"temperature": 3}, "temperature"),
             ({"n": 0}, "n"), ({"top_p": 0}, "top_p")]
    for extra, param in cases:
        r = httpx.post(f"{url}/chat/completions", json={"model": tuned, "messages": messages, **extra}, timeout=60)
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"] == param, (extra, r.json())
    # NaN and Infinity are not JSON, but Python's parser reads them: refused by name too
    for raw, param in ((b'"temperature": NaN', "temperature"), (b'"top_p": Infinity', "top_p")):
        body = b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], %s}' % (tuned.encode(), raw)
        r = httpx.post(f"{url}/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    feedback = httpx.post(f"{url}/feedback", content=b'{"id": "x", "score": NaN}', headers={"content-type": "application/json"})
    assert feedback.status_code == 400 and feedback.json()["error"]["param"] == "score"

    empty = httpx.post(f"{url}/chat/completions", content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_body"
    assert "body is empty" in empty.json()["error"]["message"] and "None" not in empty.json()["error"]["message"]
    # a seed in range works (sampling): the server kept going
    r = httpx.post(f"{url}/chat/completions", timeout=60,
                   json={"model": tuned, "messages": messages, "max_tokens": 4, "temperature": 0.7, "seed": 2**63 - 1})
    assert r.status_code == 200, r.text


def _copy_run(run_dir: Path, to: Path, **config: Any) -> Path:
    import shutil

    import yaml

    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("checkpoints", "serve", "eval", "plots"))
    data = yaml.safe_load((to / "config.yaml").read_text())
    data.update(config)
    (to / "config.yaml").write_text(yaml.safe_dump(data))
    return to


def test_trust_remote_code_is_decided_per_run(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tunewise.lm.loading as models
    from tunewise.serve.variants import load_variants

    trusting = _copy_run(run_dir, tmp_path / "trusting", trust_remote_code=True)
    plain = _copy_run(run_dir, tmp_path / "plain")
    loads: list[tuple[str, bool]] = []
    real = models.load_model

    def recording(name: str, **kwargs: Any) -> Any:  # the real loader, with its trust_remote_code noted
        loads.append((name, kwargs.get("trust_remote_code", False)))
        return real(name, **kwargs)

    monkeypatch.setattr(models, "load_model", recording)
    variants = load_variants([plain, trusting])
    assert sorted(t for _, t in loads) == [False, True], loads  # one base each way, not one base with it on for all
    assert variants["plain"].model is variants["base"].model
    assert variants["trusting"].model is not variants["plain"].model
    assert variants["trusting"].model is variants["base-2"].model


def test_a_pickled_adapter_is_refused_unless_the_user_opts_in(run_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from tests.cli_processes import REPO
    from tunewise.serve.variants import PickleRefused, load_variants

    pickled = _copy_run(run_dir, tmp_path / "pickled")
    weights = pickled / "model" / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), pickled / "model" / "adapter_model.bin")
    weights.unlink()
    with pytest.raises(PickleRefused, match="--allow-pickle"):
        load_variants([pickled])
    variants = load_variants([pickled], allow_pickle=True)
    assert variants["pickled"].adapter == "pickled"

    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "tunewise", "serve", str(pickled), "--port", "0"], capture_output=True,
                            text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    assert "adapter_model.bin is a pickle file" in result.stderr and "--allow-pickle" in result.stderr
    assert "Traceback" not in result.stderr
