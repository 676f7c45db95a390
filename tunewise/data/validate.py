"""Checks on a normalised example: roles and their order, empty text, control characters, and token limits."""

from __future__ import annotations

import re
from typing import Any

from tunewise.errors import RowError
from tunewise.example import Example

# C0 controls except tab / newline / carriage return, DEL, and C1 controls (usually text decoded with the wrong codec)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_control_chars(example: Example) -> int:
    """Remove invisible control characters (C0 except tab, newline and carriage return; DEL; C1) from every message
    of ``example`` in place; returns how many were removed."""
    removed = 0
    for m in [*example.messages, *(example.rejected or [])]:
        content = m.get("content")
        if isinstance(content, str) and _CONTROL.search(content):
            cleaned, n = _CONTROL.subn("", content)
            m["content"] = cleaned
            removed += n
    return removed


def check_example(example: Example) -> None:
    """Raise RowError when the example cannot be trained on as it is (a preference pair: both of its sides)."""
    _check_messages(example.messages)
    if example.rejected is not None:
        try:
            _check_messages(example.rejected_example().messages)
        except RowError as err:
            raise RowError(err.code, f"rejected side: {err.message}") from None


def _check_messages(messages: list[dict[str, Any]]) -> None:
    if not messages:
        raise RowError("empty_field", "the conversation has no messages")
    if len(messages) == 1 and messages[0]["role"] == "text":
        _check_text(messages[0]["content"], "text")
        if not messages[0]["content"].strip():
            raise RowError("empty_field", "the text is empty or whitespace only")
        return
    check_roles(messages)
    for i, m in enumerate(messages):
        content = m.get("content") or ""
        where = f"message {i} ({m['role']})"
        _check_text(content, where)
        if not content.strip() and not m.get("tool_calls") and m["role"] != "system":
            raise RowError("empty_field", f"{where} is empty or whitespace only")


def check_roles(messages: list[dict[str, Any]]) -> None:
    """System only first, then a user turn before any answer, tool results after a tool call, and an assistant last."""
    roles = [m["role"] for m in messages]
    for i, role in enumerate(roles):
        if role == "text":
            raise RowError("invalid_roles", f"message {i} has role 'text', which is only for a plain-text example alone")
        if role == "system" and i > 0:
            raise RowError("invalid_roles", f"message {i} is a system message; a system message may only come first")
        if role == "tool" and (i == 0 or roles[i - 1] not in ("assistant", "tool")):
            raise RowError("invalid_roles", f"message {i} is a tool result that does not follow an assistant tool call")
    body = roles[1:] if roles[0] == "system" else roles
    if not body:
        raise RowError("invalid_roles", "the conversation has only a system message; add a user turn and an assistant answer")
    if body[0] != "user":
        raise RowError("invalid_roles", f"the conversation starts with a {body[0]} turn; it must start with a user turn (after an optional system message)")
    if roles[-1] != "assistant":
        raise RowError("invalid_roles", f"the conversation ends with a {roles[-1]} turn; it must end with an assistant answer")


def _check_text(text: str, where: str) -> None:
    if _SURROGATE.search(text):
        raise RowError("invalid_utf8", f"{where} holds an unpaired surrogate (an escape that is not valid UTF-8)")
    found = _CONTROL.search(text)
    if found:
        raise RowError("control_chars", f"{where} contains control character U+{ord(found.group()):04X} at position {found.start()}; remove it, fix the file's encoding, or set data.clean_control_chars: true")


def check_tokens(n_tokens: int, n_trained: int, n_trained_after_cut: int | None, *, min_tokens: int, max_tokens: int, overlength: str) -> RowError | None:
    """The token-level verdict for one encoded example (None: keep). ``n_trained_after_cut`` is the trained count once
    cut to ``max_tokens`` (None when not cut)."""
    if n_trained == 0:
        return RowError("no_trained_tokens", "no token is trained after masking (every assistant turn has weight 0, or there is none)")
    if n_tokens < min_tokens:
        return RowError("too_short", f"{n_tokens} tokens, fewer than data.min_tokens={min_tokens}")
    if n_tokens > max_tokens:
        if overlength != "truncate_end":
            return RowError("too_long", f"{n_tokens} tokens, more than data.max_tokens={max_tokens} (set data.overlength: truncate to cut the user's message, or raise data.max_tokens)")
        if not n_trained_after_cut:
            return RowError("too_long", f"{n_tokens} tokens; cutting to data.max_tokens={max_tokens} would remove the whole answer")
    return None
