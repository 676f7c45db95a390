"""Crash-safe runs, driven through the command line (issue 14): a run killed with SIGKILL at any step (later epochs,
inside a checkpoint's write) or cancelled with Ctrl-C, and resumed with ``tunewise train RUN --resume`` in a new
process each time, ends exactly as the uninterrupted run (every loss, evaluation, token count, the best step and the
final weights, bitwise); one writer per run; a full disk leaves consistent state.

Commands run as processes forked from one pre-imported Python (tests/cli_processes.py), so each costs its work, not
a 10-30 s import; a kill lands at an exact point because the command stops itself there (an audit hook set up by the
test) and the test then sends SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.cli_processes import Command, Zygote, stop_at_open
from tests.conftest import reversal_rows
from tunewise.monitor.metrics import read_metrics

STEPS_PER_EPOCH = 8  # 60 training examples, batch 4, 2 accumulation steps: 15 batches, 8 optimizer steps
VOLATILE = {"time", "elapsed_s", "tokens_per_s", "input_tokens_per_s", "eta_s", "peak_rss_mb", "eval_runtime",
            "eval_samples_per_second", "eval_steps_per_second"}


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


@pytest.fixture(scope="module")
def project(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    (root / "reverse.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(75, seed=5)), encoding="utf-8")
    base = {
        "output_dir": str(root / "runs"), "model": str(tiny_dir), "method": "lora",
        "data": {"path": str(root / "reverse.jsonl"), "split": {"train": 0.8, "val": 0.2, "test": 0.0}, "max_tokens": 64},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1},  # dropout: the RNG must be restored too
        "monitor": {"live": "plain", "plots": False},
        # packing and length grouping are on by default; early stopping ends the run at step 36 (best: step 28)
        "training": {"epochs": 6, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
                     "learning_rate": 5e-3, "logging_steps": 1, "save_steps": 5, "eval_steps": 4, "save_total_limit": 2,
                     "early_stopping_patience": 2, "eval_budget": 1},  # every validation row: the best step below
    }
    (root / "base.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    return root


def config_file(project: Path, name: str) -> Path:
    config = yaml.safe_load((project / "base.yaml").read_text()) | {"name": name}
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def ok(command: Command) -> Command:
    assert command.code == 0, command.stderr[-4000:]
    return command


def effective(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a reader sees it, without session starts and timing fields."""
    records = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] != "start"]
    out = []
    for r in records:
        kept = {k: v for k, v in r.items() if k not in VOLATILE}
        if r["kind"] == "summary":  # the Trainer's end-of-call numbers cover one session: only where it ended
            kept = {"kind": "summary", "step": r["step"], "epoch": r["epoch"]}
        out.append(kept)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def last_train_step(run: Path) -> int:
    return max([r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"] or [0])


def test_kills_at_any_step_resume_exactly_like_the_uninterrupted_run(zygote: Zygote, project: Path) -> None:
    reference_config = config_file(project, "reference")
    ok(zygote.run("data", "prepare", reference_config, "--no-progress"))
    reference = project / "runs" / "reference"
    ok(zygote.run("train", reference))

    config = config_file(project, "killed")
    ok(zygote.run("data", "prepare", config, "--no-progress"))
    run = project / "runs" / "killed"
    # where each session is interrupted, and the checkpoint the next one must resume from
    plan = [  # (where, how the command stops itself, then: kill / Ctrl-C, the checkpoint cut off, resume from)
        ("SIGKILL after step 11 (epoch 2)", stop_at_open("metrics.jsonl", after_step=11), "kill", None, "checkpoint-10"),
        ("SIGKILL while checkpoint-20 is written (its weights are, its config not)", stop_at_open("checkpoint-20/adapter_config.json"), "kill", "checkpoint-20",
         "checkpoint-15"),
        ("Ctrl-C after step 21 (epoch 3)", stop_at_open("metrics.jsonl", after_step=21), "interrupt", None, "checkpoint-23"),
        ("SIGKILL while checkpoint-25's state is written", stop_at_open("checkpoint-25/trainer_state.json"), "kill",
         "checkpoint-25", "checkpoint-23"),
        ("SIGKILL after step 29 (epoch 4)", stop_at_open("metrics.jsonl", after_step=29), "kill", None, "checkpoint-25"),
        ("SIGKILL after step 34 (epoch 5, one evaluation without improvement)", stop_at_open("metrics.jsonl", after_step=34),
         "kill", None, "checkpoint-30"),
    ]
    landed = []
    for i, (where, setup, how, cut_off, resume_from) in enumerate(plan):
        session = zygote.start("train", run, *(["--resume"] if i else []), setup=setup)
        session.wait_stopped()
        if i == 0:
            check_a_second_writer_is_refused(zygote, config, run, session.pid)
        step = last_train_step(run)
        if how == "kill":
            session.kill()
            assert session.wait() == -signal.SIGKILL
            if i < 2:  # the next command that looks finds the writer dead: run.json says "interrupted"
                listed = json.loads(ok(zygote.run("runs", project / "runs", "--json")).stdout)
                row = next(r for r in listed if r["name"] == "killed")
                assert row["status"] == "interrupted" and row["checkpoint"] == resume_from, row
                assert f"tunewise train {run} --resume" in row["error"]
                assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
        else:
            session.signal(signal.SIGINT)  # Ctrl-C, delivered when it runs on
            session.signal(signal.SIGCONT)
            assert session.wait() == 130, session.stderr[-3000:]
            assert f"{resume_from} is saved: continue with `tunewise train {run} --resume`" in " ".join(session.stderr.split())
            record = json.loads((run / "run.json").read_text())
            assert record["status"] == "cancelled" and record["checkpoint"] == resume_from, record
        if cut_off:
            folder = run / "checkpoints" / cut_off
            assert folder.is_dir() and not (folder / "trainer_state.json").is_file(), "the kill missed the write"
        landed.append((where, how, step, resume_from))
        if i:  # this session resumed where the previous interruption left it (and took over a dead writer's lock)
            previous = plan[i - 1]
            assert f"resuming from {previous[4]}" in session.stderr, session.stderr[-3000:]
            # a dead writer's lock is taken over with a warning (unless `tunewise runs` found it dead first)
            assert ("taking over the lock of pid" in session.stderr) == (previous[2] == "kill" and i - 1 >= 2)

    final = ok(zygote.run("train", run, "--resume"))
    assert "resuming from checkpoint-30" in final.stderr and "taking over the lock" in final.stderr
    assert not list((run / "checkpoints").glob("checkpoint-25")), "the cut-off checkpoint was removed"

    # every logged step, evaluation and warning, bitwise; the best step, the early stop and the final weights
    assert effective(run) == effective(reference)
    got, want = (json.loads((r / "train_summary.json").read_text()) for r in (run, reference))
    for key in ("steps", "best", "trained_tokens", "input_tokens", "weights_sha256", "final_train_loss", "min_eval_loss"):
        assert got[key] == want[key], key
    assert want["best"]["step"] == 28 and want["best"]["early_stopped_at"] == 36 and want["steps"] == 36
    assert sha256(run / "model" / "adapter_model.safetensors") == sha256(reference / "model" / "adapter_model.safetensors")
    summary, reference_summary = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    for key in ("steps", "evaluations", "best_step", "trained_tokens", "min_eval_loss", "final_train_loss", "stopped"):
        assert summary[key] == reference_summary[key], key  # tokens of redone steps are not counted twice
    # 7 sessions ran; the one killed while writing checkpoint-25 left nothing after checkpoint-23, where the next resumed
    assert summary["sessions"] == len(plan)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded" and record["checkpoint"] is None and record["error"] is None
    # each SIGKILL threw work away, and every interruption was after the first epoch
    assert all(step > int(resume.split("-")[1]) for _, how, step, resume in landed if how == "kill")
    assert all(int(resume.split("-")[1]) >= STEPS_PER_EPOCH for *_, resume in landed)
    print("\n".join(f"{where}: stopped after step {step}, resumed from {resume}" for where, _, step, resume in landed))


def check_a_second_writer_is_refused(zygote: Zygote, config: Path, run: Path, holder: int) -> None:
    """While ``holder`` writes ``run`` (stopped mid-training), train / run / data prepare / eval on it refuse at once."""
    before = {name: (run / name).read_bytes() for name in ("run.json", "metrics.jsonl", "config.yaml")}
    for args in (("train", run), ("train", run, "--resume"), ("run", config), ("data", "prepare", config),
                 ("eval", run, "--model", "base")):
        second = zygote.run(*args, timeout=120)
        assert second.code == 2, (args, second.stderr)
        message = " ".join(second.stderr.split())
        assert f"is being written by another tunewise process (pid {holder}, `tunewise train`, started 20" in message, message
        assert "Traceback" not in second.stderr
    assert {name: (run / name).read_bytes() for name in before} == before


# --------------------------------------------------------------------------------------------------------------------
# failures leave consistent state


def _can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True)
    return mounted.returncode == 0


def test_a_resume_on_another_cpu_keeps_the_precision_the_run_started_with(zygote: Zygote, project: Path) -> None:
    """Automatic precision is bf16 autocast on a CPU with bf16 units and fp32 elsewhere; a run killed on the first
    kind and resumed on the second must not change its arithmetic halfway. The two CPUs are stood for by
    TUNEWISE_CPU_BF16 (what the automatic rule reads first), so both paths run on any machine."""
    config = config_file(project, "precision")
    ok(zygote.run("data", "prepare", config, "--no-progress"))
    run = project / "runs" / "precision"
    session = zygote.start("train", run, env={"TUNEWISE_CPU_BF16": "1"},
                           setup=stop_at_open("metrics.jsonl", after_step=11))
    session.wait_stopped()
    session.kill()
    assert session.wait() == -signal.SIGKILL
    assert json.loads((run / "checkpoints" / "fingerprint.json").read_text())["precision"] == {
        "device": "cpu", "bf16": True, "fp16": False}
    resumed = ok(zygote.run("train", run, "--resume", env={"TUNEWISE_CPU_BF16": "0"}))
    said = " ".join(resumed.stderr.split())
    assert "resuming from checkpoint-10" in said and "precision: bf16 autocast, as this run started" in said, said
    assert json.loads((run / "train_summary.json").read_text())["precision"] == "bf16"


def test_a_full_disk_during_training_fails_cleanly_and_resumes(zygote: Zygote, project: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("needs root to mount a small tmpfs (the ENOSPC write path is tested by the data prepare test)")
    try:
        config = yaml.safe_load((project / "base.yaml").read_text()) | {"name": "full", "output_dir": str(disk)}
        path = tmp_path / "full.yaml"
        path.write_text(yaml.safe_dump(config))
        ok(zygote.run("data", "prepare", path, "--no-progress"))
        run = disk / "full"
        # leave room for about one checkpoint (~0.9 MB with its best-model copy): the second one hits the limit
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * max(free - 1_250_000, 0))
        failed = zygote.run("train", run)
        assert failed.code == 1, failed.stderr
        message = " ".join(failed.stderr.split())
        assert "error: out of disk space during train writing" in message and "free some space" in message
        assert "Traceback" not in failed.stderr
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "failed" and record["error"].startswith("out of disk space during train")
        checkpoints = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))
        assert checkpoints and all((run / "checkpoints" / c / "trainer_state.json").is_file() for c in checkpoints)
        assert f"{checkpoints[-1]} is complete: continue with `tunewise train {run} --resume`" in message
        assert not (run / "model").exists() and not list(run.rglob(".*"))  # no temporary file left

        (disk / "filler").unlink()
        resumed = ok(zygote.run("train", run, "--resume"))
        assert f"resuming from {checkpoints[-1]}" in resumed.stderr
        reference = project / "runs" / "reference"
        if (reference / "train_summary.json").is_file():  # the same run as the uninterrupted one
            want = json.loads((reference / "train_summary.json").read_text())
            assert json.loads((run / "train_summary.json").read_text())["weights_sha256"] == want["weights_sha256"]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


