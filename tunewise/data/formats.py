"""Detect a record's format and normalise it into an :class:`Example`.

Formats: ``alpaca`` (instruction / input / output, optional system and history), ``chat`` (OpenAI-style messages,
tool calls passed through, per-message ``weight``), ``sharegpt`` (conversations with from / value), ``completion``
(prompt / completion), ``text`` (plain text for continued pretraining), and the preference formats
(:mod:`tunewise.data.preference`): ``preference`` (prompt / chosen / rejected, or chat-style pairs of whole
conversations: DPO, ORPO) and ``unpaired`` (prompt / completion / label true or false: KTO). ``columns`` maps an internal field name
(``instruction``, ``input``, ``output``, ``system``, ``history``, ``messages``, ``conversations``, ``prompt``,
``completion``, ``text``, ``label``, ``chosen``, ``rejected``, and inside messages ``role``/``content``/``from``/``value``) to the name used
in the file. Problems raise :class:`RowError` with a reason code.

With ``format: auto`` a file's *shape* is detected from its field names (:func:`detect_shape`): besides the formats' own
names (``chosen`` + ``rejected``: preference; ``prompt`` + ``completion`` + a ``label`` that is true or false: unpaired), ``{input, output}``, ``{question, answer}`` and ``{text, label}`` load as ``completion`` with the columns
mapped (``{text, label}`` is a classification shape: the label is the answer). A column read as two fields (e.g.
``columns: {instruction: input}`` on alpaca rows, whose ``input`` is a field of its own) is refused
(:func:`check_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from tunewise.catalog import _
from tunewise.data.fields import KNOWN_ROLES  # noqa: F401  (re-exported: the roles a message may have)
from tunewise.data.fields import (
    kind as _kind,
    field as _field,
    text as _text,
    optional_system as _optional_system,
    maybe_json_list as _maybe_json_list,
    content as _content,
    weight as _weight,
    chat_messages as _chat_messages,
)
from tunewise.data.preference import (
    PAIR_FIELDS,
    UNPAIRED_FIELDS,
    check_pair,
    is_boolean_label,
    pair_messages,
    unpaired_messages,
)
from tunewise.errors import DataError, RowError
from tunewise.example import Example

FORMATS = ("alpaca", "chat", "sharegpt", "completion", "text", "preference", "unpaired")
# what each format trains: a conversation (SFT), a preference pair (DPO, ORPO), or an answer marked desirable or not (KTO)
DATA_KINDS = {"preference": "pairs", "unpaired": "unpaired"}
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system", "tool": "tool",
    "function_response": "tool", "observation": "tool", "function_call": "assistant",
}  # fmt: skip
_FIELDS = {
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "chat": ("messages",),
    "sharegpt": ("conversations", "system"),
    "completion": ("prompt", "completion", "system"),
    "text": ("text",),
    "preference": PAIR_FIELDS,
    "unpaired": UNPAIRED_FIELDS,
}


def check_format(name: str) -> str:
    """``name`` if it is a known format (or ``auto``), else a DataError naming the allowed ones."""
    if name != "auto" and name not in FORMATS:
        raise DataError(_("unknown data format {name!r}; use one of auto, {formats}").format(
            name=name, formats=', '.join(FORMATS)))
    return name


@dataclass(frozen=True)
class Shape:
    """A detected file shape: the format, the column mapping it needs on top of the user's, and what it says."""

    format: str
    columns: dict[str, str] = field(default_factory=dict)
    classification: bool = False

    def describe(self, user_columns: Mapping[str, str] | None = None) -> str:
        """``completion (input -> output)``: the format and, for question -> answer formats, the columns read."""
        cols = {**self.columns, **(user_columns or {})}
        pair = {"completion": ("prompt", "completion"), "alpaca": ("instruction", "output")}.get(self.format)
        if pair is None:
            return self.format
        return f"{self.format} ({cols.get(pair[0], pair[0])} -> {cols.get(pair[1], pair[1])})" + (
            ", classification" if self.classification else "")


# Shapes recognised by their field names, in order: (fields that must be present, format, columns it maps)
_PAIRS: tuple[tuple[tuple[str, ...], str, dict[str, str], bool], ...] = (
    (("input", "output"), "completion", {"prompt": "input", "completion": "output"}, False),
    (("question", "answer"), "completion", {"prompt": "question", "completion": "answer"}, False),
    (("text", "label"), "completion", {"prompt": "text", "completion": "label"}, True),
)


