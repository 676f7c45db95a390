"""Readers for one field of a raw record (text, a list of chat messages, an optional system prompt): each returns
the value in tunewise's form or raises :class:`RowError` with a reason code and a sentence naming the field (after
``data.columns``)."""

from __future__ import annotations

import json
from typing import Any, Mapping

from tunewise.errors import RowError

KNOWN_ROLES = ("system", "user", "assistant", "tool")


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def label(name: str, columns: Mapping[str, str]) -> str:
    col = columns.get(name, name)
    return f"'{col}'" if col == name else f"'{col}' (mapped to {name})"


def field(record: Mapping[str, Any], name: str, columns: Mapping[str, str]) -> Any:
    col = columns.get(name, name)
    if col not in record:
        raise RowError("missing_field", f"missing field {label(name, columns)}")
    return record[col]


def text(record: Mapping[str, Any], name: str, columns: Mapping[str, str], *, required: bool = True,
          numbers: bool = False) -> str:
    """A text field: a string, non-empty when required (an optional field may be absent, null or empty). With
    ``numbers`` an integer is its text (class labels such as 0 and 1)."""
    col = columns.get(name, name)
    if col not in record or (not required and record[col] is None):
        if required:
            raise RowError("missing_field", f"missing field {label(name, columns)}")
        return ""
    value = record[col]
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RowError("wrong_type", f"field {label(name, columns)} is {kind(value)}; expected text")
    if required and not value.strip():
        raise RowError("empty_field", f"field {label(name, columns)} is empty or whitespace only")
    return value


def optional_system(record: Mapping[str, Any], columns: Mapping[str, str]) -> list[dict[str, Any]]:
    system = text(record, "system", columns, required=False)
    return [{"role": "system", "content": system}] if system.strip() else []


def maybe_json_list(value: Any, name: str) -> Any:
    """A list given as a JSON string (as CSV columns hold it)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            raise RowError("wrong_type", f"field '{name}' is text that is not a valid JSON list") from None
    return value


def content(value: Any, where: str, *, allow_none: bool) -> str:
    if value is None and allow_none:
        return ""
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        value = "".join(str(p.get("text") or "") for p in value)  # OpenAI content parts, text only
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{where} content is {kind(value)}; expected text")
    return value


def weight(message: dict[str, Any], where: str) -> None:
    if "weight" in message:
        w = message["weight"]
        if w not in (0, 1) or isinstance(w, float) and not w.is_integer():
            raise RowError("wrong_type", f"{where} has weight {w!r}; weight must be 0 (not trained) or 1 (trained)")
        message["weight"] = int(w)


def chat_messages(value: Any, columns: Mapping[str, str], name: str) -> list[dict[str, Any]]:
    value = maybe_json_list(value, name)
    if not isinstance(value, list):
        raise RowError("wrong_type", f"field '{name}' is {kind(value)}; expected a list of messages")
    role_key, content_key = columns.get("role", "role"), columns.get("content", "content")
    messages = []
    for i, m in enumerate(value):
        where = f"message {i}"
        if not isinstance(m, dict):
            raise RowError("wrong_type", f"{where} is {kind(m)}; expected an object with role and content")
        if role_key not in m:
            raise RowError("missing_field", f"{where} has no '{role_key}'")
        role = m[role_key]
        if not isinstance(role, str):
            raise RowError("wrong_type", f"{where} role is {kind(role)}; expected text")
        if role not in KNOWN_ROLES:
            raise RowError("invalid_roles", f"{where} has unknown role {role!r}; allowed: {', '.join(KNOWN_ROLES)}")
        if content_key not in m and not m.get("tool_calls"):
            raise RowError("missing_field", f"{where} ({role}) has no '{content_key}'")
        out = {k: v for k, v in m.items() if k not in (role_key, content_key)}
        out = {"role": role, "content": content(m.get(content_key), f"{where} ({role})", allow_none=bool(m.get("tool_calls"))), **out}
        weight(out, where)
        messages.append(out)
    return messages
