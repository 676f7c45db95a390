"""examples/topics-zh: the committed data is what the build script makes from the installed chatterbot corpus, and
the config prepares it (17 labels in every split, its system prompt listing exactly those labels)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tunewise.config import load_config
from tunewise.data.prepare import prepare_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "topics-zh"


def test_build_script_reproduces_the_committed_data(tmp_path: Path) -> None:
    out = tmp_path / "topics-zh.jsonl"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_topics_zh_dataset.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == (EXAMPLE / "topics-zh.jsonl").read_bytes()


def test_config_prepares_the_chinese_data(tmp_path: Path, tiny_tokenizer) -> None:
    config = load_config(EXAMPLE / "config.yaml", ["model=tiny", "data.max_tokens=4096"])  # tiny: more tokens a character
    rows = [json.loads(line) for line in (EXAMPLE / "topics-zh.jsonl").open(encoding="utf-8")]
    labels = Counter(r["meta"]["label"] for r in rows)
    assert len(rows) == 365 and len(labels) == 17
    listed = re.split(r"[、。]", config.data.system_prompt.split("：", 1)[1])
    assert [x for x in listed if x] and set(filter(None, listed)) == set(labels)  # the prompt names every label once
    report = prepare_data(config.data, tiny_tokenizer, tmp_path / "data", progress=False, workers=1)
    stages = {s["stage"]: s["rows"] for s in report.stages}
    assert stages["near-unique"] == 364  # "嗨，很高兴见到你." is a near-duplicate of "很高兴见到你."
    assert set(report.labels["train"]) == set(labels) and set(report.labels["test"]) == set(labels)
    first = json.loads((tmp_path / "data" / "test.jsonl").open(encoding="utf-8").readline())
    assert first["messages"][0] == {"role": "system", "content": config.data.system_prompt}
