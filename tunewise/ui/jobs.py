"""New runs from the dashboard: a config's fields as a form, checked by the config's own validation
(tunewise/config.py: the same one-line errors as the command line, keyed by field), the estimate, and the run started,
cancelled (SIGINT, as Ctrl-C: run.json says "cancelled" and a checkpoint is kept to resume from) or resumed, each as a
`tunewise` command in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from tunewise.config import Config, ConfigError, load_config

UI_FOLDER = ".tunewise-ui"  # under the runs folder: the configs the dashboard wrote and its jobs' logs


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in ("columns", "fsdp_config"):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def as_text(value: Any) -> str:
    """A value as the user would type it on the command line (key=value) or in YAML."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def config_fields(path: str | Path) -> list[dict[str, Any]]:
    """Every field of the config at ``path`` (validated, defaults filled in): key (dotted), section and value as text,
    with the schema's description."""
    config = load_config(path)
    described = _descriptions(Config)
    return [{"key": key, "section": key.split(".")[0] if "." in key else "", "value": as_text(value),
             "help": described.get(key, "")} for key, value in _flatten(config.model_dump(mode="json"))]


def _descriptions(model: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if hasattr(a, "model_fields")]
        if inner:
            out.update(_descriptions(inner[0], f"{prefix}{name}."))
        elif info.description:
            out[f"{prefix}{name}"] = info.description
    return out


def overrides_of(path: str | Path, values: dict[str, str]) -> list[str]:
    """key=value overrides for the fields whose text differs from the config's."""
    current = {f["key"]: f["value"] for f in config_fields(path)}
    return [f"{key}={text}" for key, text in values.items() if current.get(key) != text]


def check(path: str | Path, values: dict[str, str], runs_folder: Path) -> dict[str, Any]:
    """The config's own validation of the edited fields: ``{"ok", "errors": {field: message}, "general": [...]}``;
    a run name already used in ``runs_folder`` is an error on ``name``."""
    name = values.get("name")
    taken = {"name": f"a run named {name!r} exists in {runs_folder}: pick another name"} \
        if name and "/" not in name and name not in (".", "..") and (runs_folder / name).exists() else {}
    try:
        overrides = overrides_of(path, values)
        load_config(path, [*overrides, f"output_dir={runs_folder}"])
    except ConfigError as exc:
        found = _errors_by_field(str(exc))
        return {"ok": False, "errors": {**taken, **found["errors"]}, "general": found["general"]}
    return {"ok": not taken, "errors": taken, "general": [], "overrides": overrides}


def _errors_by_field(message: str) -> dict[str, Any]:
    """format_errors' lines ("  field: message (got value)") keyed by field; lines without a field go to general."""
    errors: dict[str, str] = {}
    general: list[str] = []
    lines = message.splitlines()
    body = lines[1:] if lines and lines[0].strip() == "invalid config:" else lines
    for line in body:
        field, sep, text = line.strip().partition(": ")
        if sep and field and " " not in field and field != "(config)":
            errors[field] = f"{field}: {text}"
        else:
            general.append(line.strip())
    return {"errors": errors, "general": general}


class Jobs:
    """The `tunewise` processes this dashboard started (reaped as they end), and cancelling any local run."""

    def __init__(self, runs_folder: str | Path) -> None:
        self.runs_folder = Path(runs_folder)
        self.folder = self.runs_folder / UI_FOLDER
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / f"{name}.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "120"}
        proc = subprocess.Popen([sys.executable, "-m", "tunewise", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        with self._lock:
            self._procs = {k: p for k, p in self._procs.items() if p.poll() is None}
            self._procs[name] = proc
        return proc

    def write_config(self, path: str | Path, values: dict[str, str]) -> tuple[Config, Path]:
        """The edited config, validated, written to RUNS/.tunewise-ui/NAME.yaml (data paths resolved, output_dir the
        dashboard's runs folder)."""
        result = check(path, values, self.runs_folder)
        if not result["ok"]:
            raise ConfigError("; ".join([*result["errors"].values(), *result["general"]]))
        config = load_config(path, [*result["overrides"], f"output_dir={self.runs_folder.resolve()}"])
        for attr in ("path", "test_path"):  # relative to the original config's folder: made absolute
            value = getattr(config.data, attr)
            if value and not Path(value).is_absolute():
                setattr(config.data, attr, str(Path(value).resolve()))
        out = self.folder / f"{config.name}.yaml"
        from tunewise.rundir import atomic_write_text

        atomic_write_text(out, config.to_yaml())
        return config, out

    def start(self, path: str | Path, values: dict[str, str]) -> dict[str, Any]:
        """`tunewise run` on the edited config; returns the run's name."""
        config, written = self.write_config(path, values)
        proc = self._spawn(config.name, ["run", str(written)])
        return {"name": config.name, "pid": proc.pid, "config": str(written)}

    def estimate(self, path: str | Path, values: dict[str, str], timeout: float = 600) -> dict[str, Any]:
        """`tunewise estimate` (no calibration run: from FLOPs) on the edited config: its printed tables and
        RUN/estimate.json."""
        import json

        config, written = self.write_config(path, values)
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
        done = subprocess.run([sys.executable, "-m", "tunewise", "estimate", str(written), "--methods", config.method,
                               "--no-calibrate"], capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
        estimate_file = config.run_dir / "estimate.json"
        report = json.loads(estimate_file.read_text(encoding="utf-8")) if done.returncode == 0 and estimate_file.is_file() else None
        entry = ((report or {}).get("methods") or {}).get(config.method) or {}
        return {"ok": done.returncode == 0, "output": done.stdout + (done.stderr if done.returncode else ""),
                "peak_mb": (entry.get("memory") or {}).get("peak_mb"), "time_s": (entry.get("time") or {}).get("total_s")}

    def resume(self, run_root: Path) -> dict[str, Any]:
        proc = self._spawn(run_root.name, ["train", str(run_root), "--resume"])
        return {"name": run_root.name, "pid": proc.pid}

    def cancel(self, run_root: Path) -> dict[str, Any]:
        """Ctrl-C for the process that writes the run (run.json's pid, on this machine): training stops after the
        current step, saves a checkpoint, and run.json says "cancelled" with the command that resumes it."""
        from tunewise.record import ACTIVE, process_alive, read_record

        record = read_record(run_root)
        if record.get("status") not in ACTIVE:
            raise ValueError(f"run {run_root.name} is {record.get('status') or 'not started'}: nothing to cancel")
        if process_alive(record) is not True:
            raise ValueError(f"the process of run {run_root.name} (pid {record.get('pid')}) is not running on this "
                             "machine: cancel it where it runs")
        os.kill(int(record["pid"]), signal.SIGINT)
        return {"name": run_root.name, "pid": record["pid"], "signal": "SIGINT"}