def detect_shape(record: Mapping[str, Any], columns: Mapping[str, str] | None = None) -> Shape | None:
    """The shape a record is in, from its field names (after the user's ``columns``), or None when none fits."""
    columns = columns or {}
    has = _has(record, columns)
    if has("chosen") and has("rejected"):
        return Shape("preference")
    if has("prompt") and has("completion") and has("label") and is_boolean_label(record[columns.get("label", "label")]):
        return Shape("unpaired")
    if has("messages"):
        return Shape("chat")
    if has("conversations"):
        return Shape("sharegpt")
    if has("instruction"):
        return Shape("alpaca")
    if has("prompt") or has("completion"):
        return Shape("completion")
    mapped = set(columns.values())
    for needed, fmt, cols, classification in _PAIRS:
        if all(name in record and name not in mapped for name in needed):
            return Shape(fmt, {k: v for k, v in cols.items() if k not in columns}, classification)
    if has("text"):
        return Shape("text")
    return None


def detect_format(record: Mapping[str, Any], columns: Mapping[str, str] | None = None) -> str | None:
    """The format a record is in, from its field names, or None when no format fits (see :func:`detect_shape`)."""
    shape = detect_shape(record, columns)
    return shape.format if shape else None


def check_columns(fmt: str, columns: Mapping[str, str]) -> None:
    """A DataError when two fields of ``fmt`` would read the same column (e.g. ``columns: {instruction: input}`` on
    alpaca rows: ``input`` is alpaca's own field too, so every input would go into the prompt twice)."""
    names = _FIELDS.get(fmt, ())
    if fmt in ("chat", "preference", "unpaired"):
        names = (*names, "role", "content")
    elif fmt == "sharegpt":
        names = (*names, "from", "value")
    readers: dict[str, list[str]] = {}
    for name in names:
        readers.setdefault(columns.get(name, name), []).append(name)
    for column, fields in readers.items():
        if len(fields) > 1:
            mapped = [f for f in fields if columns.get(f) == column and f != column]
            own = [f for f in fields if f not in mapped]
            how = (f"data.columns maps {' and '.join(mapped)} to column {column!r}, which {fmt} also reads as its "
                   f"{' and '.join(own)} field" if own else f"data.columns maps {' and '.join(mapped)} to the same column {column!r}")
            hint = (f"; for rows with {column!r} and an answer, set data.format: completion and "
                    f"data.columns: {{prompt: {column}, completion: <answer column>}}" if fmt == "alpaca" else "")
            raise DataError(_("{how}: every row would use it twice{hint}").format(how=how, hint=hint))


