"""Closing the loop from serving: feedback on served responses (thumbs up/down, a preferred alternative) goes into
the server's log, ``tunewise data from-feedback`` turns the log into KTO rows or DPO pairs, and ``tunewise data
prepare`` loads them. The server runs in-process on the tiny model; the commands run as processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from tests.cli_processes import Zygote
from tunewise.data.prepare import load_split

PROMPTS = [f"reverse: {' '.join(w)}" for w in ("cat", "dog", "sun", "map", "pen", "cup")]


@pytest.fixture(scope="module")
def session(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Six chat responses from the tiny model, each with feedback: thumbs up, down, a preferred answer, a score,
    a reference; a completions-endpoint response with a rating; one response without feedback."""
    from tunewise.serve.app import Server, create_app
    from tunewise.serve.variants import load_variants

    logs = tmp_path_factory.mktemp("feedback") / "logs"
    server = Server(load_variants([tiny_dir]), logs, max_tokens=8)
    (model,) = server.variants
    client = TestClient(create_app(server))
    ids, texts = [], []
    for prompt in PROMPTS:
        body = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": prompt}],
                                                        "max_tokens": 8}).json()
        ids.append(body["id"])
        texts.append(body["choices"][0]["message"]["content"])
    raw = client.post("/v1/completions", json={"model": model, "prompt": "a b c", "max_tokens": 4}).json()["id"]
    feedback = [
        {"id": ids[0], "rating": "up"},
        {"id": ids[1], "rating": "down"},
        {"id": ids[2], "preferred": "t a c"},  # a better answer: a DPO pair; for KTO the response is undesirable
        {"id": ids[3], "score": 0.9},  # a score counts as up at 0.5 or more
        {"id": ids[4], "rating": "up"}, {"id": ids[4], "rating": "down"},  # the latest feedback wins
        {"id": raw, "rating": "up"},  # a raw completion prompt is not a conversation: skipped
    ]
    for f in feedback:
        response = client.post("/v1/feedback", json=f)
        assert response.status_code == 200, response.text
    # ids[5] gets no feedback
    return {"logs": logs, "ids": ids, "texts": texts, "client": client}


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def test_feedback_is_logged_and_bad_feedback_refused(session: dict[str, Any]) -> None:
    client, ids = session["client"], session["ids"]
    logged = [json.loads(line) for line in (session["logs"] / "feedback.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [f["rating"] for f in logged[:2]] == ["up", "down"] and logged[2]["preferred"] == "t a c"
    for body, param in (({"id": ids[0], "rating": "meh"}, "rating"), ({"id": ids[0]}, "score"),
                        ({"id": ids[0], "preferred": ""}, "preferred")):
        response = client.post("/v1/feedback", json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    assert client.post("/v1/feedback", json={"id": "chatcmpl-unknown", "rating": "up"}).status_code == 404


def run_config(tmp: Path, data: Path, objective: str) -> Path:
    config = {"name": f"loop-{objective}", "output_dir": str(tmp / "runs"), "model": "tiny", "objective": objective,
              "data": {"path": str(data), "split": {"train": 1.0, "val": 0.0, "test": 0.0}}}
    path = tmp / f"{objective}.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_kto_rows_from_feedback_prepare(session: dict[str, Any], zygote: Zygote, tmp_path: Path) -> None:
    out = tmp_path / "kto.jsonl"
    made = zygote.run("data", "from-feedback", str(session["logs"]), "--out", str(out), "--kind", "kto", cwd=tmp_path)
    assert made.code == 0, made.stderr
    assert "wrote 6 rows" in made.stdout and "3 desirable, 3 undesirable" in made.stdout
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids, texts = session["ids"], session["texts"]
    marks = {(r["id"], r["completion"][0]["content"]): r["label"] for r in rows}
    assert marks == {(ids[0], texts[0]): True, (ids[1], texts[1]): False, (ids[2], texts[2]): False,
                     (ids[2], "t a c"): True, (ids[3], texts[3]): True, (ids[4], texts[4]): False}
    assert all(r["prompt"] == [{"role": "user", "content": PROMPTS[ids.index(r["id"])]}] for r in rows)
    assert "no feedback 1" in made.stdout and "not a chat request 1" in made.stdout

    prepared = zygote.run("data", "prepare", str(run_config(tmp_path, out, "kto")), "--no-progress", cwd=tmp_path)
    assert prepared.code == 0, prepared.stderr
    data = tmp_path / "runs" / "loop-kto" / "data"
    report = json.loads((data / "data_report.json").read_text(encoding="utf-8"))
    assert (report["counts"]["desirable"], report["counts"]["undesirable"]) == (3, 3)
    assert {ex.meta["id"] for ex in load_split(data, "train")} == set(ids[:5])  # provenance kept


def test_dpo_pairs_from_feedback_prepare(session: dict[str, Any], zygote: Zygote, tmp_path: Path) -> None:
    out = tmp_path / "dpo.jsonl"
    made = zygote.run("data", "from-feedback", str(session["logs"]), "--out", str(out), "--kind", "dpo", cwd=tmp_path)
    assert made.code == 0, made.stderr
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["chosen"] == [{"role": "assistant", "content": "t a c"}]
    assert row["rejected"] == [{"role": "assistant", "content": session["texts"][2]}]
    prepared = zygote.run("data", "prepare", str(run_config(tmp_path, out, "dpo")), "--no-progress", cwd=tmp_path)
    assert prepared.code == 0, prepared.stderr
    (pair,) = load_split(tmp_path / "runs" / "loop-dpo" / "data", "train")
    assert pair.reference == "t a c" and pair.rejected[0]["content"] == session["texts"][2]


def test_from_feedback_errors_are_one_line(session: dict[str, Any], zygote: Zygote, tmp_path: Path) -> None:
    wrong = zygote.run("data", "from-feedback", str(session["logs"]), "--out", str(tmp_path / "x.jsonl"), "--kind", "ppo",
                       cwd=tmp_path)
    assert wrong.code == 2 and "unknown kind 'ppo'" in wrong.stderr
    empty = tmp_path / "empty-logs"
    empty.mkdir()
    missing = zygote.run("data", "from-feedback", str(empty), "--out", str(tmp_path / "x.jsonl"), cwd=tmp_path)
    assert missing.code == 2 and "no JSONL logs" in missing.stderr
    assert not (tmp_path / "x.jsonl").exists()
