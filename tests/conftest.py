"""Shared fixtures: the committed tiny model, its tokenizer, and a toy task it can learn."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from tunewise.config import config_from_dict

# The test models are tiny: one thread is faster than two, and never oversubscribes a shared 2-core machine
# (measured here: a tiny forward pass took 8.5 ms on 1 thread, 255 ms on 2 threads while the other core was busy).
torch.set_num_threads(1)
# CPUs with avx512_bf16/AMX train in bf16 by default (tunewise/lm/device.py): the suite's exact comparisons are made in
# fp32 whatever the CPU, subprocesses included (TUNEWISE_CPU_BF16=1 runs it the other way; tests/test_memory_precision.py
# forces both)
os.environ.setdefault("TUNEWISE_CPU_BF16", "0")

# The suite checks English output: a machine whose locale is Chinese would otherwise get the Chinese catalogue
# (tests/test_i18n.py sets the language it checks, in its own environment)
os.environ["TUNEWISE_LANG"] = "en"

pytest_plugins = ["tests.data_fixtures"]


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from tunewise.models.tiny import ensure_tiny_model

    return Path(ensure_tiny_model())


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir: Path) -> Any:
    from tunewise.lm.loading import load_tokenizer

    return load_tokenizer(str(tiny_dir))


def reversal_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Chat rows of the toy task "reverse the letters of a word" (letters space-separated: one token each).

    The words are English words of 3-6 letters from the chatterbot corpus (what the tiny model's pretraining text
    spells out); the pretraining never shows a reversal, so the base model scores ~0 and LoRA has to learn it.
    """
    import re

    from tunewise.models.tiny import chatterbot_conversations

    words = sorted({w for c in chatterbot_conversations() for t in c for w in re.findall(r"[a-z]+", t.lower()) if 3 <= len(w) <= 6})
    random.Random(seed).shuffle(words)
    return [
        {
            "messages": [
                {"role": "user", "content": "reverse: " + " ".join(word)},
                {"role": "assistant", "content": " ".join(reversed(word))},
            ]
        }
        for word in words[:n]
    ]


@pytest.fixture(scope="session")
def reversal_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "reverse.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for row in reversal_rows(1700, seed=7):
            f.write(json.dumps(row) + "\n")
    return path


def toy_config(tiny_dir: Path, data: Path, out: Path, **training: Any) -> Any:
    return config_from_dict(
        {
            "name": "toy",
            "output_dir": str(out),
            "model": str(tiny_dir),
            "method": "lora",
            "data": {"path": str(data), "format": "chat", "split": {"train": 0.85, "val": 0.03, "test": 0.12}, "max_tokens": 64},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            "training": {
                "epochs": 8, "per_device_train_batch_size": 16, "learning_rate": 5e-3, "warmup_steps": 10,
                "logging_steps": 20, "save_steps": 200, "eval_steps": 200, **training,
            },
            "eval": {"max_new_tokens": 12, "batch_size": 64, "max_examples": 100, "metrics": ["exact_match", "accuracy", "token_f1", "chrf"]},
        }
    )


@pytest.fixture(scope="session")
def toy_run(tiny_dir: Path, reversal_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One complete `run_all` on the tiny model, shared by the tests that inspect its run directory."""
    from tunewise.pipeline import run_all

    config = toy_config(tiny_dir, reversal_file, tmp_path_factory.mktemp("runs"))
    return run_all(config)
