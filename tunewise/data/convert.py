"""Write examples of any input format as alpaca, chat or completion JSONL (or JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.catalog import _
from tunewise.config import DataConfig
from tunewise.data.io import atomic_open, dumps
from tunewise.errors import DataError, RowError
from tunewise.example import Example

TARGETS = ("alpaca", "chat", "completion")
_PROVENANCE = ("source", "line")


def _extras(example: Example) -> dict[str, Any]:
    return {k: v for k, v in example.meta.items() if k not in _PROVENANCE}


def _pairs(example: Example, target: str) -> tuple[str | None, list[tuple[str, str]]]:
    messages = example.messages
    if len(messages) == 1 and messages[0]["role"] == "text":
        raise RowError("invalid_roles", f"a plain-text example has no prompt and answer to write as {target}")
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    roles = [m["role"] for m in messages]
    if len(roles) % 2 or any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles)):
        raise RowError("invalid_roles", f"only alternating user/assistant turns can be written as {target} (roles: {', '.join(roles)})")
    if any(m.get("tool_calls") or m.get("weight", 1) == 0 for m in messages):
        raise RowError("invalid_roles", f"tool calls and turn weights cannot be written as {target}; use chat")
    return system, [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages), 2)]


def to_format(example: Example, target: str) -> dict[str, Any]:
    """One example as a record of ``target`` (alpaca, chat or completion); RowError when it cannot be expressed."""
    if target == "chat":
        if len(example.messages) == 1 and example.messages[0]["role"] == "text":
            raise RowError("invalid_roles", "a plain-text example has no conversation to write as chat")
        return {"messages": example.messages, **_extras(example)}
    system, pairs = _pairs(example, target)
    record: dict[str, Any] = {}
    if target == "alpaca":
        record = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
        if len(pairs) > 1:
            record["history"] = [list(p) for p in pairs[:-1]]
    elif target == "completion":
        if len(pairs) != 1:
            raise RowError("invalid_roles", f"a conversation with {len(pairs)} turns cannot be written as completion; use chat")
        record = {"prompt": pairs[0][0], "completion": pairs[0][1]}
    else:
        raise DataError(_("unknown output format {target!r}; use one of {targets}").format(
            target=target, targets=', '.join(TARGETS)))
    if system:
        record["system"] = system
    return {**record, **_extras(example)}


@dataclass
class ConvertResult:
    written: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejects_path: str | None = None
    formats: dict[str, str] = field(default_factory=dict)


def convert_file(src: str, dst: str | Path, to: str, *, format: str = "auto", columns: dict[str, str] | None = None,
                 as_json: bool | None = None, system_prompt: str | None = None) -> ConvertResult:  # fmt: skip
    """Read ``src`` (any input format), write ``dst`` as ``to``; rows that cannot be read or expressed go to
    ``<dst>.rejects.jsonl``. ``as_json`` (default: when ``dst`` ends in .json) writes one JSON array."""
    from tunewise.data.formats import check_format
    from tunewise.data.io import iter_rows
    from tunewise.data.prepare import RejectLog, normalised

    if to not in TARGETS:
        raise DataError(_("unknown output format {to!r}; use one of {targets}").format(
            to=to, targets=', '.join(TARGETS)))
    check_format(format)
    dst = Path(dst)
    as_json = dst.suffix.lower() == ".json" if as_json is None else as_json
    config = DataConfig(path=src, format=format, columns=columns or {}, system_prompt=system_prompt)  # type: ignore[arg-type]
    result = ConvertResult()
    rejects_path = dst.with_name(dst.name + ".rejects.jsonl")
    with atomic_open(rejects_path) as rstream, atomic_open(dst) as out:
        rejects = RejectLog(rstream)
        out.write("[\n" if as_json else "")
        for row, example in normalised(iter_rows(src), config, rejects, result.formats):
            try:
                record = to_format(example, to)
            except RowError as err:
                rejects.add(row.source, row.line, err, row.record)
                continue
            if as_json:
                out.write((",\n" if result.written else "") + json.dumps(record, ensure_ascii=False, default=str))
            else:
                out.write(dumps(record) + "\n")
            result.written += 1
        out.write("\n]\n" if as_json else "")
    result.rejected = dict(rejects.counts)
    if result.rejected:
        result.rejects_path = str(rejects_path)
    else:
        rejects_path.unlink(missing_ok=True)
    if not result.written:
        raise DataError(_("no row of {src} could be converted to {to}; see {rejects_path}").format(
            src=src, to=to, rejects_path=rejects_path))
    return result
