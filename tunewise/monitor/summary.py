"""RUN/summary.json: the headline numbers of a training run, computed from metrics.jsonl (so it can be rebuilt, and
covers resumed runs: sessions are stitched together by :func:`effective_records`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewise.catalog import _
from tunewise.monitor.metrics import effective_records, number, read_metrics


def _values(records: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    out = []
    for r in records:
        v = number(r.get(key))
        if v is not None:
            out.append((int(r["step"]), v))
    return out


def _finite_min(points: list[tuple[int, float]]) -> tuple[int, float] | None:
    finite = [p for p in points if p[1] == p[1] and abs(p[1]) != float("inf")]
    return min(finite, key=lambda p: p[1]) if finite else None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Total steps and epochs, final/min train and eval loss, best step (lowest eval loss), total time, trained
    tokens, peak memory, warnings and why the run stopped early (if it did)."""
    raw, records = records, effective_records(records)
    logged = [r for r in records if r.get("kind") in ("train", "eval", "summary", "warning", "error")]
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    losses, eval_losses = _values(train, "loss"), _values(evals, "eval_loss")
    best_train, best_eval = _finite_min(losses), _finite_min(eval_losses)

    # sessions: each "start" begins one; its time is the elapsed_s of its last record, its tokens the last count less
    # the count it continued from (a resume records that in its start; files written before tunewise cut
    # metrics.jsonl back at a resume have none, and count what each session spent)
    total_time, tokens, session_time, session_tokens, session_base = 0.0, 0, 0.0, 0, 0
    for r in raw:
        if r.get("kind") == "start":
            total_time, tokens = total_time + session_time, tokens + max(session_tokens - session_base, 0)
            session_base = int(number(r.get("trained_tokens")) or 0)
            session_time, session_tokens = 0.0, session_base
        session_time = max(session_time, number(r.get("elapsed_s")) or 0.0)
        session_tokens = max(session_tokens, int(number(r.get("trained_tokens")) or 0))
    total_time, tokens = total_time + session_time, tokens + max(session_tokens - session_base, 0)

    peaks: dict[str, float] = {}
    for key in ("peak_rss_mb", "cuda_peak_allocated_mb", "cuda_peak_reserved_mb"):
        values = [v for _key, v in _values(records, key)]
        if values:
            peaks[key] = max(values)
    last = logged[-1] if logged else (records[-1] if records else {})
    starts = [r for r in records if r.get("kind") == "start"]
    stopped = next((r for r in reversed(records) if r.get("kind") == "error"), None)
    early = next((r for r in reversed(records) if r.get("kind") == "warning" and r.get("stop")), None)
    return {
        "steps": int(last.get("step", 0)) if last else 0,
        "max_steps": starts[-1].get("max_steps") if starts else None,
        "epochs": number(last.get("epoch")) if last else None,
        "final_train_loss": losses[-1][1] if losses else None,
        "min_train_loss": best_train[1] if best_train else None,
        "final_eval_loss": eval_losses[-1][1] if eval_losses else None,
        "min_eval_loss": best_eval[1] if best_eval else None,
        "best_step": best_eval[0] if best_eval else None,
        "evaluations": len(evals),
        "total_time_s": round(total_time, 2),
        "trained_tokens": tokens,
        "tokens_per_s": round(tokens / total_time, 2) if total_time else None,
        "peak_memory_mb": peaks,
        "sessions": len(starts),
        "warnings": [{"step": r["step"], "event": r.get("event"), "message": r.get("message")}
                     for r in records if r.get("kind") == "warning"],
        "stopped": (
            {"reason": stopped.get("event"), "step": stopped["step"], "message": stopped.get("message")} if stopped
            else {"reason": "early_stopping", "step": early["step"], "message": early.get("message")} if early
            else None
        ),
    }


def summarize_file(metrics_path: str | Path) -> dict[str, Any]:
    return summarize(read_metrics(metrics_path))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def summary_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for printing a summary (the CLI and the live view's end-of-run table)."""
    peaks = summary.get("peak_memory_mb") or {}
    memory = ", ".join(f"{k.removesuffix('_mb').replace('_', ' ')} {v:,.0f} MiB" for k, v in peaks.items()) or "-"
    rows = [
        (_("steps"), f"{summary.get('steps')}" + (f" / {summary['max_steps']}" if summary.get("max_steps") else "")),
        (_("epochs"), _fmt(summary.get("epochs"))),
        (_("train loss (final / min)"), f"{_fmt(summary.get('final_train_loss'))} / {_fmt(summary.get('min_train_loss'))}"),
        (_("eval loss (final / min)"), f"{_fmt(summary.get('final_eval_loss'))} / {_fmt(summary.get('min_eval_loss'))}"),
        (_("best step"), _fmt(summary.get("best_step"))),
        (_("time"), duration(summary.get("total_time_s"))),
        (_("trained tokens"), f"{summary.get('trained_tokens', 0):,}" + (
            f" ({summary['tokens_per_s']:,.1f}/s)" if summary.get("tokens_per_s") else "")),
        (_("peak memory"), memory),
    ]
    if summary.get("warnings"):
        rows.append((_("warnings"), str(len(summary["warnings"]))))
    if summary.get("stopped"):
        rows.append((_("stopped"), _("{reason} at step {step}").format(**summary["stopped"])))
    return rows
