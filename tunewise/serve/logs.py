"""Append-only JSONL logs of a server: LOG/<variant>.jsonl (one record per request and response),
LOG/errors.jsonl (requests answered with an error), LOG/feedback.jsonl (scores and references sent later).

Lines are appended and flushed one at a time, like metrics.jsonl: a reader (``tunewise abtest``) can read them
while the server runs, and a crash loses at most the line being written.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

ERRORS = "errors"
FEEDBACK = "feedback"


def log_file(log_dir: Path, stream: str) -> Path:
    return log_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stream)}.jsonl"


class RequestLog:
    def __init__(self, log_dir: str | Path) -> None:
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._variant_of: dict[str, str] = {}  # response id -> variant, for feedback

    def write(self, stream: str, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            with log_file(self.dir, stream).open("a", encoding="utf-8") as f:
                f.write(line)
            if "id" in record and stream not in (ERRORS, FEEDBACK):
                self._variant_of[record["id"]] = stream

    def variant_of(self, response_id: str) -> str | None:
        with self._lock:
            return self._variant_of.get(response_id)
