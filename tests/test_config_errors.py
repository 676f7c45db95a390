"""No traceback for a user's mistake (issue 14): every bad config, override or config file ends with a message that
names the field (or the file) and the value, and exit code 2.

The bulk is a seeded fuzz of generated mistakes validated in-process through what the commands call before any
work (``load_config`` + ``tunewise.train.preflight.check_config``); a representative handful goes through the command
line: real ``python -m tunewise`` processes for mistakes found before the libraries load (about 2 s each), forked
commands (tests/cli_processes.py) for the ones that need the model's sizes or the prepared data.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.cli_processes import REPO, Zygote
from tests.conftest import reversal_rows
from tunewise.config import ConfigError, load_config
from tunewise.errors import DataError
from tunewise.train.preflight import check_config
from tunewise.rundir import RunDir


@pytest.fixture(scope="module")
def base(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A valid config whose data is prepared (60 training examples): the mistakes are made on top of it."""
    from tunewise.pipeline import init_run, prepare_stage

    root = tmp_path_factory.mktemp("mistakes")
    (root / "reverse.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(75, seed=5)), encoding="utf-8")
    raw = {"name": "good", "output_dir": str(root / "runs"), "model": str(tiny_dir), "method": "lora",
           "data": {"path": str(root / "reverse.jsonl"), "split": {"train": 0.8, "val": 0.2, "test": 0.0}, "max_tokens": 64},
           "training": {"max_steps": 4, "per_device_train_batch_size": 4}, "monitor": {"live": "plain", "plots": False}}
    path = root / "good.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_config(path)
    prepare_stage(config, init_run(config))
    return {"root": root, "raw": raw, "path": path, "run": RunDir.of(config.run_dir)}


def validate(path: Path, overrides: list[str], run: RunDir) -> None:
    """What `tunewise run / train` check before doing anything slow."""
    config = load_config(path, overrides)
    check_config(config, run)


def shown(value: Any) -> str:
    """How a message shows a value a user typed."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("-inf" if value < 0 else "inf")
    return str(value)[:40]


def yaml_text(value: Any) -> str:
    """``value`` as typed on the command line (key=VALUE, read as YAML)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    if isinstance(value, str):
        return json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


INF, NAN = float("inf"), float("nan")
POSITIVE_INTS = ["data.max_tokens", "lora.r", "training.per_device_train_batch_size", "training.gradient_accumulation_steps",
                 "training.logging_steps", "training.save_steps", "training.eval_steps", "eval.max_new_tokens",
                 "eval.batch_size", "prompt.num_virtual_tokens", "training.per_device_eval_batch_size"]
BAD_INTS = [0, -1, 2.5, "abc", True, [1], {"a": 1}, INF, NAN]
FLOATS = {"training.learning_rate": [0, -1e-4, 1, 5, INF, -INF, NAN, "fast", True, [1e-4]],
          "lora.dropout": [1.0, -0.1, NAN, "half"], "lora.alpha": [0, -16, INF, False],
          "training.weight_decay": [-0.1, NAN], "training.warmup_ratio": [1.0, -0.5, INF],
          "training.epochs": [0, -1, INF, NAN, 1e9, "many"], "training.max_grad_norm": [0, -1, NAN],
          "monitor.spike_factor": [1, 0.5, INF], "data.near_dedup_threshold": [0, 1.5, NAN],
          "decide.target": [0, 2, NAN]}
SEEDS = {"training.seed": [-1, 2**32, 2**70, 1.5, "x", True], "data.seed": [-1, 2**40, NAN]}
CHOICES = {"method": ["magic", "prefix", 5], "training.lr_scheduler": ["exp", 1], "training.optimizer": ["adam"],
           "data.format": ["xml"], "training.loss_on": ["everything"], "monitor.live": ["loud"],
           "training.metric_for_best_model": ["bleu2"], "decide.task": ["poetry"], "quantization.bits": [3]}
MAX_STEPS = [0, -5, -2, 1.5, 1e30, "x", 10**12]


def generated() -> Iterator[tuple[str, list[str], list[str]]]:
    """(case, overrides, what the message must name) for one mistake each."""
    for field in POSITIVE_INTS:
        for value in BAD_INTS:
            expect = [field] if isinstance(value, dict) else [field, shown(value)]
            yield f"{field}={value!r}", [f"{field}={yaml_text(value)}"], expect
    for field, values in {**FLOATS, **SEEDS}.items():
        for value in values:
            yield f"{field}={value!r}", [f"{field}={yaml_text(value)}"], [field, shown(value)]
    for field, values in CHOICES.items():
        for value in values:
            overrides = [f"{field}={yaml_text(value)}"] + (["method=lora"] if field == "quantization.bits" else [])
            yield f"{field}={value!r}", overrides, [field.split(".")[0] if field.startswith("quantization") else field]
    for value in MAX_STEPS:
        yield f"training.max_steps={value!r}", [f"training.max_steps={yaml_text(value)}"], ["training.max_steps", shown(value)]
    for field, value in (("name", "a/b"), ("name", ".."), ("name", "x" * 300), ("name", "line\nbreak"), ("name", "a\x00b"),
                         ("output_dir", "a\x00b"), ("data.path", "a\x00b"), ("model", " "), ("training.deepspeed", "x\x01")):
        yield f"{field}={value!r}", [f"{field}={yaml_text(value)}"], [field]
    for key in ("training.epoch", "lora.rank", "foo", "data.pth", "training.learningrate", "eval.metric"):
        yield f"unknown {key}", [f"{key}=1"], [key, "unknown field"]
    for section, value in (("training", 5), ("lora", [1]), ("data", "x"), ("monitor", True)):
        yield f"{section}={value!r}", [f"{section}={yaml_text(value)}"], [section, shown(value)]
    yield "eval.metrics=[nope]", ["eval.metrics=[nope]"], ["eval.metrics", "nope"]
    yield "eval.metrics=[]", ["eval.metrics=[]"], ["eval.metrics"]
    yield "split sums to 1.2", ["data.split.train=0.9"], ["split ratios", "train=0.9"]
    yield "negative split", ["data.split.val=-0.1"], ["split sizes", "val=-0.1"]
    yield "no =", ["training.seed"], ["training.seed", "key=value"]
    yield "empty key", ["=5"], ["=5", "empty key"]
    yield "a section where a value goes", ["training.epochs.x=1"], ["training.epochs", "{'x': 1}"]
    yield "through a scalar", ["training.epochs=2", "training.epochs.x=1"], ["training.epochs.x=1", "not a section"]
    # values that can't work for this model or data (tunewise/train/preflight.py)
    yield "lora.r above the layer width", ["lora.r=100000"], ["lora.r=100000", "at most 48"]
    yield "lora.r above k_proj's width", ["lora.r=49"], ["lora.r=49", "k_proj", "at most 48"]
    yield "max_tokens above the context", ["data.max_tokens=100000"], ["data.max_tokens=100000", "512 tokens"]
    yield "max_new_tokens above the context", ["eval.max_new_tokens=4096"], ["eval.max_new_tokens=4096", "512"]
    yield "packed rows above the context", ["training.packing_row_tokens=1000"], ["training.packing_row_tokens=1000", "512"]
    yield "virtual tokens + max_tokens", ["method=prompt", "prompt.num_virtual_tokens=500"], ["prompt.num_virtual_tokens", "564"]
    yield "batch larger than the data", ["training.per_device_train_batch_size=1000"], ["per_device_train_batch_size=1000", "60 examples"]
    yield "accumulation beyond the data", ["training.gradient_accumulation_steps=100"], ["gradient_accumulation_steps=100", "400 examples"]
    yield "deepspeed file missing", ["training.deepspeed=/nonexistent/ds.json"], ["training.deepspeed", "/nonexistent/ds.json"]
    yield "data.path missing", ["data.path=/nonexistent/data.jsonl"], ["data.path", "/nonexistent/data.jsonl"]
    yield "data.test_path missing", ["data.test_path=/nonexistent/test.jsonl"], ["data.test_path", "/nonexistent/test.jsonl"]
    yield "data.path too long", ["data.path=" + "d" * 5000], ["data.path", "ddddd"]
    yield "data.path a glob matching nothing", ["data.path=/nonexistent/*.jsonl"], ["data.path", "/nonexistent/*.jsonl"]


FILES: list[tuple[str, bytes, list[str]]] = [  # ("FILE" stands for the file's path in the message)
    ("binary", bytes(range(256)) * 4, ["FILE", "is not a text YAML file", "not UTF-8"]),
    ("png", b"\x89PNG\r\n\x1a\n" + bytes(64), ["FILE", "is not a text YAML file"]),
    ("utf16", "model: tiny\n".encode("utf-16"), ["FILE", "is not a text YAML file"]),
    ("nul", b"model: tiny\x00\n", ["FILE", "NUL bytes"]),
    ("empty", b"", ["FILE", "is empty"]),
    ("blank", b"  \n\n", ["FILE", "is empty"]),
    ("comments", b"# nothing here\n", ["FILE", "is empty"]),
    ("list", b"- 1\n- 2\n", ["FILE", "top level must be a mapping", "list"]),
    ("scalar", b"tiny\n", ["FILE", "top level must be a mapping", "str"]),
    ("unclosed", b"model: [tiny\n", ["FILE", "not valid YAML", "line"]),
    ("tab", b"model: tiny\n\tmethod: lora\n", ["FILE", "not valid YAML", "line 2"]),
    ("duplicate", b"model: tiny\nmethod: lora\nmethod: full\n", ["FILE", "duplicate key 'method'", "line 2"]),
    ("nested duplicate", b"training:\n  seed: 1\n  seed: 2\n", ["FILE", "duplicate key 'seed'", "line 2"]),
    ("python tag", b"model: !!python/object/apply:os.system ['true']\n", ["FILE", "not valid YAML", "python/object"]),
    ("escaped NUL", b'name: "a\\0b"\nmodel: tiny\n', ["name", "control characters", "'a\\x00b'"]),
    ("number keys", b"1: 2\nmodel: tiny\n", ["1: a field name must be text"]),
    ("nested references", b"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", ["a: unknown field", "c: unknown field"]),
]


def test_at_least_a_hundred_generated_mistakes_each_name_the_field_and_value(base: dict[str, Any], tmp_path: Path) -> None:
    cases = list(generated())
    random.Random(14).shuffle(cases)
    assert len(cases) + len(FILES) >= 100
    problems = []
    for case, overrides, expect in cases:
        try:
            validate(base["path"], overrides, base["run"])
        except (ConfigError, DataError) as exc:  # both: one line with exit code 2 from the command line
            message = str(exc)
            missing = [e for e in expect if e not in message]
            if missing:
                problems.append(f"{case}: {missing} not in {message!r}")
        except Exception as exc:  # noqa: BLE001 - exactly what must not happen
            problems.append(f"{case}: {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{case}: accepted")
    for name, content, expect in FILES:
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content)
        try:
            load_config(path)
        except ConfigError as exc:
            missing = [e for e in expect if e.replace("FILE", str(path)) not in str(exc)]
            if missing:
                problems.append(f"file {name}: {missing} not in {str(exc)!r}")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"file {name}: {type(exc).__name__}: {exc}")
        else:
            problems.append(f"file {name}: accepted")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(folder)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------------------------
