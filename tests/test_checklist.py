"""The best-practice checklist: its table (24 items, the guide's order, every message in every language), what the
evidence in a run directory makes of each item, the flags, the CLI and the report section."""

from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path

import pytest

from tunewise.catalog import LANGUAGES, MESSAGES, resolve_language, text
from tunewise.checklist import DONE, ITEMS, NA, PHASES, TODO, checklist, evaluate
from tunewise.config import config_from_dict
from tunewise.rundir import RunDir, atomic_write_json, atomic_write_text


def test_items_are_the_guides_24_in_its_order() -> None:
    assert len(ITEMS) == 24 and len({i.id for i in ITEMS}) == 24
    assert [i.phase for i in ITEMS] == [p for p in PHASES for _ in range(4)]
    assert [i.id for i in ITEMS][:4] == ["task_goal", "need_finetuning", "enough_data", "right_method"]
    assert [i.id for i in ITEMS][-4:] == ["compression", "inference_perf", "ab_test", "live_monitoring"]


def test_every_message_has_every_language_with_the_same_fields() -> None:
    for item in ITEMS:
        assert f"item.{item.id}" in MESSAGES, f"item {item.id} has no title"
    for phase in PHASES:
        assert f"phase.{phase}" in MESSAGES
    for key in MESSAGES:  # every language has a text (tests/test_i18n.py checks the whole catalogue)
        texts = {lang: text(key, lang) for lang in LANGUAGES}
        missing = [lang for lang in LANGUAGES if not texts[lang] or (lang != "en" and texts[lang] == texts["en"])]
        assert not missing or key == "note.early_stopping", f"{key} lacks {missing}"
        fields = {lang: {f for _, f, _, _ in string.Formatter().parse(texts[lang]) if f} for lang in LANGUAGES}
        assert len({frozenset(f) for f in fields.values()}) == 1, f"{key}: the languages fill different fields {fields}"
    assert text("item.early_stopping", "zh") == "设置早停机制" and text("phase.deployment", "zh") == "部署阶段"


def test_language_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEWISE_LANG", raising=False)
    assert resolve_language(None) == "en"
    monkeypatch.setenv("TUNEWISE_LANG", "zh")
    assert resolve_language(None) == "zh" and resolve_language("en") == "en"
    with pytest.raises(ValueError, match="choose one of en, zh"):
        resolve_language("fr")


def _run(tmp_path: Path, **training: object) -> RunDir:
    """A run directory with the files a prepared, partly trained run has (written in the stages' formats)."""
    config = config_from_dict({"name": "r", "output_dir": str(tmp_path), "model": "tiny", "data": {"path": "x.jsonl"},
                               "training": {"learning_rate": 1e-3, **training}})
    run = RunDir.of(config.run_dir)
    atomic_write_text(run.config, config.to_yaml())
    return run


def _data_report(run: RunDir, *, train: int, overlap_left: int = 0, rejected: dict | None = None, dedup: bool = True) -> None:
    rejected = rejected or {}
    atomic_write_json(run.data_report, {
        "counts": {"read": train + 20 + sum(rejected.values()), "kept": train + 20, "train": train, "val": 10, "test": 10,
                   "rejected": rejected, "rejected_total": sum(rejected.values()), "augmented": {"total": 0}},
        "overlap": {"train_test": {"exact": overlap_left, "near": 0, "removed": 0}},
        "task": {"type": "classification"}, "config": {"dedup": dedup, "near_dedup_threshold": None},
    })
    for split in ("train", "val", "test"):
        atomic_write_text(run.split(split), '{"messages": []}\n')