def suggest_config(records: Sequence[Mapping[str, Any]]) -> str | None:
    """Config lines that would load rows like ``records`` as question -> answer pairs (None: no text fields): the
    text field with the longest values is the prompt, the one with the shortest (or fewest distinct) the answer."""
    texts: dict[str, list[str]] = {}
    for record in records:
        for key, value in record.items():
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                texts.setdefault(str(key), []).append(str(value))
    usable = {k: v for k, v in texts.items() if len(v) >= max(1, len(records) // 2)}
    if len(usable) < 2:
        return None
    mean = {k: sum(len(x) for x in v) / len(v) for k, v in usable.items()}
    prompt = max(usable, key=lambda k: (mean[k], k))
    answer = min((k for k in usable if k != prompt), key=lambda k: (len(set(usable[k])), mean[k], k))
    return f"data: {{format: completion, columns: {{prompt: {prompt}, completion: {answer}}}}}"


def _has(record: Mapping[str, Any], columns: Mapping[str, str]) -> Callable[[str], bool]:
    return lambda name: columns.get(name, name) in record


def normalize(
    record: Mapping[str, Any], fmt: str, columns: Mapping[str, str] | None = None, *, system_prompt: str | None = None
) -> Example:
    """One record in format ``fmt`` -> Example (meta carries every field the format does not use). Raises RowError."""
    columns = columns or {}
    if fmt == "chat":
        messages = _chat_messages(_field(record, "messages", columns), columns, "messages")
    elif fmt == "sharegpt":
        messages = _sharegpt_messages(record, columns)
    elif fmt == "alpaca":
        messages = _alpaca_messages(record, columns)
    elif fmt == "completion":
        messages = _optional_system(record, columns) + [
            {"role": "user", "content": _text(record, "prompt", columns)},
            {"role": "assistant", "content": _text(record, "completion", columns, numbers=True)},
        ]
    elif fmt == "text":
        messages = [{"role": "text", "content": _text(record, "text", columns)}]
    elif fmt == "preference":
        prompt, chosen, rejected = pair_messages(record, columns)
        check_pair(chosen, rejected)
        return Example(messages=_with_system(prompt + chosen, system_prompt), meta=_meta(record, fmt, columns),
                       rejected=rejected)
    elif fmt == "unpaired":
        messages, desirable = unpaired_messages(record, columns)
        return Example(messages=_with_system(messages, system_prompt), meta=_meta(record, fmt, columns),
                       desirable=desirable)
    else:
        raise DataError(_("unknown data format {fmt!r}; use one of auto, {formats}").format(
            fmt=fmt, formats=', '.join(FORMATS)))
    if system_prompt and fmt != "text" and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return Example(messages=messages, meta=_meta(record, fmt, columns))


def data_kind(fmt: str) -> str:
    """What rows of format ``fmt`` train: "sft" (a conversation), "pairs" (DPO, ORPO) or "unpaired" (KTO)."""
    return DATA_KINDS.get(fmt, "sft")


def _with_system(messages: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    if system_prompt and not any(m["role"] == "system" for m in messages):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _meta(record: Mapping[str, Any], fmt: str, columns: Mapping[str, str]) -> dict[str, Any]:
    used = {columns.get(f, f) for f in _FIELDS[fmt]}
    meta: dict[str, Any] = {}
    if isinstance(record.get("meta"), dict):
        meta.update(record["meta"])
    for key, value in record.items():
        if key not in used and key != "meta":
            meta[key] = value
    label_col = columns.get("label")
    if label_col and label_col in record:
        meta["label"] = record[label_col]
    return meta


# --------------------------------------------------------------------------------------------------------------------
# fields


def _alpaca_messages(record: Mapping[str, Any], columns: Mapping[str, str]) -> list[dict[str, Any]]:
    instruction = _text(record, "instruction", columns)
    extra = _text(record, "input", columns, required=False)
    output = _text(record, "output", columns)
    messages = _optional_system(record, columns)
    history = record.get(columns.get("history", "history"))
    if history:
        if not isinstance(history, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in history):
            raise RowError("wrong_type", "field 'history' must be a list of [instruction, answer] pairs")
        for i, (q, a) in enumerate(history):
            if not isinstance(q, str) or not isinstance(a, str):
                raise RowError("wrong_type", f"history pair {i} holds {_kind(q if not isinstance(q, str) else a)}; expected text")
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _sharegpt_messages(record: Mapping[str, Any], columns: Mapping[str, str]) -> list[dict[str, Any]]:
    value = _maybe_json_list(_field(record, "conversations", columns), "conversations")
    if not isinstance(value, list):
        raise RowError("wrong_type", f"field 'conversations' is {_kind(value)}; expected a list of turns")
    from_key, value_key = columns.get("from", "from"), columns.get("value", "value")
    messages = _optional_system(record, columns)
    for i, turn in enumerate(value):
        where = f"turn {i}"
        if not isinstance(turn, dict):
            raise RowError("wrong_type", f"{where} is {_kind(turn)}; expected an object with from and value")
        speaker = turn.get(from_key, turn.get("role"))
        if speaker is None:
            raise RowError("missing_field", f"{where} has no '{from_key}'")
        if not isinstance(speaker, str):
            raise RowError("wrong_type", f"{where} '{from_key}' is {_kind(speaker)}; expected text")
        role = SHAREGPT_ROLES.get(speaker.lower())
        if role is None:
            raise RowError("invalid_roles", f"{where} is from unknown speaker {speaker!r}; allowed: human, gpt, system, tool")
        if value_key not in turn and "content" not in turn:
            raise RowError("missing_field", f"{where} has no '{value_key}'")
        text = _content(turn.get(value_key, turn.get("content")), f"{where} ({speaker})", allow_none=False)
        message: dict[str, Any] = {"role": role, "content": text}
        if "weight" in turn:
            message["weight"] = turn["weight"]
            _weight(message, where)
        messages.append(message)
    return messages
