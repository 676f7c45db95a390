"""convert round trips, and the `tunewise data` commands (exit code 2 with one line for user errors)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tests.data_fixtures import chat, write_jsonl
from tunewise.cli.data import app
from tunewise.data.convert import convert_file
from tunewise.errors import DataError

ALPACA = [
    {"instruction": "Translate good morning", "input": "", "output": "Bonjour", "label": "fr"},
    {"instruction": "Add", "input": "", "output": "2", "system": "Be brief.", "history": [["hi", "hello"]]},
]


def read(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_alpaca_chat_alpaca_round_trip(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    convert_file(str(src), tmp_path / "chat.jsonl", "chat")
    chats = read(tmp_path / "chat.jsonl")
    assert chats[0] == {"messages": [{"role": "user", "content": "Translate good morning"}, {"role": "assistant", "content": "Bonjour"}], "label": "fr"}
    convert_file(str(tmp_path / "chat.jsonl"), tmp_path / "back.jsonl", "alpaca")
    assert read(tmp_path / "back.jsonl") == ALPACA


def test_completion_json_output_and_rejects(tmp_path):
    multi = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}  # fmt: skip
    src = write_jsonl(tmp_path / "c.jsonl", [chat("2+2", "4"), multi, "broken"])
    result = convert_file(str(src), tmp_path / "out.json", "completion")
    assert json.loads((tmp_path / "out.json").read_text()) == [{"prompt": "2+2", "completion": "4"}]
    assert result.written == 1 and result.rejected == {"invalid_roles": 1, "invalid_json": 1}
    lines = {r["line"] for r in read(tmp_path / "out.json.rejects.jsonl")}
    assert lines == {2, 3}
    convert_file(str(tmp_path / "out.json"), tmp_path / "again.jsonl", "chat")
    assert read(tmp_path / "again.jsonl")[0]["messages"][1]["content"] == "4"


def test_sharegpt_to_chat_and_errors(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}])
    convert_file(str(src), tmp_path / "c.jsonl", "chat")
    assert read(tmp_path / "c.jsonl")[0]["messages"][0] == {"role": "user", "content": "q"}
    with pytest.raises(DataError, match="unknown output format"):
        convert_file(str(src), tmp_path / "x.jsonl", "yaml")


# --------------------------------------------------------------------------------------------------------------------
# commands


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


def test_cli_errors_exit_2(tmp_path):
    runner = CliRunner()
    one_line_error(runner.invoke(app, ["convert", str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl")]))
    src = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    one_line_error(runner.invoke(app, ["convert", str(src), str(tmp_path / "o.jsonl"), "--format", "xml"]))
    bad = write_jsonl(tmp_path / "bad.jsonl", ["nope", "[1]"])
    assert "no row" in one_line_error(runner.invoke(app, ["convert", str(bad), str(tmp_path / "o.jsonl")]))
    assert "no valid row" in one_line_error(runner.invoke(app, ["split", str(bad), str(tmp_path / "s")]))


def test_cli_prepare_stats_preview_split(tmp_path, data_model_dir):
    rows = [chat(f"question {i} about colours", f"answer {i}", label="ab"[i % 2]) for i in range(30)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = {"name": "r1", "output_dir": str(tmp_path / "runs"), "model": str(data_model_dir), "data": {"path": str(data)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", str(tmp_path / "c.yaml"), "data.stratify_by=label", "--no-progress"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "r1"
    assert {p.name for p in (run / "data").iterdir()} >= {"train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl", "data_report.json"}
    assert (run / "plots" / "data_token_lengths.png").stat().st_size > 0
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))  # what `tunewise run` leaves in a run directory
    res = runner.invoke(app, ["stats", str(run)])
    assert res.exit_code == 0 and "rows per stage" in res.output
    res = runner.invoke(app, ["preview", str(run), "-n", "2"])
    assert res.exit_code == 0 and res.output.count("example ") == 2 and "<|im_start|>assistant" in res.output
    res = runner.invoke(app, ["preview", str(data), "--model", str(data_model_dir), "-n", "1"])
    assert res.exit_code == 0 and "question 0 about colours" in res.output
    res = runner.invoke(app, ["split", str(data), str(tmp_path / "split"), "--train", "20", "--val", "5", "--test", "5", "--stratify-by", "label"])
    assert res.exit_code == 0 and "train 20, val 5, test 5" in res.output
    cfg["data"]["path"] = str(tmp_path / "nothing.jsonl")
    (tmp_path / "c2.yaml").write_text(yaml.safe_dump(cfg))
    assert "not found" in one_line_error(runner.invoke(app, ["prepare", str(tmp_path / "c2.yaml"), "--no-progress"]))
