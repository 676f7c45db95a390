"""``tunewise runs``: one row per run directory (status, method, model, best eval loss, main eval metric)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunewise.record import ACTIVE, mark_interrupted, writer_alive
from tunewise.rundir import RunDir


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _config(run: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (RunDir.of(path).record.is_file() or RunDir.of(path).config.is_file())


def run_row(run: Path) -> dict[str, Any]:
    """The listing row of one run directory, from run.json, summary.json and eval/comparison.json."""
    record, summary = mark_interrupted(run), _json(RunDir.of(run).summary)  # a killed writer: now "interrupted"
    config = _config(run) if not record.get("method") else {}
    status = record.get("status") or ("succeeded" if (run / "model").is_dir() else "unknown")
    if status in ACTIVE and writer_alive(run, record) is None:
        status = f"{status}?"  # written from another host: can't tell whether it still runs
    comparison = _json(RunDir.of(run).comparison)
    main = comparison.get("main_metric")
    entry = (comparison.get("metrics") or {}).get(main) if main else None
    values = (entry or {}).get("values") or {}
    tuned = values.get("tuned", next(iter(values.values()), None) if values else None)
    best_eval = summary.get("min_eval_loss")
    if best_eval is None:
        best_eval = (record.get("progress") or {}).get("best_eval_loss")
    return {
        "name": run.name,
        "path": str(run),
        "status": status,
        "method": record.get("method") or config.get("method"),
        "model": record.get("model") or config.get("model"),
        "steps": summary.get("steps", (record.get("progress") or {}).get("step")),
        "best_eval_loss": best_eval,
        "main_metric": main,
        "main_metric_value": tuned,
        "main_metric_base": values.get("base"),
        "created_at": record.get("created_at"),
        "error": record.get("error"),
        "checkpoint": record.get("checkpoint"),
    }


def list_runs(directory: str | Path = "runs") -> list[dict[str, Any]]:
    """Rows for every run directory directly under ``directory`` (or ``directory`` itself if it is a run),
    newest first."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; pass the folder that holds your runs (config output_dir)")
    runs = [root] if is_run_dir(root) else [p for p in root.iterdir() if is_run_dir(p)]
    rows = [run_row(p) for p in runs]
    return sorted(rows, key=lambda r: (r["created_at"] or "", r["name"]), reverse=True)
