"""Errors for the user, and the reason codes a rejected row is filed under."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.catalog import N_


class DataError(ValueError):
    """Data that cannot be used at all (missing file, unknown format, no valid row). One line, says what to do."""


# Every reason a row can be rejected for, with what it means (the codes are stable: reports and tests key on them).
REASONS: dict[str, str] = {
    "invalid_json": N_("the line is not valid JSON"),
    "not_object": N_("the row is not a record (a JSON object, or a CSV row that matches the header)"),
    "invalid_utf8": N_("the row is not valid UTF-8"),
    "missing_field": N_("a required field is missing"),
    "empty_field": N_("a required field is empty or whitespace only"),
    "wrong_type": N_("a field has the wrong type (number, null, list or object where text is expected)"),
    "invalid_roles": N_("unknown or misordered roles"),
    "control_chars": N_("the text contains control characters"),
    "too_short": N_("fewer tokens than data.min_tokens"),
    "too_long": N_("more tokens than data.max_tokens"),
    "no_trained_tokens": N_("no token is trained after masking"),
    "duplicate": N_("exact duplicate of an earlier row"),
    "near_duplicate": N_("near-duplicate of an earlier row"),
    "split_overlap": N_("duplicates an example of a later split (removed so nothing leaks into evaluation)"),
    "identical_pair": N_("the chosen and rejected answers of a preference pair are the same"),
    "mismatched_prompts": N_("the chosen and rejected conversations of a pair do not share their prompt"),
}


class RowError(Exception):
    """A row that cannot be kept: a reason code from :data:`REASONS` and a sentence for a person."""

    def __init__(self, code: str, message: str) -> None:
        assert code in REASONS, code
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Reject:
    """One rejected row, as written to ``rejects.jsonl``."""

    source: str
    line: int
    reason: str
    message: str
    raw: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        record = {"source": self.source, "line": self.line, "reason": self.reason, "message": self.message}
        record.update(self.extra)
        record["raw"] = self.raw
        return record
