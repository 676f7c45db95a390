"""The bundled preference example (examples/preference/): its build script reproduces the committed data, and its
configs load and ask for the data their objective trains on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tunewise.config import load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "preference"


def test_build_script_reproduces_the_committed_data(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "build.py"), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("sft.jsonl", "pairs.jsonl", "test_pairs.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name
    train = {json.loads(line)["prompt"] for line in (EXAMPLE / "pairs.jsonl").read_text().splitlines()}
    test = [json.loads(line) for line in (EXAMPLE / "test_pairs.jsonl").read_text().splitlines()]
    assert len(test) == 120 and not train & {p["prompt"] for p in test}, "held-out words are not trained on"
    assert all(p["chosen"] != p["rejected"] for p in test)


def test_the_configs_chain_sft_into_dpo() -> None:
    sft, dpo = load_config(EXAMPLE / "sft.yaml"), load_config(EXAMPLE / "dpo.yaml")
    assert (sft.objective, dpo.objective) == ("sft", "dpo")
    assert dpo.model == f"{sft.output_dir}/{sft.name}/export/merged"
    assert "tunewise export runs/pref-sft --merge" in (EXAMPLE / "run.sh").read_text()