ENOSPC_AT = """
import errno, os, sys
def _hook(event, args):
    # a file named like {suffix!r} (or an atomic write's temporary file for it) opened for writing: the disk is full
    if event == "open" and {suffix!r} in os.path.basename(str(args[0])):
        writing = any(c in str(args[1] or "") for c in "wax") or (args[2] or 0) & (os.O_WRONLY | os.O_RDWR)
        if writing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]))
sys.addaudithook(_hook)
"""


def test_data_prepare_writes_its_splits_as_one_unit(zygote: Zygote, project: Path) -> None:
    config = config_file(project, "prepare-full")
    run = project / "runs" / "prepare-full"
    # the disk fills up after train.jsonl is written: no split appears (it used to leave train.jsonl alone)
    failed = zygote.run("data", "prepare", config, "--no-progress", setup=ENOSPC_AT.format(suffix="val.jsonl"))
    assert failed.code == 1, failed.stderr
    assert "out of disk space during data prepare writing" in " ".join(failed.stderr.split())
    assert not (run / "data" / "train.jsonl").exists() and not list(run.glob(".data.*"))
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "out of disk space" in record["error"]

    ok(zygote.run("data", "prepare", config, "--no-progress"))
    first = {p.name: p.read_bytes() for p in (run / "data").iterdir()}
    assert {"train.jsonl", "val.jsonl", "test.jsonl", "data_report.json", "rejects.jsonl"} <= set(first)
    assert json.loads((run / "run.json").read_text())["status"] == "queued"
    # a failed second preparation leaves the first one whole
    failed = zygote.run("data", "prepare", config, "--no-progress", setup=ENOSPC_AT.format(suffix="data_report.json"))
    assert failed.code == 1
    assert {p.name: p.read_bytes() for p in (run / "data").iterdir() if p.name != "rejects.jsonl"} == \
        {k: v for k, v in first.items() if k != "rejects.jsonl"}


