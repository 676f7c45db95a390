"""The one internal example type every input format is normalised into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Example:
    """A conversation plus where it came from.

    ``messages`` are OpenAI-style dicts: ``{"role": ..., "content": ...}`` and optionally ``weight`` (0 or 1: whether
    an assistant turn is trained on) and ``tool_calls`` (passed through untouched). Plain text for continued
    pretraining is a single ``{"role": "text", ...}`` message.
    ``meta`` holds provenance and extras: ``source`` (file), ``line`` (1-based line or row index), ``label``,
    ``augmented`` (bool), and anything else a format carries along.

    Preference data (tunewise/objectives/): a pair's ``messages`` end with the chosen answer and ``rejected`` holds
    the rejected answer's turn (same prompt); an unpaired (KTO) example's last answer is ``desirable`` or not. For
    evaluation the chosen answer is the reference.
    """

    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    rejected: list[dict[str, Any]] | None = None
    desirable: bool | None = None

    def rejected_example(self) -> "Example":
        """The conversation with the rejected answer in place of the chosen one."""
        if not self.rejected:
            raise ValueError("not a preference pair: no rejected answer")
        return Example(messages=self.prompt_messages + list(self.rejected), meta=self.meta)

    @property
    def prompt_messages(self) -> list[dict[str, Any]]:
        """Every message before the last assistant turn (what a model is given at evaluation)."""
        last = self.last_assistant_index
        return self.messages[:last] if last is not None else list(self.messages)

    @property
    def reference(self) -> str | None:
        """The last assistant answer (what a model is expected to produce at evaluation)."""
        last = self.last_assistant_index
        return None if last is None else str(self.messages[last].get("content") or "")

    @property
    def last_assistant_index(self) -> int | None:
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].get("role") == "assistant":
                return i
        return None

    def to_record(self) -> dict[str, Any]:
        """The JSONL form written to a run directory (chat-messages format, meta kept)."""
        record: dict[str, Any] = {"messages": self.messages}
        if self.rejected is not None:
            record["rejected"] = self.rejected
        if self.desirable is not None:
            record["desirable"] = self.desirable
        if self.meta:
            record["meta"] = self.meta
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Example":
        return cls(messages=list(record["messages"]), meta=dict(record.get("meta") or {}),
                   rejected=record.get("rejected"), desirable=record.get("desirable"))
