"""Close the loop from serving: turn a server's request log and the feedback sent to ``/v1/feedback`` into training
data that ``tunewise data prepare`` reads (tunewise/data/preference.py).

* ``kto``: one row ``{prompt, completion, label}`` per rated response: thumbs up -> ``true``, down -> ``false`` (a
  ``score`` without a rating counts as up at 0.5 or more). A preferred alternative adds a row of its own (``true``)
  and, when the response has no rating, marks the response ``false``.
* ``dpo``: one pair ``{prompt, chosen, rejected}`` per response with a preferred alternative: ``chosen`` = the
  alternative, ``rejected`` = the logged response. A ``reference`` sent as feedback counts as a preferred alternative
  when no ``preferred`` was sent.

The prompt is the logged conversation (chat requests only: a ``/v1/completions`` prompt is raw text, not a
conversation the chat template renders, so those are skipped and counted). The latest feedback on a response wins.
Each row keeps the response ``id`` and ``variant``, which ``data prepare`` carries in the examples' meta.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.data.io import write_jsonl
from tunewise.errors import DataError
from tunewise.serve.abtest import read_logs

KINDS = ("kto", "dpo")


@dataclass
class FeedbackData:
    """The rows made from a log, and why the other responses gave none."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    responses: int = 0
    feedback: int = 0


def _verdicts(feedback: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Response id -> {rating, preferred}: the latest rating (or score) and the latest preferred answer (or, without
    one, the latest reference) sent on it."""
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(feedback, key=lambda f: f.get("time") or 0):
        verdict = out.setdefault(str(f.get("id")), {"rating": None, "score": None, "preferred": None, "reference": None})
        if f.get("rating") in ("up", "down"):
            verdict["rating"] = f["rating"]
        if f.get("score") is not None:
            verdict["score"] = "up" if float(f["score"]) >= 0.5 else "down"
        for key in ("preferred", "reference"):
            if isinstance(f.get(key), str) and f[key].strip():
                verdict[key] = f[key]
    return {rid: {"rating": v["rating"] or v["score"], "preferred": v["preferred"] or v["reference"]}
            for rid, v in out.items()}


def feedback_data(log: str | Path, kind: str) -> FeedbackData:
    """The ``kind`` (kto or dpo) rows that the responses logged in ``log`` (a ``tunewise serve`` log folder) and their
    feedback make."""
    if kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}; use kto (thumbs up / down) or dpo (preferred alternatives)")
    try:
        variants, feedback, _ = read_logs(log)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None
    verdicts = _verdicts(feedback)
    out = FeedbackData(feedback=len(feedback))
    for records in variants.values():
        for r in records:
            out.responses += 1
            verdict = verdicts.get(str(r.get("id")))
            if verdict is None:
                out.skipped["no feedback"] += 1
                continue
            messages = (r.get("request") or {}).get("messages")
            if r.get("endpoint") != "chat.completions" or not isinstance(messages, list):
                out.skipped["not a chat request"] += 1
                continue
            if r.get("status", 200) != 200 or not str(r.get("response") or "").strip():
                out.skipped["no complete response"] += 1
                continue
            response = str(r["response"])
            prompt = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
            preferred = verdict["preferred"] if verdict["preferred"] and verdict["preferred"].strip() != response.strip() else None
            source = {"id": r.get("id"), "variant": r.get("variant")}
            answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
            if kind == "dpo":
                if preferred is None:
                    out.skipped["no preferred alternative"] += 1
                    continue
                out.rows.append({"prompt": prompt, "chosen": answer(preferred), "rejected": answer(response), **source})
                continue
            rating = verdict["rating"] or ("down" if preferred is not None else None)
            if rating is None:
                out.skipped["no rating"] += 1
                continue
            out.rows.append({"prompt": prompt, "completion": answer(response), "label": rating == "up", **source})
            if preferred is not None:
                out.rows.append({"prompt": prompt, "completion": answer(preferred), "label": True, **source,
                                 "preferred": True})
    return out


def write_feedback_data(log: str | Path, out: str | Path, kind: str) -> FeedbackData:
    """Write the ``kind`` rows of ``log`` to ``out`` (JSONL, atomically). A DataError when no row comes out."""
    data = feedback_data(log, kind)
    if not data.rows:
        why = ", ".join(f"{k} {v}" for k, v in data.skipped.most_common()) or "no response logged"
        raise DataError(f"no {kind} row in {log}: {data.responses} responses, {data.feedback} feedback records ({why}); "
                        + ("send a preferred answer with POST /v1/feedback {\"id\": ..., \"preferred\": \"...\"}"
                           if kind == "dpo" else "rate responses with POST /v1/feedback {\"id\": ..., \"rating\": \"up\"}"))
    write_jsonl(out, data.rows)
    return data