def test_an_unexpected_error_is_one_line_with_the_traceback_kept(zygote: Zygote, project: Path) -> None:
    config = config_file(project, "bug")
    ok(zygote.run("data", "prepare", config, "--no-progress"))
    run = project / "runs" / "bug"
    crash = """
import sys
def _hook(event, args):
    if event == "open" and str(args[0]).endswith("trainer_state.json") and "w" in str(args[1]):
        raise RuntimeError("simulated failure inside the Trainer")
sys.addaudithook(_hook)
"""
    failed = zygote.run("train", run, setup=crash)
    assert failed.code == 1
    message = _one_line(failed.stderr)
    assert "train: RuntimeError: simulated failure inside the Trainer" in message
    assert f"the traceback is in {run / 'error.log'}" in message
    assert "simulated failure" in (run / "error.log").read_text() and "Traceback" in (run / "error.log").read_text()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == "train: RuntimeError: simulated failure inside the Trainer"
    assert not [p for p in (run / "checkpoints").glob("checkpoint-*") if not (p / "trainer_state.json").is_file()]


def test_out_of_memory_names_the_settings_to_lower(zygote: Zygote, project: Path) -> None:
    config = config_file(project, "oom")
    ok(zygote.run("data", "prepare", config, "--no-progress"))
    run = project / "runs" / "oom"
    oom = """
import sys
def _hook(event, args):
    if event == "open" and str(args[0]).endswith("trainer_state.json") and "w" in str(args[1]):
        raise MemoryError("simulated: the allocator gave up")
sys.addaudithook(_hook)
"""
    failed = zygote.run("train", run, setup=oom)
    assert failed.code == 1
    message = _one_line(failed.stderr)
    assert message.startswith("error: out of memory during train (simulated: the allocator gave up): lower "
                              "training.per_device_train_batch_size (now 4;"), message
    assert "data.max_tokens (now 64)" in message and "error.log" not in message  # not a bug: no traceback file
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("out of memory during train")


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return " ".join(stderr[stderr.index("error:"):].split())


