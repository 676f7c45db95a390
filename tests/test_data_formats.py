"""Every input format and file type normalises into Example; CRLF, BOM and blank lines are read correctly."""

from __future__ import annotations

import json
import pytest

from tests.data_fixtures import write_jsonl

from tunewise.errors import DataError, RowError
from tunewise.data.formats import detect_format, normalize
from tunewise.data.io import iter_rows, resolve_paths

U, A = "user", "assistant"


def roles(ex):
    return [m["role"] for m in ex.messages]


def test_alpaca_with_input_system_and_history():
    rec = {"instruction": "Translate", "input": "good morning", "output": "Bonjour", "system": "Be brief.",
           "history": [["hi", "hello"]], "label": "fr"}  # fmt: skip
    assert detect_format(rec) == "alpaca"
    ex = normalize(rec, "alpaca")
    assert roles(ex) == ["system", U, A, U, A]
    assert ex.messages[3]["content"] == "Translate\n\ngood morning"
    assert ex.messages[-1]["content"] == "Bonjour"
    assert ex.meta == {"label": "fr"}


def test_alpaca_empty_or_null_input_is_fine():
    for extra in ({"input": ""}, {"input": None}, {}):
        ex = normalize({"instruction": "Say hi", "output": "hi", **extra}, "alpaca")
        assert ex.messages[0] == {"role": U, "content": "Say hi"}


def test_chat_with_tool_calls_and_weights_passes_through():
    call = [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1}"}}]
    rec = {"messages": [
        {"role": "system", "content": "tools"}, {"role": U, "content": "add 1"},
        {"role": A, "content": None, "tool_calls": call}, {"role": "tool", "content": "1", "tool_call_id": "c1"},
        {"role": A, "content": "It is 1.", "weight": 0}, {"role": U, "content": "thanks"}, {"role": A, "content": "ok", "weight": 1},
    ], "meta": {"label": "math"}}  # fmt: skip
    assert detect_format(rec) == "chat"
    ex = normalize(rec, "chat")
    assert ex.messages[2]["tool_calls"] == call and ex.messages[2]["content"] == ""
    assert ex.messages[3]["tool_call_id"] == "c1"
    assert ex.messages[4]["weight"] == 0 and ex.messages[6]["weight"] == 1
    assert ex.meta["label"] == "math"


def test_chat_messages_given_as_json_text_in_csv():
    rec = {"messages": json.dumps([{"role": U, "content": "q"}, {"role": A, "content": "a"}])}
    assert roles(normalize(rec, "chat")) == [U, A]


def test_sharegpt():
    rec = {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert detect_format(rec) == "sharegpt"
    ex = normalize(rec, "sharegpt")
    assert [(m["role"], m["content"]) for m in ex.messages] == [("system", "s"), (U, "q"), (A, "a")]


def test_completion_and_text():
    assert detect_format({"prompt": "p", "completion": "c"}) == "completion"
    assert roles(normalize({"prompt": "p", "completion": "c"}, "completion")) == [U, A]
    assert detect_format({"text": "t"}) == "text"
    assert normalize({"text": "plain"}, "text").messages == [{"role": "text", "content": "plain"}]


def test_column_mapping_and_system_prompt():
    cols = {"instruction": "question", "output": "answer", "label": "category"}
    rec = {"question": "q", "answer": "a", "category": "x"}
    assert detect_format(rec, cols) == "alpaca"
    ex = normalize(rec, "alpaca", cols, system_prompt="You classify.")
    assert roles(ex) == ["system", U, A] and ex.meta["label"] == "x"
    sg = normalize({"conv": [{"speaker": "human", "text": "q"}, {"speaker": "gpt", "text": "a"}]}, "sharegpt",
                   {"conversations": "conv", "from": "speaker", "value": "text"})  # fmt: skip
    assert roles(sg) == [U, A]


@pytest.mark.parametrize(
    "rec, fmt, code",
    [
        ({"instruction": "x"}, "alpaca", "missing_field"),
        ({"instruction": "x", "output": 3}, "alpaca", "wrong_type"),
        ({"instruction": "x", "output": None}, "alpaca", "wrong_type"),
        ({"instruction": "x", "output": ["a", "b"]}, "alpaca", "wrong_type"),
        ({"instruction": "  ", "output": "a"}, "alpaca", "empty_field"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "chat", "invalid_roles"),
        ({"messages": [{"role": U, "content": "q"}, {"role": A, "content": "a", "weight": 2}]}, "chat", "wrong_type"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "sharegpt", "invalid_roles"),
    ],
)
def test_normalize_rejections(rec, fmt, code):
    with pytest.raises(RowError) as err:
        normalize(rec, fmt)
    assert err.value.code == code and err.value.message


def test_jsonl_crlf_bom_blank_lines(tmp_path):
    rows = [{"text": "one"}, "", "   ", {"text": "two"}]
    path = write_jsonl(tmp_path / "a.jsonl", rows, newline="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    got = list(iter_rows(path))
    assert [(r.line, r.record) for r in got] == [(1, {"text": "one"}), (4, {"text": "two"})]


def test_json_array_object_of_arrays_and_wrapped(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    (tmp_path / "b.json").write_text(json.dumps({"instruction": ["i1", "i2"], "output": ["o1", "o2"]}))
    (tmp_path / "c.json").write_text(json.dumps({"data": [{"text": "c"}]}))
    assert [r.record for r in iter_rows(tmp_path / "a.json")] == [{"text": "a"}, {"text": "b"}]
    assert [r.record for r in iter_rows(tmp_path / "b.json")] == [{"instruction": "i1", "output": "o1"}, {"instruction": "i2", "output": "o2"}]
    assert [r.record for r in iter_rows(tmp_path / "c.json")] == [{"text": "c"}]


def test_csv_tsv_with_bom_crlf_and_bad_bytes(tmp_path):
    (tmp_path / "a.csv").write_bytes(b'\xef\xbb\xbfprompt,completion\r\nhello,"multi\r\nline"\r\n\r\nbad \xff,x\r\nq,a\r\n')
    rows = list(iter_rows(tmp_path / "a.csv"))
    assert rows[0].record == {"prompt": "hello", "completion": "multi\r\nline"} and rows[0].line == 2
    assert rows[1].error.code == "invalid_utf8" and rows[1].line == 5
    assert rows[2].record == {"prompt": "q", "completion": "a"} and rows[2].line == 6
    (tmp_path / "b.tsv").write_text("text\tlabel\nhello world\tx\n")
    assert [r.record for r in iter_rows(tmp_path / "b.tsv")] == [{"text": "hello world", "label": "x"}]


def test_parquet_hf_dataset_folder_and_glob(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["p1", "p2"], "completion": ["c1", "c2"]}), tmp_path / "a.parquet")
    assert [r.record["prompt"] for r in iter_rows(tmp_path / "a.parquet")] == ["p1", "p2"]
    datasets.Dataset.from_dict({"text": ["x", "y"]}).save_to_disk(str(tmp_path / "ds"))
    assert [r.record for r in iter_rows(tmp_path / "ds")] == [{"text": "x"}, {"text": "y"}]
    write_jsonl(tmp_path / "c.jsonl", [{"text": "z"}])
    assert len(resolve_paths(tmp_path)) == 3  # parquet + dataset folder + jsonl (not the dataset's own files)
    assert [p.name for p in resolve_paths(str(tmp_path / "*.parquet"))] == ["a.parquet"]


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        resolve_paths(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type"):
        resolve_paths(tmp_path / "x.txt")