def _metrics(run: RunDir, eval_losses: list[float]) -> None:
    lines = [{"kind": "start", "step": 0, "epoch": 0, "time": 0, "elapsed_s": 0, "max_steps": 10, "resumed": False}]
    for step, loss in enumerate([3.0, 2.5, 2.0, 1.5], 1):
        lines.append({"kind": "train", "step": step, "loss": loss, "learning_rate": 1e-3 * step / 4, "peak_rss_mb": 700.0})
    for step, loss in enumerate(eval_losses, 1):
        lines.append({"kind": "eval", "step": step * 2, "eval_loss": loss, "peak_rss_mb": 710.0})
    atomic_write_text(run.metrics, "".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "train", "st')  # half a line


def test_a_bare_run_is_all_to_do_each_with_the_command(tmp_path: Path) -> None:
    run = _run(tmp_path)
    result = checklist(run.root)
    assert result["done"] == 1 and result["total"] == 24
    for item in result["items"]:
        if item["id"] == "lr_schedule":  # configured (linear decay is the default): the config is its evidence
            assert item["status"] == DONE and item["evidence"] == "config.yaml" and item["command"] is None
            continue
        assert item["status"] == TODO and item["command"].startswith("tunewise "), item
    commands = {i["id"]: i["command"] for i in result["items"]}
    assert commands["need_finetuning"] == f"tunewise advise {run.config}"
    assert commands["test_eval"] == f"tunewise eval {run.root}"
    assert commands["inference_perf"] == f"tunewise bench {run.root}"


def test_evidence_marks_items_done_and_flags_contradictions(tmp_path: Path) -> None:
    run = _run(tmp_path)
    _data_report(run, train=150, overlap_left=3, rejected={"duplicate": 4, "too_long": 1})
    _metrics(run, [2.0, 1.8, 1.9, 2.0, 2.1])  # rising for the last 3 evaluations (monitor.overfit_patience)
    items = {i["id"]: i for i in checklist(run.root)["items"]}
    assert items["enough_data"]["status"] == DONE  # 150 >= 100 for classification
    assert items["augmentation"]["status"] == NA and items["augmentation"]["command"] is None
    assert items["cleaned"]["status"] == DONE and "exact dedup 4" in items["cleaned"]["note"]
    assert items["cleaned"]["evidence"] == "data/rejects.jsonl" or items["cleaned"]["evidence"] == "data/data_report.json"
    assert items["split"]["flag"] == "test split overlaps train: 3 examples"
    assert items["val_loss"]["status"] == DONE and items["val_loss"]["evidence"] == "metrics.jsonl"
    assert items["val_loss"]["flag"] == "validation loss rising for the last 3 evaluations"
    assert items["early_stopping"]["status"] == TODO
    assert items["early_stopping"]["command"] == f"tunewise run {run.config} training.early_stopping_patience=3"
    assert items["early_stopping"]["flag"] == items["val_loss"]["flag"]
    assert items["train_loss"]["status"] == DONE and "3.000 -> 1.500" in items["train_loss"]["note"]
    assert items["memory"]["note"] == "peak 710 MiB (peak_rss_mb)"
    assert items["test_eval"]["status"] == TODO


def test_too_little_data_needs_augmentation_and_early_stopping_clears(tmp_path: Path) -> None:
    run = _run(tmp_path, early_stopping_patience=2)
    _data_report(run, train=40, dedup=False)
    _metrics(run, [2.0, 1.9])
    items = {i["id"]: i for i in checklist(run.root, "zh")["items"]}
    assert items["enough_data"]["status"] == TODO and items["augmentation"]["status"] == TODO
    assert items["augmentation"]["command"].endswith("data.augment_paraphrase=1")
    assert items["cleaned"]["status"] == TODO and items["cleaned"]["command"].endswith("data.dedup=true")
    assert items["early_stopping"]["status"] == DONE and items["val_loss"]["flag"] is None
    assert items["early_stopping"]["title"] == "设置早停机制" and items["early_stopping"]["status_text"] == "已完成"


def test_comparison_without_a_significant_gain_is_flagged(tmp_path: Path) -> None:
    run = _run(tmp_path)
    for model in ("base", "tuned"):
        atomic_write_json(run.eval_file("metrics", model), {"n": 10, "metrics": {"accuracy": 0.5}})
    atomic_write_json(run.comparison, {"models": ["base", "tuned"], "baseline": "base", "main_metric": "accuracy", "n": 10,
                                       "metrics": {"accuracy": {"values": {"base": 0.5, "tuned": 0.3}, "higher_is_better": True,
                                                                "deltas": {"tuned": {"delta": -0.2, "ci": [-0.4, -0.05], "significant": True}}}}})
    items = {i["id"]: i for i in checklist(run.root)["items"]}
    assert items["baseline"]["status"] == DONE and items["baseline"]["evidence"] == "eval/comparison.json"
    assert items["baseline"]["flag"] == "the tuned model is significantly worse than the base on accuracy"
    assert "95% CI -0.400 .. -0.050" in items["baseline"]["note"]
    assert items["test_eval"]["status"] == DONE and items["test_eval"]["evidence"] == "eval/metrics_tuned.json"


def test_cli_and_report(tmp_path: Path) -> None:
    from tunewise.report.html import build_report

    run = _run(tmp_path)
    _data_report(run, train=150)
    done = subprocess.run([sys.executable, "-m", "tunewise", "checklist", str(run.root), "--json", "--lang", "zh"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["title"] == "最佳实践检查清单" and [i["id"] for i in result["items"]] == [i.id for i in ITEMS]
    shown = subprocess.run([sys.executable, "-m", "tunewise", "checklist", str(run.root)], capture_output=True, text=True,
                           timeout=120, env={**__import__("os").environ, "COLUMNS": "200"})
    assert shown.returncode == 0 and "Data cleaned and preprocessed" in shown.stdout
    assert f"tunewise advise {run.config}" in shown.stdout
    missing = subprocess.run([sys.executable, "-m", "tunewise", "checklist", str(tmp_path / "nope")], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "not a run directory" in missing.stdout + missing.stderr
    html = build_report(run.root, lang="zh").read_text(encoding="utf-8")
    assert html.index('id="checklist"') < html.index('class="cards"')
    assert html.count("data-item=") == 24 and '<a href="data/data_report.json">' in html
    assert evaluate(run.root)[0][0].id == "task_goal"


def test_same_checklist_with_and_without_libyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    run = _run(tmp_path)
    _data_report(run, train=150)
    fast = checklist(run.root)
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)  # PyYAML built without libyaml
    assert checklist(run.root) == fast
