"""A failed export leaves nothing behind; bench skips and serve refuses an export folder that is not complete; a
4-bit export loads and answers the same with bitsandbytes' packed CPU kernel forced on and off."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import reversal_rows


@pytest.fixture(scope="module")
def full_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A run directory whose RUN/model is a full model (the tiny model itself) with a prepared test split."""
    from tunewise import pipeline
    from tunewise.config import config_from_dict

    root = tmp_path_factory.mktemp("export-complete")
    data = root / "reverse.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(60, seed=2)), encoding="utf-8")
    config = config_from_dict({"name": "full", "output_dir": str(root / "runs"), "model": str(tiny_dir), "method": "full",
                               "data": {"path": str(data)}, "eval": {"max_examples": 4, "max_new_tokens": 4,
                                                                       "metrics": ["exact_match"]}})
    run = pipeline.init_run(config)
    pipeline.prepare_stage(config, run)
    shutil.copytree(tiny_dir, run.model)
    return config, run.root


def test_a_failed_quantized_export_leaves_nothing(full_run: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from tunewise.export import quantize

    config, run_dir = full_run
    export = run_dir / "export"
    measure = quantize.measure_quality
    calls: list[int] = []

    def fails_on_the_export(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:  # the source measures fine; the quantized export crashes (as the packed kernel did)
            raise RuntimeError("shape '[96, 1]' is invalid for input of size 144")
        return measure(*args, **kwargs)

    monkeypatch.setattr(quantize, "measure_quality", fails_on_the_export)
    with pytest.raises(RuntimeError, match="invalid for input"):
        quantize.quantize_run(config, run_dir, ["bnb-4bit"], max_examples=2)
    assert len(calls) == 2, "the export was saved and reloaded before it failed"
    assert not (export / "bnb-4bit").exists()
    assert not [p.name for p in export.iterdir() if p.name.startswith(".")], "no temporary folder is left"


def test_bench_skips_and_serve_refuses_an_incomplete_export(full_run: tuple[Any, Path], tmp_path: Path) -> None:
    from tunewise.export.bench import bench_run, variant_loaders
    from tunewise.rundir import RunDir
    from tunewise.serve.variants import load_variants

    config, run_dir = full_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    broken = copy / "export" / "bnb-4bit"
    shutil.copytree(copy / "model", broken)
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:1000])  # cut short
    loaders, skipped = variant_loaders(config, RunDir.of(copy), "cpu")
    assert "bnb-4bit" not in loaders
    assert "incomplete export" in skipped["bnb-4bit"] and "--quantize bnb-4bit" in skipped["bnb-4bit"]
    with pytest.raises(ValueError, match="bnb-4bit: incomplete export"):
        bench_run(config, copy, variants=["bnb-4bit"], plot=False)
    with pytest.raises(FileNotFoundError, match=r"not a complete export .*model.safetensors is missing or truncated"):
        load_variants([broken])
    (broken / "model.safetensors").unlink()
    (broken / "config.json").unlink()
    assert "config.json is missing" in variant_loaders(config, RunDir.of(copy), "cpu")[1]["bnb-4bit"]


@pytest.mark.parametrize("avx512_bf16", [False, True], ids=["packed-kernel-off", "packed-kernel-on"])
def test_a_4bit_export_answers_the_same_on_every_cpu_path(avx512_bf16: bool, full_run: tuple[Any, Path],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bitsandbytes.nn.modules
    import torch

    from tunewise.export.common import load_exported
    from tunewise.export.quantize import quantize_model
    from tunewise.lm.bnb_cpu import linear4bit_modules

    _, run_dir = full_run
    target = tmp_path / "bnb-4bit"
    quantize_model(run_dir / "model", "bnb-4bit", target)
    ids = torch.tensor([[1, 40, 50, 60, 70]])
    with torch.no_grad():
        expected = load_exported(target)(input_ids=ids).logits
    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: avx512_bf16)
    model = load_exported(target)  # what bench and serve load
    assert list(linear4bit_modules(model)) and not any(m.support_avx512bf16_for_cpu for _, m in linear4bit_modules(model))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=0, atol=0)
