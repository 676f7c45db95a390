"""Preference data: pairs for DPO / ORPO and answers marked desirable or not for KTO, normalised into an
:class:`Example` (``messages`` = prompt + chosen answer, ``rejected`` = the rejected answer's turn; or ``messages`` =
prompt + answer with ``desirable``).

Shapes (each field may be renamed with ``data.columns``):

* ``preference``: ``{prompt, chosen, rejected}`` with text, or TRL's conversational form (``prompt`` a list of
  messages, ``chosen`` / ``rejected`` a list holding one assistant message), optional ``system``; or chat-style pairs
  ``{chosen: [conversation], rejected: [conversation]}`` where everything before each conversation's last assistant
  turn is the prompt, which must be the same on both sides (else ``mismatched_prompts``).
* ``unpaired`` (KTO): ``{prompt, completion, label}``, text or conversational, where ``label`` is ``true`` / ``false``
  (also the strings "true" / "false", and 1 / 0 as numbers or strings, as CSV files and spreadsheets write them).
  Auto-detection takes a file as unpaired only when its label is a JSON boolean or the text "true" / "false":
  ``{prompt, completion, label: "positive"}`` (or 0 / 1) stays a completion row with its label kept in meta.
"""

from __future__ import annotations

from typing import Any, Mapping

from tunewise.data.fields import chat_messages, field, label, maybe_json_list, optional_system, text
from tunewise.errors import RowError

PAIR_FIELDS = ("prompt", "chosen", "rejected", "system")
UNPAIRED_FIELDS = ("prompt", "completion", "label", "system")
_TRUE, _FALSE = ("true", "1"), ("false", "0")


def is_boolean_label(value: Any) -> bool:
    """Whether a ``label`` value marks a KTO row when a file's format is detected: a JSON boolean, or "true"/"false"."""
    return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false"))


def parse_label(value: Any, where: str) -> bool:
    """A KTO label: true/false, "true"/"false" (any case), 1/0 or "1"/"0". Anything else is a ``wrong_type`` reject."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    shown = repr(value) if isinstance(value, (str, int, float)) or value is None else type(value).__name__
    raise RowError("wrong_type", f"field {where} is {shown}; a KTO label is true (desirable) or false (undesirable)")


def pair_messages(record: Mapping[str, Any], columns: Mapping[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(prompt messages, chosen answer, rejected answer) of a ``preference`` record."""
    col = lambda name: columns.get(name, name)
    for side in ("chosen", "rejected"):
        if col(side) not in record:
            raise RowError("missing_field", f"missing field {label(side, columns)}: a preference pair needs both "
                           "a chosen and a rejected answer")
    if col("prompt") not in record:
        chosen, rejected = (maybe_json_list(record[col(s)], s) for s in ("chosen", "rejected"))
        if not isinstance(chosen, list) or not isinstance(rejected, list):
            raise RowError("missing_field", f"missing field {label('prompt', columns)}: with text answers the "
                           "prompt must be its own field (chat-style pairs give chosen and rejected as whole conversations)")
        prompt_c, chosen_answer = _split_conversation(chat_messages(chosen, columns, col("chosen")), label("chosen", columns))
        prompt_r, rejected_answer = _split_conversation(chat_messages(rejected, columns, col("rejected")), label("rejected", columns))
        if _strip(prompt_c) != _strip(prompt_r):
            i = next((i for i, (a, b) in enumerate(zip(_strip(prompt_c), _strip(prompt_r))) if a != b), min(len(prompt_c), len(prompt_r)))
            raise RowError("mismatched_prompts", f"the chosen and rejected conversations differ before their last "
                           f"answer (at message {i}); a pair must share its prompt and differ only in the last assistant turn")
        prompt = optional_system(record, columns) + prompt_c if not any(m["role"] == "system" for m in prompt_c) else prompt_c
        return prompt, chosen_answer, rejected_answer
    prompt = prompt_messages(record, columns)
    return prompt, answer(record, "chosen", columns), answer(record, "rejected", columns)


def unpaired_messages(record: Mapping[str, Any], columns: Mapping[str, str]) -> tuple[list[dict[str, Any]], bool]:
    """(prompt + answer messages, desirable) of an ``unpaired`` (KTO) record."""
    desirable = parse_label(field(record, "label", columns), label("label", columns))
    return prompt_messages(record, columns) + answer(record, "completion", columns), desirable


def prompt_messages(record: Mapping[str, Any], columns: Mapping[str, str]) -> list[dict[str, Any]]:
    """The prompt: text (one user turn, after the optional ``system``) or a list of messages ending with a user turn."""
    value = maybe_json_list(field(record, "prompt", columns), columns.get("prompt", "prompt"))
    if isinstance(value, list):
        messages = chat_messages(value, columns, columns.get("prompt", "prompt"))
        if not messages:
            raise RowError("empty_field", f"field {label('prompt', columns)} is an empty list of messages")
        if not any(m["role"] == "system" for m in messages):
            messages = optional_system(record, columns) + messages
        return messages
    return optional_system(record, columns) + [{"role": "user", "content": text(record, "prompt", columns)}]


def answer(record: Mapping[str, Any], name: str, columns: Mapping[str, str]) -> list[dict[str, Any]]:
    """One answer (``chosen``, ``rejected`` or ``completion``): text, or a list holding one assistant message."""
    where = label(name, columns)
    value = maybe_json_list(field(record, name, columns), columns.get(name, name))
    if isinstance(value, list):
        messages = chat_messages(value, columns, columns.get(name, name))
        if not messages:
            raise RowError("empty_field", f"field {where} is an empty list; give the answer as one assistant message")
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            roles = ", ".join(m["role"] for m in messages)
            raise RowError("invalid_roles", f"field {where} holds {roles}; an answer is one assistant message (put "
                           "earlier turns in the prompt)")
        if not messages[0]["content"].strip():
            raise RowError("empty_field", f"field {where} is an empty answer")
        return messages
    return [{"role": "assistant", "content": text(record, name, columns)}]


def _split_conversation(messages: list[dict[str, Any]], where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(everything before the last assistant turn, [the last assistant turn]) of a chat-style pair side."""
    if not messages:
        raise RowError("empty_field", f"field {where} is an empty conversation")
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant"), None)
    if last is None or last != len(messages) - 1:
        raise RowError("invalid_roles", f"field {where} must end with an assistant answer")
    if not str(messages[last].get("content") or "").strip():
        raise RowError("empty_field", f"the last answer of field {where} is empty")
    return messages[:last], messages[last:]


def _strip(messages: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    return [(m.get("role"), str(m.get("content") or "").strip()) for m in messages]


def check_pair(chosen: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> None:
    """``identical_pair`` when the two answers are the same text (nothing to prefer)."""
    if _strip(chosen) == _strip(rejected):
        raise RowError("identical_pair", "the chosen and rejected answers are identical; a pair must differ in its answer")