# the cases of the issue, as a user meets them on the command line


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunewise", *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


def _one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert stderr.count("error:") == 1, stderr
    return " ".join(stderr[stderr.index("error:"):].split())


def test_the_issues_cases_from_the_command_line(base: dict[str, Any], tmp_path: Path, tiny_dir: Path) -> None:
    good = base["path"]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    nul_name = tmp_path / "nul.yaml"
    nul_name.write_text(yaml.safe_dump({**base["raw"], "name": "a\x00b"}))
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(good.read_text() + "method: full\n")
    proc = tmp_path / "proc.yaml"
    proc.write_text(yaml.safe_dump({**base["raw"], "output_dir": "/proc"}))
    cases = [  # (command, what the one error line must say) -- found before the libraries load: real processes
        (("data", "prepare", str(binary)), [str(binary), "is not a text YAML file"]),
        (("run", str(binary)), [str(binary), "is not a text YAML file"]),
        (("train", str(binary)), [str(binary), "is not a text YAML file"]),
        (("run", str(proc)), ["output_dir '/proc'", "can't create or write the run folder /proc/good"]),
        (("data", "prepare", str(nul_name)), ["name", "control characters", "'a\\x00b'"]),
        (("run", str(good), "training.epochs=.inf"), ["training.epochs", "finite number", "inf"]),
        (("run", str(good), "training.deepspeed=/nonexistent"), ["training.deepspeed", "'/nonexistent'"]),
        (("train", str(good), "training.seed=-1"), ["training.seed", "greater than or equal to 0", "-1"]),
        (("run", str(duplicate)), [str(duplicate), "duplicate key 'method'"]),
        (("run", str(good), "training.max_steps=0"), ["training.max_steps", "positive number", "(got 0)"]),
        (("run", str(good), "training.max_steps=-5"), ["training.max_steps", "-5"]),
    ]
    for args, expect in cases:
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        message = _one_error(result.stderr)
        assert all(e in message for e in expect), (args, message)


def test_what_cannot_work_for_the_model_or_data_is_refused_before_training(base: dict[str, Any],
                                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    zygote = Zygote(tmp_path_factory.mktemp("zygote-errors"))
    try:
        run = base["run"].root
        for args, expect in (
            (("train", run, "lora.r=100000"), ["lora.r=100000", "k_proj (96 -> 48)", "at most 48"]),
            (("train", run, "data.max_tokens=100000"), ["data.max_tokens=100000", "512 tokens", "max_position_embeddings"]),
            (("train", run, "training.per_device_train_batch_size=64"), ["per_device_train_batch_size=64", "60 examples"]),
            (("data", "prepare", base["path"], "data.max_tokens=4096"), ["data.max_tokens=4096", "512 tokens"]),
        ):
            result = zygote.run(*args)
            assert result.code == 2, (args, result.stderr)
            assert all(e in _one_error(result.stderr) for e in expect), (args, result.stderr)
            assert not (run / "model").exists() and not (run / "checkpoints").exists()
    finally:
        zygote.close()