def test_an_end_of_epoch_evaluation_is_in_that_steps_checkpoint(tiny_dir: Path, tmp_path: Path) -> None:
    """Evaluating per epoch, the Trainer evaluates only after the last step's checkpoint is written: a resume from
    that checkpoint would never make that evaluation. tunewise evaluates first (tunewise/train/resume.py)."""
    from tunewise.config import config_from_dict
    from tunewise.pipeline import init_run, prepare_stage
    from tunewise.train.run import train_run

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(75, seed=5)), encoding="utf-8")
    config = config_from_dict({
        "name": "epochs", "output_dir": str(tmp_path / "runs"), "model": str(tiny_dir), "method": "lora",
        "data": {"path": str(tmp_path / "d.jsonl"), "split": {"train": 0.8, "val": 0.2, "test": 0.0}, "max_tokens": 64},
        "monitor": {"live": "off", "plots": False},
        # every validation row once per epoch (the budget would space evaluations by steps on rows this short)
        "training": {"epochs": 2, "per_device_train_batch_size": 8, "logging_steps": 1, "save_steps": 8,
                     "save_total_limit": 3, "learning_rate": 3e-3, "eval_budget": 1},
    })
    prepare_stage(config, init_run(config))
    train_run(config, config.run_dir)
    run = Path(config.run_dir)
    evals = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals == [8, 16]  # once per epoch, never twice
    for step in (8, 16):
        history = json.loads((run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())["log_history"]
        assert [h["step"] for h in history if "eval_loss" in h][-1] == step
