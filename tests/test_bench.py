"""The inference benchmark: latency percentiles, throughput per batch size, memory, bench.json and the plots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.test_export import train_tiny_run

def test_bench_measures_base_and_tuned(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from tunewise.export.bench import bench_run

    config, run_dir = train_tiny_run(tiny_dir, tmp_path_factory.getbasetemp() / "ship-run")
    report = bench_run(config, run_dir, variants=["base", "tuned"], batch_sizes=(1, 2), new_tokens=4, prompts=3,
                       rounds=1, threads=1)
    assert torch.get_num_threads() == 1
    saved = json.loads((run_dir / "bench" / "bench.json").read_text())
    assert saved["variants"].keys() == {"base", "tuned"} and saved["torch_threads"] == 1
    for name, v in report["variants"].items():
        for key in ("ttft_ms", "per_token_ms"):
            assert v[key]["n"] == 3 and 0 < v[key]["p50"] <= v[key]["p95"]
        assert [t["batch_size"] for t in v["throughput"]] == [1, 2]
        assert [t["tokens"] for t in v["throughput"]] == [4, 8]  # exactly new_tokens per request
        assert all(t["tokens_per_s"] > 0 for t in v["throughput"])
        assert v["peak_memory_mb"] > 0 and v["weights_mb"] > 0
    assert report["variants"]["tuned"]["weights_mb"] > report["variants"]["base"]["weights_mb"]  # + the adapter
    for name in ("bench_throughput.png", "bench_latency.png"):
        assert (run_dir / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_missing_variants_say_how_to_make_them(tiny_dir: Path, tmp_path: Path,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    from tunewise.export.bench import bench_run, variant_loaders
    from tunewise.rundir import RunDir

    config, run_dir = train_tiny_run(tiny_dir, tmp_path_factory.getbasetemp() / "ship-run")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("export", "checkpoints"))
    loaders, skipped = variant_loaders(config, RunDir.of(copy), "cpu")
    assert set(loaders) == {"base", "tuned"}
    assert "--merge" in skipped["merged"] and "--quantize bnb-4bit" in skipped["bnb-4bit"]
    with pytest.raises(ValueError, match="--merge"):
        bench_run(config, copy, variants=["merged"])
    with pytest.raises(ValueError, match="unknown variant"):
        bench_run(config, copy, variants=["fp8"])


def test_weights_bytes_sees_inside_quantized_tensors() -> None:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    from tunewise.export.bench import weights_bytes

    model = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False))
    assert weights_bytes(model) == 256 * 256 * 4
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    assert 256 * 256 <= weights_bytes(model) < 256 * 256 * 1.2  # int8 values + per-row scales
