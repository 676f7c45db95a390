"""A/B statistics and the traffic split, on synthetic logs (no model)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tunewise.serve.abtest import difference, mean_ci, summarize
from tunewise.serve.split import TrafficSplit, parse_split


def write_logs(folder: Path, n: int = 60, seed: int = 0) -> None:
    rng = random.Random(seed)
    for variant, latency, accuracy in (("base", 0.20, 0.3), ("tuned", 0.10, 0.9)):
        with (folder / f"{variant}.jsonl").open("w") as f:
            for i in range(n):
                correct = rng.random() < accuracy
                f.write(json.dumps({
                    "id": f"{variant}-{i}", "variant": variant, "assignment": "user-hash", "status": 200,
                    "latency_s": latency + rng.uniform(-0.02, 0.02), "ttft_s": 0.01, "completion_tokens": 5,
                    "response": "c b a" if correct else "a b c", "metadata": {"reference": "c b a"},
                }) + "\n")
    (folder / "feedback.jsonl").write_text(
        "".join(json.dumps({"id": f"tuned-{i}", "variant": "tuned", "score": 1.0}) + "\n" for i in range(5))
        + json.dumps({"id": "base-0", "variant": "base", "reference": "a b c"}) + "\n"
    )
    (folder / "errors.jsonl").write_text(json.dumps({"status": 400}) + "\n")


def test_summary_finds_the_better_variant(tmp_path: Path) -> None:
    write_logs(tmp_path)
    s = summarize(tmp_path, n_resamples=2000)
    assert s["control"] == "base" and s["errors"] == 1
    base, tuned = s["variants"]["base"], s["variants"]["tuned"]
    assert base["requests"] == tuned["requests"] == 60
    assert base["latency_s"]["ci"][0] < 0.2 < base["latency_s"]["ci"][1]
    assert tuned["exact_match"]["mean"] > base["exact_match"]["mean"]
    assert tuned["feedback"]["n"] == 5
    versus = s["versus_control"]["tuned"]
    assert versus["exact_match"]["significant"] and versus["exact_match"]["p_value"] < 0.01
    assert versus["latency_s"]["delta"] == pytest.approx(-0.1, abs=0.01) and versus["latency_s"]["ci"][1] < 0
    assert versus["feedback"] is None  # no feedback score on the control


def test_feedback_reference_overrides_the_request_one(tmp_path: Path) -> None:
    write_logs(tmp_path, n=3, seed=1)
    lines = [json.loads(x) for x in (tmp_path / "base.jsonl").read_text().splitlines()]
    s = summarize(tmp_path, n_resamples=200)
    expected = [1.0 if (r["response"] == ("a b c" if r["id"] == "base-0" else "c b a")) else 0.0 for r in lines]
    assert s["variants"]["base"]["exact_match"]["mean"] == pytest.approx(sum(expected) / 3)


def test_intervals_and_no_difference() -> None:
    assert mean_ci([]) == {"n": 0, "mean": None, "ci": None}
    ci = mean_ci([1.0, 2.0, 3.0, 4.0], n_resamples=2000)
    assert ci["mean"] == 2.5 and ci["ci"][0] < 2.5 < ci["ci"][1]
    rng = random.Random(3)
    same = difference([rng.random() for _ in range(50)], [rng.random() for _ in range(50)], n_resamples=2000)
    assert same is not None and same["p_value"] > 0.05 and not same["significant"]
    assert difference([1.0], [2.0, 3.0]) is None


def test_split_by_user_is_stable_and_follows_the_weights() -> None:
    split = TrafficSplit({"a": 1, "b": 3}, seed=0)
    assert split.weights == {"a": 0.25, "b": 0.75}
    assert all(split.choose("alice") == split.choose("alice") for _ in range(5))
    picks = [split.choose(f"user{i}")[0] for i in range(4000)]
    assert 0.22 < picks.count("a") / 4000 < 0.28
    assert split.choose(None)[1] == "random"
    assert parse_split("base=1, tuned=2") == {"base": 1.0, "tuned": 2.0}
    with pytest.raises(ValueError, match="not a number"):
        parse_split("base=x")
    with pytest.raises(ValueError, match="non-negative"):
        TrafficSplit({"a": 0})


def test_abtest_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tunewise.cli import app

    write_logs(tmp_path)
    result = CliRunner().invoke(app, ["abtest", str(tmp_path), "--control", "base"])
    assert result.exit_code == 0, result.output
    assert "tuned" in result.output and (tmp_path / "abtest.json").is_file()
    missing = CliRunner().invoke(app, ["abtest", str(tmp_path / "nothing")])
    assert missing.exit_code == 2


def test_cli_refuses_non_loopback_and_empty_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tunewise.cli import app

    served = CliRunner().invoke(app, ["serve", str(tmp_path), "--host", "0.0.0.0"])
    assert served.exit_code == 2 and "loopback" in served.output
    exported = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert exported.exit_code == 2 and "--merge" in exported.output
